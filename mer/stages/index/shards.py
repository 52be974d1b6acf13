"""Shard layout and the item vectors a model's index is built from.

``item_embeddings`` is written bucketed by shard (``ITEM_EMBEDDINGS_FILE`` in the contract), so a
shard's build and the recall gate read one bucket at a time: memory per task is O(N / shards).
"""
from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mer.base.config import MerConfig
from mer.base.contract import ITEM_EMBEDDINGS, ITEM_EMBEDDINGS_FILE
from mer.base.errors import ContractError
from mer.base.io import partition_dir, swap_in

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


ROW_GROUP_ROWS = 10_000


def bucket_file(shard: int, shards: int, part: int) -> str:
    return ITEM_EMBEDDINGS_FILE.format(shard=shard, shards=shards, part=part)


_BUCKET_RE = re.compile(r"shard-(\d+)-of-(\d+)\.part-\d+\.parquet")


def _bucket_files(partition: Path) -> dict[tuple[int, int], list[Path]]:
    """(shard, shards) -> the partition's files of that bucket, from their names (no file is opened)."""
    out: dict[tuple[int, int], list[Path]] = {}
    for p in sorted(Path(partition).glob("*.parquet")):
        if m := _BUCKET_RE.fullmatch(p.name):
            out.setdefault((int(m.group(1)), int(m.group(2))), []).append(p)
    return out


def bucket_paths(partition: Path, shard: int, shards: int) -> list[Path]:
    """The files of bucket ``shard`` of ``shards``; refused (naming both counts) when not bucketed so."""
    files = _bucket_files(partition)
    found = sorted({n for _, n in files})
    if shards not in found:
        ds = Path(partition).name.removeprefix("ds=")
        raise ContractError(
            f"table item_embeddings: partition ds={ds} is bucketed for {found or 'no'} shards, "
            f"index.shards={shards}; re-run `mer infer --ds {ds}` with the index.shards the build uses"
        )
    return files.get((shard, shards), [])


def split_by_shard(ids: np.ndarray, shards: int) -> tuple[np.ndarray, np.ndarray]:
    """(row order grouping rows by shard, bounds): rows ``order[bounds[s]:bounds[s + 1]]`` are shard s."""
    shard = assign_shards(ids, shards)
    order = np.argsort(shard, kind="stable")
    return order, np.searchsorted(shard[order], np.arange(shards + 1))


def write_bucketed(table_dir: Path, ds: str, table: pa.Table, shards: int) -> Path:
    """Replace partition ``ds`` with ``table`` bucketed by shard, as ``mer infer`` writes it (fixtures, benches)."""
    final = partition_dir(table_dir, ds)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        order, bounds = split_by_shard(table.column("item_id").to_numpy(), shards)
        table = table.take(pa.array(order))
        for s in range(shards):
            # Row groups of about the size `mer infer` writes (one per Arrow batch): a reader streams them.
            pq.write_table(table.slice(bounds[s], bounds[s + 1] - bounds[s]), tmp / bucket_file(s, shards, 0),
                           row_group_size=ROW_GROUP_ROWS)
        swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _partition(cfg: MerConfig, ds: str) -> Path:
    path = partition_dir(cfg.table("item_embeddings"), ds)
    if not path.is_dir():
        raise ContractError(f"table item_embeddings: partition ds={ds} is missing ({path}); run `mer infer` first")
    return path


def _version(model_version: str) -> pc.Expression:
    return pc.field("model_version") == model_version


def count_item_rows(cfg: MerConfig, ds: str, model_version: str) -> int:
    """Rows of one model version (streamed: no vectors held)."""
    n = pads.dataset(_partition(cfg, ds), format="parquet").count_rows(filter=_version(model_version))
    if n == 0:
        raise ContractError(f"table item_embeddings: no rows with model_version={model_version!r} in ds={ds}")
    return n


def sample_item_vectors(cfg: MerConfig, ds: str, model_version: str, n: int, seed: int) -> np.ndarray:
    """A seeded sample of ``n`` item vectors of the whole catalog, read without loading the rest."""
    total = count_item_rows(cfg, ds, model_version)
    pick = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
    data = pads.dataset(_partition(cfg, ds), format="parquet").take(
        pa.array(pick), columns=["item_id", "embedding"], filter=_version(model_version))
    return embeddings_to_numpy(data)


def load_bucket(cfg: MerConfig, ds: str, model_version: str, shard: int, shards: int) -> tuple[np.ndarray, np.ndarray]:
    """(item ids int64 [n], vectors float32 [n, d]) of one shard of one model version: only its bucket is read.

    Streamed in record batches into arrays sized by a first counting pass, so the peak is about the
    bucket's vectors once (a whole-table read holds the decoded Arrow table and its copies at once).
    """
    files = bucket_paths(_partition(cfg, ds), shard, shards)
    data = pads.dataset([str(f) for f in files], format="parquet", schema=ITEM_EMBEDDINGS)
    n = data.count_rows(filter=_version(model_version))
    ids, vectors, at = np.zeros(n, np.int64), None, 0
    # No pre-buffering of whole files and no read-ahead: one row group's batch decoded at a time.
    for batch in data.to_batches(columns=["item_id", "embedding"], filter=_version(model_version), use_threads=False,
                                 batch_readahead=0, fragment_readahead=0,
                                 fragment_scan_options=pads.ParquetFragmentScanOptions(pre_buffer=False)):
        if batch.num_rows == 0:
            continue
        part = embeddings_to_numpy(pa.Table.from_batches([batch]))
        if vectors is None:
            vectors = np.empty((n, part.shape[1]), np.float32)
        elif part.shape[1] != vectors.shape[1]:
            raise ContractError(f"table item_embeddings: column embedding has lengths {vectors.shape[1]} and "
                                f"{part.shape[1]} for model_version={model_version!r}; expected one dim")
        ids[at:at + len(part)] = batch.column("item_id").to_numpy()
        vectors[at:at + len(part)] = part
        at += len(part)
    vectors = np.zeros((0, 0), np.float32) if vectors is None else vectors
    pa.default_memory_pool().release_unused()  # the decoded batches' pages, back to the OS before the build
    wrong = assign_shards(ids, shards) != shard
    if wrong.any():
        raise ContractError(f"table item_embeddings: item_id={ids[wrong][0]} is in the file of shard {shard} "
                            f"of {shards} but hashes to shard {assign_shards(ids[wrong][:1], shards)[0]}")
    if len(np.unique(ids)) != len(ids):  # equal ids hash to one shard: duplicates are always within a bucket
        raise ContractError(f"table item_embeddings: column item_id has duplicates for model_version={model_version!r}")
    return ids, vectors
