"""Stage 6: FAISS index shards per served model from ``item_embeddings`` (``mer build-index``).

Each shard: ``faiss.index_factory`` with the key from ``sizing``, inner product on
L2-normalised vectors, quantizers trained on a sample, item ids stored in the index, and
its search parameter tuned to the smallest value reaching the recall target (plus
``index.tune_margin``) on validation-day user embeddings, the recall gate's kind of query.
A shard's task reads only its bucket of ``item_embeddings`` (``shards.load_bucket``).
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mer.base.config import MerConfig
from mer.base.errors import ContractError, MerError, validate_ds
from mer.base.io import atomic_path, read_json, write_json_atomic
from mer.stages.index import layout, sizing
from mer.stages.index.queries import tuning_queries
from mer.stages.index.shards import load_bucket

NPROBE_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)
EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
# Tuning queries and the gate's queries are two samples of users: the tuned value must reach the target
# with this many standard errors of their difference to spare (~98% one-sided), not just on average.
TUNE_Z = 2.0


# ---------------------------------------------------------------- pure helpers
def query_hits(found: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query: |found ∩ truth| and |truth| (-1 = empty slot, never counted)."""
    hits, total = np.zeros(len(truth), np.int64), np.zeros(len(truth), np.int64)
    for q, (f, t) in enumerate(zip(found, truth)):
        t = set(int(x) for x in t if x >= 0)
        hits[q] = len(t & set(int(x) for x in f if x >= 0))
        total[q] = len(t)
    return hits, total


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Sum |found ∩ truth| / sum |truth| over the queries (-1 = empty slot, never counted)."""
    hits, total = query_hits(found, truth)
    return float(hits.sum() / total.sum()) if total.sum() else 1.0


def recall_lower_bound(found: np.ndarray, truth: np.ndarray, z: float) -> tuple[float, float]:
    """(recall@k, recall@k - z standard errors of the difference to another query sample of the same size)."""
    hits, total = query_hits(found, truth)
    r = float(hits.sum() / total.sum()) if total.sum() else 1.0
    per = hits[total > 0] / total[total > 0]
    se = float(per.std(ddof=1) * np.sqrt(2 / len(per))) if len(per) > 1 else 0.0
    return r, r - z * se


def exact_topk(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of ``queries`` over ``vectors`` as item ids (-1 past the last vector)."""
    import faiss

    if len(vectors) == 0:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    # faiss.knn scans without copying the vectors into an index.
    scores, pos = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(vectors, dtype=np.float32),
                            k, metric=faiss.METRIC_INNER_PRODUCT)
    return scores, np.where(pos >= 0, np.asarray(ids, dtype=np.int64)[np.maximum(pos, 0)], -1)


def param_name(index_key: str) -> str | None:
    if "HNSW" in index_key:
        return "efSearch"
    if index_key.startswith("IVF") or ",IVF" in index_key:
        return "nprobe"
    return None


def param_grid(index, name: str | None, k: int) -> tuple[int, ...]:
    import faiss

    if name == "nprobe":
        nlist = faiss.extract_index_ivf(index).nlist
        return tuple(p for p in NPROBE_GRID if p < nlist) + (nlist,)
    if name == "efSearch":
        return tuple(e for e in EF_GRID if e >= k) or (max(EF_GRID[-1], k),)
    return ()


def set_param(index, name: str, value: int) -> None:
    import faiss

    faiss.ParameterSpace().set_index_parameter(index, name, value)


def tune(index, key: str, queries: np.ndarray, truth: np.ndarray, k: int, target: float, margin: float = 0.0,
         z: float = 0.0) -> tuple[dict, float, float]:
    """Smallest nprobe / efSearch whose recall@k on ``queries`` reaches ``target + margin`` and whose lower
    bound (``z`` standard errors) reaches ``target`` (else the largest tried): (params, recall, lower bound)."""
    name = param_name(key)
    if len(queries) == 0:
        return {}, 1.0, 1.0
    if name is None:
        return ({}, *recall_lower_bound(index.search(queries, k)[1], truth, z))
    best: tuple[dict, float, float] = ({}, 0.0, 0.0)
    for value in param_grid(index, name, k):
        set_param(index, name, value)
        r, lower = recall_lower_bound(index.search(queries, k)[1], truth, z)
        best = ({name: value}, r, lower)
        if r >= min(1.0, target + margin) and lower >= target:
            break
    return best


def make_index(key: str, dim: int):
    """Factory index on inner product; keys without native ids (Flat, HNSW, PQ) are wrapped in IDMap2."""
    import faiss

    index = faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
    if faiss.try_extract_index_ivf(index) is None:
        index = faiss.IndexIDMap2(index)
    return index


def build_shard(
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    key: str,
    queries: np.ndarray,
    k: int,
    target: float,
    out: dict[str, str],
    seed: int = 0,
    threads: int | None = None,
    margin: float = 0.01,
) -> dict:
    """Build, tune and write one shard; returns its metadata (also written as the shard json).

    Half the queries tune the search parameter to ``target + margin``, the other half report a held-out recall.
    """
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    dim = queries.shape[1]
    index = make_index(key, dim)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        n_train = sizing.train_sample_size(key, len(vectors))
        sample = vectors if n_train >= len(vectors) else vectors[np.sort(rng.choice(len(vectors), n_train, replace=False))]
        index.train(np.ascontiguousarray(sample))
    if len(vectors):
        index.add_with_ids(vectors, ids)
    build_s = time.perf_counter() - t0

    kk = max(1, min(k, len(vectors)))
    tune_q, held_q = queries[0::2], queries[1::2]
    # Above the gate's target: the gate measures on other queries (eval users) than tuning did.
    params, tune_recall, tune_lower = tune(index, key, tune_q, exact_topk(vectors, ids, tune_q, kk)[1], kk, target,
                                           margin, TUNE_Z)
    held_recall = recall_at_k(index.search(held_q, kk)[1], exact_topk(vectors, ids, held_q, kk)[1]) if len(held_q) else tune_recall

    index_path, ids_path = Path(out["index"]), Path(out["ids"])
    with atomic_path(index_path) as tmp:
        faiss.write_index(index, str(tmp))
    with atomic_path(ids_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(ids, dtype=np.int64))
    meta = {
        "key": key,
        "n": int(len(vectors)),
        "dim": int(dim),
        "metric": layout.METRIC,
        "params": params,
        "recall_k": kk,
        "tune_queries": int(len(tune_q)),
        "heldout_queries": int(len(held_q)),
        "recall_tuning": round(tune_recall, 4),
        "recall_tuning_lower": round(tune_lower, 4),  # minus TUNE_Z standard errors
        "recall_heldout": round(held_recall, 4),
        "target_met": bool(tune_recall >= target),
        "build_seconds": round(build_s, 3),
        "index_file": index_path.name,
        "ids_file": ids_path.name,
    }
    write_json_atomic(Path(out["meta"]), meta)
    return meta


def _build_shard_job(args: dict) -> dict:
    return build_shard(**args)


def build_bucket(cfg: MerConfig, ds: str, version: str, shard: int, queries: np.ndarray, out: dict[str, str],
                 threads: int | None = None) -> dict:
    """One shard's task: read its bucket of item_embeddings (nothing else), size its index, build it."""
    ic = cfg.index
    ids, vectors = load_bucket(cfg, ds, version, shard, ic.shards)
    dim = queries.shape[1]
    if len(vectors) and vectors.shape[1] != dim:
        raise ContractError(f"table item_embeddings: model_version={version!r} has dim {vectors.shape[1]}, "
                            f"its user embeddings have dim {dim}")
    key = sizing.shard_index_key(ic.index_key, len(ids), dim, ic.memory_budget_mb / ic.shards)
    return build_shard(vectors, ids, key=key, queries=queries, k=ic.recall_k, target=ic.recall_target, out=out,
                       seed=cfg.train.seed + shard, threads=threads, margin=ic.tune_margin)


def _build_bucket_job(args: dict) -> dict:
    return build_bucket(**args)


# ---------------------------------------------------------------- stage entry point
def model_versions(cfg: MerConfig, ds: str) -> dict[str, str]:
    """Served model -> model_version, as recorded by ``mer infer``."""
    path = cfg.run_dir(ds) / "item_inference.json"
    if not path.exists():
        raise MerError(f"no item inference summary at {path}; run `mer infer --ds {ds}` first")
    return json.loads(path.read_text())["versions"]


def build_model(cfg: MerConfig, ds: str, model: str, version: str, shard: int | None = None) -> dict:
    ic = cfg.index
    if shard is not None and not 0 <= shard < ic.shards:
        raise MerError(f"build-index: shard {shard} is outside 0..{ic.shards - 1} (index.shards={ic.shards})")
    queries, source = tuning_queries(cfg, ds, model, version, ic.recall_queries, seed=cfg.train.seed)
    folder = layout.model_index_dir(cfg, ds, model)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = range(ic.shards) if shard is None else [shard]
    jobs = [dict(cfg=cfg, ds=ds, version=version, shard=s, queries=queries,
                 out={n: str(p) for n, p in layout.shard_paths(folder, s).items()}) for s in wanted]
    workers = max(1, min(ic.build_workers, len(jobs)))
    if workers == 1:
        metas = [build_bucket(**j) for j in jobs]  # one bucket in memory at a time
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        for j in jobs:
            j["threads"] = threads
        # spawn: forking a process that already started OpenMP threads can deadlock.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            metas = list(pool.map(_build_bucket_job, jobs))
    summary = {
        "model": model,
        "model_version": version,
        "dim": int(queries.shape[1]),
        "metric": layout.METRIC,
        "shards": ic.shards,
        "n_items": sum(int(m["n"]) for m in metas),  # of all shards: completed by write_model_index_json
        # What the search parameters were tuned on (the gate queries eval users of the same tower).
        "tuning": {"query_source": source, "queries": int(len(queries)), "margin": ic.tune_margin},
        "built": {layout.shard_stem(s): m for s, m in zip(wanted, metas)},
    }
    if shard is None:
        write_index_json(folder, summary)
    return summary


def write_index_json(folder: Path, summary: dict) -> None:
    """index.json of a model whose shards are all built; its item count is the sum of the shards' (each
    shard task read only its bucket, so no task saw them all)."""
    n = sum(int(read_json(layout.shard_paths(folder, s)["meta"])["n"]) for s in range(summary["shards"]))
    if n == 0:
        raise ContractError(f"table item_embeddings: no rows with model_version={summary['model_version']!r}")
    write_json_atomic(folder / "index.json", {**{k: v for k, v in summary.items() if k != "built"}, "n_items": n})


def run(cfg: MerConfig, ds: str, shard: int | None = None) -> dict:
    validate_ds(ds)
    out = {}
    for model, version in model_versions(cfg, ds).items():
        out[model] = build_model(cfg, ds, model, version, shard)
    if shard is not None:
        # The per-shard Airflow tasks each write their shard; index.json is written by the last step.
        for model, summary in out.items():
            write_model_index_json(cfg, ds, model, summary)
    return out


def write_model_index_json(cfg: MerConfig, ds: str, model: str, summary: dict) -> None:
    """index.json once every shard of the model has its metadata file."""
    folder = layout.model_index_dir(cfg, ds, model)
    if all(layout.shard_paths(folder, s)["meta"].exists() for s in range(cfg.index.shards)):
        write_index_json(folder, summary)
