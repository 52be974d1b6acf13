"""Recall gate (``mer recall-gate``): recall@K of every shard and of the merged shards vs exact search.

Queries are the eval users' real embeddings (``mer.stages.model.serving.user_embeddings``); without a
user tower, sampled item vectors are used and the report says so. Any figure below
``cfg.index.recall_target`` fails the run, naming the model, the shard and the numbers.

Shards are streamed: one bucket of ``item_embeddings`` and one shard index in memory at a time; the
exact and the approximate top-K of all shards are merged in ``faiss.ResultHeap``s (``search.TopK``).
"""
from __future__ import annotations

import numpy as np

from mer.base.config import MerConfig
from mer.base.errors import ContractError, GateError, MerError, validate_ds
from mer.base.io import read_json, write_json_atomic
from mer.stages.index import layout
from mer.stages.index.build import exact_topk, model_versions, recall_at_k
from mer.stages.index.queries import recall_queries
from mer.stages.index.search import TopK, load_shard
from mer.stages.index.shards import load_bucket


def streamed_recall(shards: int, load, queries: np.ndarray, k: int) -> tuple[dict, float]:
    """Per-shard recall@k and the merged recall@k, one shard at a time.

    ``load(s)`` -> (bucket item ids, bucket vectors, the shard's faiss index, its meta): only one
    shard's data is alive at once; the merged figures come from running top-k heaps.
    """
    exact, ann = TopK(len(queries), k), TopK(len(queries), k)
    per_shard = {}
    for s in range(shards):
        ids, vectors, index, meta = load(s)
        name = layout.shard_stem(s)
        if len(ids) == 0:
            per_shard[name] = {"n": 0, "recall": 1.0}
            continue
        truth = exact_topk(vectors, ids, queries, k)
        found = index.search(queries, k)
        exact.add(*truth)
        ann.add(*found)
        ks = min(k, len(ids))  # a shard smaller than k: its own recall is over what it has
        per_shard[name] = {
            "n": int(len(ids)),
            "key": meta["key"],
            "params": meta.get("params", {}),
            "recall": round(recall_at_k(found[1][:, :ks], truth[1][:, :ks]), 4),
        }
        del ids, vectors, index
    return per_shard, recall_at_k(ann.result()[1], exact.result()[1])


def model_recall(cfg: MerConfig, ds: str, model: str, version: str) -> dict:
    folder = layout.model_index_dir(cfg, ds, model)
    if not (folder / "index.json").exists():
        raise MerError(f"recall gate: no index for model {model} at {folder}; run `mer build-index --ds {ds}` first")
    info = read_json(folder / "index.json")
    if info["model_version"] != version:
        raise MerError(f"recall gate: index of {model} is for {info['model_version']}, embeddings are {version}; rebuild it")
    n_items = int(info["n_items"])
    queries, source = recall_queries(cfg, ds, model, version, cfg.index.recall_queries, seed=cfg.train.seed + 1)
    k = max(1, min(cfg.index.recall_k, n_items))
    def load(s: int):
        ids, vectors = load_bucket(cfg, ds, version, s, info["shards"])
        sh = load_shard(folder, s)
        # Ids round-trip: the shard holds exactly its bucket (buckets partition the catalog, so every
        # item is in exactly one shard and none is invented).
        sids = np.load(folder / sh.meta["ids_file"])
        if len(sids) != len(ids) or not np.array_equal(np.sort(sids), np.sort(ids)):
            raise ContractError(f"index {model}/{sh.name}: shard item ids ({len(sids)}) do not match its bucket of "
                                f"item_embeddings ({len(ids)})")
        return ids, vectors, sh.index, sh.meta

    per_shard, merged = streamed_recall(info["shards"], load, queries, k)
    seen = sum(int(v["n"]) for v in per_shard.values())
    if seen != n_items:
        raise ContractError(f"index {model}: index.json counts {n_items} items, the buckets of item_embeddings hold {seen}")
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
