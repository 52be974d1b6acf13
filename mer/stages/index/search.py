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


class TopK:
    """Running top-k by inner product over per-shard results [q, k_s] (``faiss.ResultHeap``), so shards can
    be searched one at a time and dropped; empty slots (id -1) come back with score -inf."""

    def __init__(self, nq: int, k: int):
        import faiss

        self.heap = faiss.ResultHeap(nq, k, keep_max=True)

    def add(self, scores: np.ndarray, ids: np.ndarray) -> None:
        self.heap.add_result(scores, ids)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self.heap.finalize()
        ids = self.heap.I
        return np.where(ids < 0, -np.inf, self.heap.D).astype(np.float32), ids


def search_shards(shards: list[Shard], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every shard searched for k, then one merged top-k: the same answer as one index over all items."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    top = TopK(len(queries), k)
    for sh in shards:
        if sh.index.ntotal > 0:
            top.add(*sh.index.search(queries, k))
    return top.result()
