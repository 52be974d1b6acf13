"""Loading shards and searching all of them as one index (used by the recall gate and the reader)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mer.base.io import read_json
from mer.stages.index import layout


@dataclass
class Shard:
    name: str
    index: object  # faiss.Index with item ids
    meta: dict


def read_index(path: Path):
    """Memory-map the index file where the index type allows; plain read otherwise."""
    import faiss

    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    except RuntimeError:
        return faiss.read_index(str(path))


def load_shard(folder: Path, shard: int) -> Shard:
    import faiss

    paths = layout.shard_paths(Path(folder), shard)
    meta = read_json(paths["meta"])
    index = read_index(paths["index"])
    for name, value in meta.get("params", {}).items():
        faiss.ParameterSpace().set_index_parameter(index, name, value)
    return Shard(layout.shard_stem(shard), index, meta)


def load_model_shards(folder: Path) -> tuple[dict, list[Shard]]:
    info = read_json(Path(folder) / "index.json")
    return info, [load_shard(folder, s) for s in range(info["shards"])]


def merge_topk(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product over per-shard results [q, k_s] (empty slots are id -1)."""
    s = np.concatenate(scores, axis=1)
    i = np.concatenate(ids, axis=1)
    s = np.where(i < 0, -np.inf, s)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


def search_shards(shards: list[Shard], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every shard searched for k, then one merged top-k: the same answer as one index over all items."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    parts = [sh.index.search(queries, k) for sh in shards if sh.index.ntotal > 0]
    if not parts:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    return merge_topk([p[0] for p in parts], [p[1] for p in parts], k)
