"""Which FAISS index a shard gets: one small named rule per decision (after autofaiss's sizing rules).

The memory budget (``cfg.index.memory_budget_mb``) is for one model's whole index, so a shard
gets ``budget / shards``: the reader loads every shard of a model into one process.
"""
from __future__ import annotations

import math

from mer.base.errors import MerError

# Below this many vectors an exhaustive scan is as fast as any ANN structure and exact.
FLAT_MAX_VECTORS = 20_000
# FAISS k-means wants >= 39 training points per centroid; fewer gives poor, warned-about clusters.
MIN_POINTS_PER_CENTROID = 39
MAX_NLIST = 65_536
ID_BYTES = 8  # int64 item id stored next to every code
HNSW_M = 32


def flat_bytes(n: int, dim: int) -> int:
    """Memory of uncompressed float32 codes plus ids."""
    return n * (dim * 4 + ID_BYTES)


def pq_bytes(n: int, m: int) -> int:
    """Memory of PQ codes at 8 bits per sub-quantizer plus ids."""
    return n * (m + ID_BYTES)


def hnsw_bytes(n: int, dim: int, m: int = HNSW_M) -> int:
    """Flat codes plus the graph: ~2*M int32 neighbour links per vector on level 0."""
    return flat_bytes(n, dim) + n * 2 * m * 4


def nb_clusters(n: int) -> int:
    """IVF list count ~ 4*sqrt(n), capped so every centroid keeps enough training points."""
    nlist = int(4 * math.sqrt(max(n, 1)))
    nlist = min(nlist, MAX_NLIST, max(n // MIN_POINTS_PER_CENTROID, 1))
    return max(nlist, 1)


def pq_subquantizers(n: int, dim: int, budget_bytes: int) -> int:
    """Largest PQ code size m (dividing dim, m <= dim/2) that fits the budget; refuse if none does."""
    for m in sorted((m for m in range(1, dim // 2 + 1) if dim % m == 0), reverse=True):
        if pq_bytes(n, m) <= budget_bytes:
            return m
    raise MerError(
        f"index sizing: {n} vectors of dim {dim} do not fit in {budget_bytes / 2**20:.1f} MiB "
        f"even as PQ1 codes; raise index.memory_budget_mb or index.shards"
    )


def auto_index_key(n: int, dim: int, budget_mb: float, *, prefer_hnsw: bool = False) -> str:
    """The factory string for one shard of ``n`` vectors.

    Flat for small shards; HNSW32 when asked for and it fits; IVF-Flat while the float codes
    fit the budget; IVF-PQ with the largest code that fits otherwise.
    """
    budget = int(budget_mb * 2**20)
    if n <= FLAT_MAX_VECTORS and flat_bytes(n, dim) <= budget:
        return "Flat"
    if prefer_hnsw and hnsw_bytes(n, dim) <= budget:
        return f"HNSW{HNSW_M},Flat"
    nlist = nb_clusters(n)
    if flat_bytes(n, dim) <= budget:
        return f"IVF{nlist},Flat"
    return f"IVF{nlist},PQ{pq_subquantizers(n, dim, budget)}"


def shard_index_key(index_key: str, n: int, dim: int, budget_mb: float) -> str:
    """``cfg.index.index_key``: an explicit factory string, ``auto`` or ``auto-hnsw``."""
    if index_key == "auto":
        return auto_index_key(n, dim, budget_mb)
    if index_key == "auto-hnsw":
        return auto_index_key(n, dim, budget_mb, prefer_hnsw=True)
    return index_key


def train_sample_size(index_key: str, n: int) -> int:
    """Quantizers are trained on a sample: enough points for the IVF centroids and PQ codebooks."""
    nlist = 1
    if index_key.startswith("IVF"):
        nlist = int(index_key[3:].split(",")[0].split("_")[0])
    want = max(nlist * MIN_POINTS_PER_CENTROID * 2, 256 * MIN_POINTS_PER_CENTROID if "PQ" in index_key else 0)
    return min(n, max(want, 10_000))
