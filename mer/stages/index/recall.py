"""Recall gate (``mer recall-gate``): recall@K of every shard and of the merged shards vs exact search.

Queries are the eval users' real embeddings (``mer.stages.model.serving.user_embeddings``); without a
user tower, sampled item vectors are used and the report says so. Any figure below
``cfg.index.recall_target`` fails the run, naming the model, the shard and the numbers.
"""
from __future__ import annotations

import numpy as np

from mer.base.config import MerConfig
from mer.base.errors import ContractError, GateError, MerError, validate_ds
from mer.base.io import write_json_atomic
from mer.stages.index import layout
from mer.stages.index.build import exact_topk, model_versions, recall_at_k
from mer.stages.index.queries import recall_queries
from mer.stages.index.search import load_model_shards, search_shards
from mer.stages.index.shards import load_item_vectors


def model_recall(cfg: MerConfig, ds: str, model: str, version: str) -> dict:
    folder = layout.model_index_dir(cfg, ds, model)
    if not (folder / "index.json").exists():
        raise MerError(f"recall gate: no index for model {model} at {folder}; run `mer build-index --ds {ds}` first")
    info, shards = load_model_shards(folder)
    if info["model_version"] != version:
        raise MerError(f"recall gate: index of {model} is for {info['model_version']}, embeddings are {version}; rebuild it")
    ids, vectors = load_item_vectors(cfg, ds, version)
    queries, source = recall_queries(cfg, ds, model, vectors, cfg.index.recall_queries, seed=cfg.train.seed + 1)
    k = max(1, min(cfg.index.recall_k, len(ids)))

    # Ids round-trip: every item in exactly one shard, none invented.
    shard_ids = [np.load(folder / sh.meta["ids_file"]) for sh in shards]
    all_shard_ids = np.concatenate(shard_ids) if shard_ids else np.zeros(0, np.int64)
    if len(all_shard_ids) != len(ids) or not np.array_equal(np.sort(all_shard_ids), np.sort(ids)):
        raise ContractError(f"index {model}: shard item ids ({len(all_shard_ids)}) do not match item_embeddings ({len(ids)})")

    per_shard = {}
    for sh, sids in zip(shards, shard_ids):
        ks = max(1, min(k, len(sids)))
        if len(sids) == 0:
            per_shard[sh.name] = {"n": 0, "recall": 1.0}
            continue
        mask = np.isin(ids, sids)
        truth = exact_topk(vectors[mask], ids[mask], queries, ks)[1]
        per_shard[sh.name] = {
            "n": int(len(sids)),
            "key": sh.meta["key"],
            "params": sh.meta.get("params", {}),
            "recall": round(recall_at_k(sh.index.search(queries, ks)[1], truth), 4),
        }
    merged = recall_at_k(search_shards(shards, queries, k)[1], exact_topk(vectors, ids, queries, k)[1])
    return {
        "model_version": version,
        "k": k,
        "queries": int(len(queries)),
        "query_source": source,
        "shards": per_shard,
        "merged": round(merged, 4),
    }


def failures(report: dict, target: float) -> list[str]:
    out = []
    for model, r in report.items():
        for name, s in r["shards"].items():
            if s["recall"] < target:
                out.append(f"{model}/{name}: recall@{r['k']}={s['recall']:.4f} < {target} ({s.get('key')}, {s.get('params')}, n={s['n']})")
        if r["merged"] < target:
            out.append(f"{model}/merged: recall@{r['k']}={r['merged']:.4f} < {target}")
    return out


def run(cfg: MerConfig, ds: str) -> dict:
    validate_ds(ds)
    target = cfg.index.recall_target
    report = {m: model_recall(cfg, ds, m, v) for m, v in model_versions(cfg, ds).items()}
    failed = failures(report, target)
    summary = {"ds": ds, "target": target, "passed": not failed, "failures": failed, "models": report}
    write_json_atomic(layout.recall_path(cfg, ds), summary)
    if failed:
        raise GateError(f"recall gate failed for ds={ds} over {report[next(iter(report))]['queries']} queries: " + "; ".join(failed))
    return summary
