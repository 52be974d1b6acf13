"""The one I/O module: partitions, atomic file writes, folder swaps and JSON conversion.

Parquet partitions are written and read outside Spark (generator, trainer, evaluator, index).

Layout is Hive-style ``<table_dir>/ds=YYYY-MM-DD/part-*.parquet`` so Spark, DuckDB and
pyarrow datasets all read the same files. A partition is written into a temporary sibling
folder and swapped in with a rename, so a reader never sees half of it and a re-run
replaces that partition only.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mer.base.contract import missing_partition
from mer.base.errors import ContractError, validate_ds


def partition_dir(table_dir: Path, ds: str) -> Path:
    return Path(table_dir) / f"ds={validate_ds(ds)}"


def list_partitions(table_dir: Path) -> list[str]:
    """Sorted ds values that have a committed partition (temporary folders are ignored)."""
    table_dir = Path(table_dir)
    if not table_dir.is_dir():
        return []
    return sorted(p.name[3:] for p in table_dir.iterdir() if p.is_dir() and p.name.startswith("ds="))


def list_tables(base: Path) -> dict[str, Path]:
    """Table folders under ``base`` with at least one committed partition holding Parquet files.
    Names must be plain SQL identifiers: they are interpolated into Spark and DuckDB DDL."""
    base = Path(base)
    if not base.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(base.iterdir())
        if p.is_dir() and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p.name)
        and any((p / f"ds={d}").glob("*.parquet") for d in list_partitions(p))
    }


def analyst_tables(raw_dir: Path, warehouse_dir: Path) -> list[tuple[str, str, Path]]:
    """(schema, table, folder) as SQL users see them (DuckDB `mer sql` and the Spark metastore alike):
    warehouse tables under ``mer``, raw input under ``raw`` and also under ``mer`` when no warehouse
    table has its name."""
    raw, warehouse = list_tables(raw_dir), list_tables(warehouse_dir)
    return ([("mer", n, p) for n, p in warehouse.items()] + [("raw", n, p) for n, p in raw.items()]
            + [("mer", n, p) for n, p in raw.items() if n not in warehouse])


def newest_file_schema(table_dir: Path) -> pa.Schema:
    """The columns as written: one Parquet footer of the newest partition that holds files."""
    for ds in reversed(list_partitions(table_dir)):
        files = sorted(partition_dir(table_dir, ds).glob("*.parquet"))
        if files:
            return pq.read_schema(files[0])
    raise ContractError(f"table {Path(table_dir).name}: no partition with Parquet files under {table_dir}")


def latest_partition(table_dir: Path, ds: str) -> str:
    """Latest snapshot partition at or before ``ds``."""
    parts = [p for p in list_partitions(table_dir) if p <= ds]
    if not parts:
        raise ContractError(f"table {Path(table_dir).name}: no partition at or before ds={ds} in {table_dir}")
    return parts[-1]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a unique temporary sibling of ``path`` to write; on success it replaces ``path`` in one
    rename (readers see the old file or the new one), on error it is removed. Unique names let two
    writers (a retried task, a second process) never collide on the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def jsonable(obj: Any) -> Any:
    """Plain JSON from stage summaries that may hold numpy scalars/arrays or paths (XCom, records, files)."""
    return json.loads(json.dumps(obj, default=_plain))


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    return str(value)


def swap_in(staging: Path, final: Path) -> None:
    """``staging`` (a finished folder) becomes ``final`` in one rename; a previous ``final`` is moved
    aside first and removed after, so readers see the old folder or the new one, never a mix."""
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_partition(table_dir: Path, ds: str, table: pa.Table, *, rows_per_file: int = 1_000_000) -> Path:
    """Atomically replace partition ``ds`` of ``table_dir`` with ``table``."""
    final = partition_dir(table_dir, ds)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        n = max(table.num_rows, 1)
        for i, start in enumerate(range(0, n, rows_per_file)):
            pq.write_table(table.slice(start, rows_per_file), tmp / f"part-{i:05d}.parquet", compression="zstd")
        swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_partition(table_dir: Path, ds: str, columns: list[str] | None = None) -> pa.Table:
    path = partition_dir(table_dir, ds)
    if not path.is_dir():
        raise ContractError(missing_partition(Path(table_dir).name, ds, path.parent))
    return pq.read_table(path, columns=columns)


def partition_dataset(table_dir: Path, ds: str) -> pads.Dataset:
    """A lazy dataset over one partition, for streaming record batches."""
    path = partition_dir(table_dir, ds)
    if not path.is_dir():
        raise ContractError(missing_partition(Path(table_dir).name, ds, path.parent))
    return pads.dataset(path, format="parquet")
