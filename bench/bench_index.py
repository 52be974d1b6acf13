"""Sharded FAISS index vs exact Flat search on 1M x 64 item embeddings.

Data: a seeded clustered synthetic set (1M unit vectors around 2,000 centres, the shape an
item tower's output has), because producing 1M vectors from a trained tower on 2 cores costs
more than the index itself. Queries: 1,000 held-out vectors from the same distribution.
Index: the pipeline's own code path (auto sizing per shard, parallel shard build with
recall tuning on held-out queries, search over all shards + merged top-k).

    .venv/bin/python bench/bench_index.py [--n 1000000] [--dim 64] [--queries 1000]
    .venv/bin/python bench/bench_index.py --embeddings <root>/warehouse/item_embeddings/ds=<ds>

``--embeddings`` reads a trained item tower's output instead (an ``item_embeddings`` partition, e.g.
the one ``bench/bench_scale.py --keep`` leaves: 1M items); 2 x ``--queries`` seeded random items are
held out of the index as the tuning and test queries (item-to-item search, same geometry as the index).

Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import faiss
import numpy as np

from mer.stages.index import layout, sizing
from mer.stages.index.build import _build_shard_job, recall_at_k
from mer.stages.index.search import load_model_shards, search_shards
from mer.stages.index.shards import assign_shards
from mer.base.config import MerConfig
from mer.base.io import write_json_atomic


def clustered(n: int, dim: int, centres: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)]
    x += 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def tower_output(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, [n, d] float32) of one item_embeddings partition (one model version)."""
    import pyarrow.dataset as pads

    from mer.stages.index.shards import embeddings_to_numpy

    table = pads.dataset(str(folder), format="parquet").to_table(columns=["item_id", "embedding"])
    return table.column("item_id").to_numpy().astype(np.int64), embeddings_to_numpy(table)


def qps(fn, queries: np.ndarray, repeat: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        fn(queries)
    return repeat * len(queries) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--embeddings", type=Path, default=None, help="an item_embeddings partition folder")
    args = ap.parse_args()
    cfg = MerConfig()
    ic = cfg.index

    if args.embeddings:
        ids_all, data = tower_output(args.embeddings)
        order = np.random.default_rng(11).permutation(len(data))
        data, ids_all = data[order], ids_all[order]
        args.n, args.dim = len(data) - 2 * args.queries, data.shape[1]
        ids = ids_all[: args.n]
        source = f"item tower output {args.embeddings} ({args.n}x{args.dim} indexed, held-out items as queries)"
    else:
        data = clustered(args.n + 2 * args.queries, args.dim, 2000, seed=11)
        ids = (np.arange(args.n, dtype=np.int64) * 3 + 17)
        source = f"seeded clustered synthetic {args.n}x{args.dim} (2000 centres)"
    vectors, tune_q, test_q = data[: args.n], data[args.n : args.n + args.queries], data[args.n + args.queries :]

    t = time.perf_counter()
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(vectors)
    _, exact = flat.search(test_q, args.k)
    exact_ids = ids[exact]
    flat_qps = qps(lambda q: flat.search(q, args.k), test_q)
    print(f"flat: {flat_qps:.0f} q/s ({time.perf_counter() - t:.1f}s)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        assign = assign_shards(ids, ic.shards)
        jobs = []
        for s in range(ic.shards):
            m = assign == s
            key = sizing.shard_index_key(ic.index_key, int(m.sum()), args.dim, ic.memory_budget_mb / ic.shards)
            jobs.append(dict(vectors=np.ascontiguousarray(vectors[m]), ids=ids[m], key=key, queries=tune_q, k=args.k,
                             target=ic.recall_target, out={n: str(p) for n, p in layout.shard_paths(folder, s).items()},
                             seed=s, threads=max(1, (os.cpu_count() or 1) // ic.build_workers)))
        t = time.perf_counter()
        with ProcessPoolExecutor(max_workers=ic.build_workers, mp_context=get_context("spawn")) as pool:
            metas = list(pool.map(_build_shard_job, jobs))
        build_s = time.perf_counter() - t
        print(f"build: {build_s:.1f}s {[(m['key'], m['params'], m['recall_heldout']) for m in metas]}", flush=True)
        write_json_atomic(folder / "index.json", {"shards": ic.shards})
        _, shards = load_model_shards(folder)
        _, found = search_shards(shards, test_q, args.k)
        rec = recall_at_k(found, exact_ids)
        ann_qps = qps(lambda q: search_shards(shards, q, args.k), test_q, repeat=3)

    out = {
        "bench": "index",
        "data": source,
        "shards": ic.shards,
        "keys": [m["key"] for m in metas],
        "params": [m["params"] for m in metas],
        "k": args.k,
        "queries": args.queries,
        "recall_at_k": round(rec, 4),
        "flat_qps": round(flat_qps, 1),
        "index_qps": round(ann_qps, 1),
        "speedup_vs_flat": round(ann_qps / flat_qps, 1),
        "build_s": round(build_s, 1),
        "build_s_per_million": round(build_s / (args.n / 1e6), 1),
        "threads": faiss.omp_get_max_threads(),
        "targets": {"recall": 0.95, "speedup": 30, "build_s_per_million": 60},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
