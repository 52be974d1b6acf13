"""Stage 6: FAISS index shards per served model from ``item_embeddings`` (``mer build-index``).

Each shard: ``faiss.index_factory`` with the key from ``sizing``, inner product on
L2-normalised vectors, quantizers trained on a sample, item ids stored in the index, and
its search parameter tuned to the smallest value reaching the recall target.
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
from mer.base.errors import MerError, validate_ds
from mer.base.io import atomic_path, write_json_atomic
from mer.stages.index import layout, sizing
from mer.stages.index.queries import recall_queries
from mer.stages.index.shards import assign_shards, load_item_vectors

NPROBE_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)
TUNE_MARGIN = 0.01
EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


# ---------------------------------------------------------------- pure helpers
def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found ∩ truth| / |truth| per query (-1 = empty slot, never counted)."""
    hits, total = 0, 0
    for f, t in zip(found, truth):
        t = set(int(x) for x in t if x >= 0)
        hits += len(t & set(int(x) for x in f if x >= 0))
        total += len(t)
    return hits / total if total else 1.0


def exact_topk(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(queries.shape[1]))
    if len(vectors):
        flat.add_with_ids(vectors, ids)
    return flat.search(queries, k)


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


def tune(index, key: str, queries: np.ndarray, truth: np.ndarray, k: int, target: float) -> tuple[dict, float]:
    """Smallest nprobe / efSearch whose recall@k on ``queries`` reaches ``target`` (else the largest tried)."""
    name = param_name(key)
    if name is None or len(queries) == 0:
        return {}, recall_at_k(index.search(queries, k)[1], truth) if len(queries) else 1.0
    best: tuple[dict, float] = ({}, 0.0)
    for value in param_grid(index, name, k):
        set_param(index, name, value)
        r = recall_at_k(index.search(queries, k)[1], truth)
        best = ({name: value}, r)
        if r >= target:
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
) -> dict:
    """Build, tune and write one shard; returns its metadata (also written as the shard json)."""
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
    # A little above the gate's target: the gate measures on other queries than tuning did.
    params, tune_recall = tune(index, key, tune_q, exact_topk(vectors, ids, tune_q, kk)[1], kk, min(1.0, target + TUNE_MARGIN))
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
        "recall_tuning": round(tune_recall, 4),
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


# ---------------------------------------------------------------- stage entry point
def model_versions(cfg: MerConfig, ds: str) -> dict[str, str]:
    """Served model -> model_version, as recorded by ``mer infer``."""
    path = cfg.run_dir(ds) / "item_inference.json"
    if not path.exists():
        raise MerError(f"no item inference summary at {path}; run `mer infer --ds {ds}` first")
    return json.loads(path.read_text())["versions"]


def build_model(cfg: MerConfig, ds: str, model: str, version: str, shard: int | None = None) -> dict:
    ic = cfg.index
    ids, vectors = load_item_vectors(cfg, ds, version)
    dim = vectors.shape[1]
    assignment = assign_shards(ids, ic.shards)
    queries, source = recall_queries(cfg, ds, model, vectors, ic.recall_queries, seed=cfg.train.seed)
    folder = layout.model_index_dir(cfg, ds, model)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = range(ic.shards) if shard is None else [shard]
    if shard is not None and not 0 <= shard < ic.shards:
        raise MerError(f"build-index: shard {shard} is outside 0..{ic.shards - 1} (index.shards={ic.shards})")
    per_shard_mb = ic.memory_budget_mb / ic.shards
    jobs = []
    for s in wanted:
        mask = assignment == s
        key = sizing.shard_index_key(ic.index_key, int(mask.sum()), dim, per_shard_mb)
        jobs.append(
            dict(
                vectors=np.ascontiguousarray(vectors[mask]),
                ids=ids[mask],
                key=key,
                queries=queries,
                k=ic.recall_k,
                target=ic.recall_target,
                out={n: str(p) for n, p in layout.shard_paths(folder, s).items()},
                seed=cfg.train.seed + s,
            )
        )
    workers = max(1, min(ic.build_workers, len(jobs)))
    if workers == 1:
        metas = [build_shard(**j) for j in jobs]
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        for j in jobs:
            j["threads"] = threads
        # spawn: forking a process that already started OpenMP threads can deadlock.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            metas = list(pool.map(_build_shard_job, jobs))
    summary = {
        "model": model,
        "model_version": version,
        "dim": int(dim),
        "metric": layout.METRIC,
        "shards": ic.shards,
        "n_items": int(len(ids)),
        "query_source": source,
        "built": {layout.shard_stem(s): m for s, m in zip(wanted, metas)},
    }
    if shard is None:
        write_json_atomic(folder / "index.json", {k: v for k, v in summary.items() if k != "built"})
    return summary


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
        write_json_atomic(folder / "index.json", {k: v for k, v in summary.items() if k != "built"})
