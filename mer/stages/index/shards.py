"""Shard layout and the item vectors a model's index is built from."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from mer.base.config import MerConfig
from mer.base.errors import ContractError
from mer.base.io import partition_dir

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def stable_hash(ids: np.ndarray) -> np.ndarray:
    """splitmix64 of the item id: the same shard on every machine and Python (unlike ``hash``)."""
    x = np.asarray(ids, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        x = x ^ (x >> np.uint64(31))
    return x


def assign_shards(ids: np.ndarray, shards: int) -> np.ndarray:
    """Shard number of each item id: stable hash modulo the shard count."""
    return (stable_hash(ids) % np.uint64(max(shards, 1))).astype(np.int64)


def embeddings_to_numpy(table: pa.Table, *, table_name: str = "item_embeddings") -> np.ndarray:
    """The ``embedding`` list column as a float32 [n, d] matrix; ragged or null rows are refused."""
    col = table.column("embedding").combine_chunks()
    n = len(col)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if col.null_count:
        bad = table.column("item_id").filter(pc.is_null(col))[0].as_py()
        raise ContractError(f"table {table_name}: column embedding is null for item_id={bad}")
    lengths = pc.list_value_length(col)
    lo, hi = pc.min_max(lengths).values()
    if lo.as_py() != hi.as_py():
        raise ContractError(f"table {table_name}: column embedding has lengths {lo.as_py()}..{hi.as_py()}; expected one dim")
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat, dtype=np.float32).reshape(n, lo.as_py())


def load_item_vectors(cfg: MerConfig, ds: str, model_version: str) -> tuple[np.ndarray, np.ndarray]:
    """(item ids int64 [n], vectors float32 [n, d]) of one model version from ``item_embeddings``."""
    path = partition_dir(cfg.table("item_embeddings"), ds)
    if not path.is_dir():
        raise ContractError(f"table item_embeddings: partition ds={ds} is missing ({path}); run `mer infer` first")
    data = pads.dataset(path, format="parquet").to_table(
        columns=["item_id", "embedding"], filter=pc.field("model_version") == model_version
    )
    if data.num_rows == 0:
        raise ContractError(f"table item_embeddings: no rows with model_version={model_version!r} in ds={ds}")
    ids = data.column("item_id").to_numpy().astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ContractError(f"table item_embeddings: column item_id has duplicates for model_version={model_version!r}")
    return ids, embeddings_to_numpy(data)
