"""Spark IO at the edges of the build: the run's date window, contract checks, partitioned reads/writes.

Every derived table is written under ``cfg.table(name)/ds=<run ds>/`` through a fresh staging
folder swapped in whole, so re-running a ds replaces that partition and nothing else.
"""
from __future__ import annotations

import shutil
import uuid
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads

from mer.base.config import MerConfig
from mer.base.contract import DERIVED_TABLES, RAW_TABLES, missing_partition
from mer.base.errors import ContractError, validate_ds
from mer.base.io import latest_partition, partition_dir, swap_in, write_partition


def window_days(cfg: MerConfig, ds: str) -> tuple[list[str], list[str]]:
    """(train days, eval days) of run ``ds``: eval = the last ``eval_days`` days ending at ds,
    train = the ``train_days`` days before them. With the defaults: train D-14..D-1, eval D."""
    d = date.fromisoformat(validate_ds(ds))
    b = cfg.build
    eval_days = [(d - timedelta(days=i)).isoformat() for i in reversed(range(b.eval_days))]
    first_eval = d - timedelta(days=b.eval_days - 1)
    train_days = [(first_eval - timedelta(days=i)).isoformat() for i in range(b.train_days, 0, -1)]
    return train_days, eval_days


def spark_type(t: pa.DataType):
    """pyarrow contract type -> Spark type. Naive timestamps stay TIMESTAMP_NTZ so Parquet
    round-trips to pyarrow ``timestamp('us')`` without a zone (the contract)."""
    from pyspark.sql import types as T

    if pa.types.is_int64(t):
        return T.LongType()
    if pa.types.is_int32(t):
        return T.IntegerType()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return T.StringType()
    if pa.types.is_float32(t):
        return T.FloatType()
    if pa.types.is_float64(t):
        return T.DoubleType()
    if pa.types.is_boolean(t):
        return T.BooleanType()
    if pa.types.is_timestamp(t):
        return T.TimestampType() if t.tz else T.TimestampNTZType()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return T.ArrayType(spark_type(t.value_type))
    raise TypeError(f"no Spark type for {t}")


def spark_schema(schema: pa.Schema):
    from pyspark.sql import types as T

    return T.StructType([T.StructField(f.name, spark_type(f.type), True) for f in schema])


def _same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    if pa.types.is_list(expected) or pa.types.is_large_list(expected):
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and _same_type(
            actual.value_type, expected.value_type
        )
    if pa.types.is_timestamp(expected):
        # Any unit is readable; a zone would shift day boundaries, so it must match.
        return pa.types.is_timestamp(actual) and (actual.tz is None) == (expected.tz is None)
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    return actual == expected


def check_schema(table: str, ds: str, actual: pa.Schema, expected: pa.Schema) -> None:
    """Schema drift -> ContractError naming the table, partition and column (extra columns are fine)."""
    names = set(actual.names)
    for field in expected:
        if field.name not in names:
            extra = sorted(names - set(expected.names))
            hint = f"; unexpected column(s) {extra} (renamed?)" if extra else ""
            raise ContractError(
                f"table {table} ds={ds}: column {field.name!r} ({field.type}) is missing{hint}"
            )
        got = actual.field(field.name).type
        if not _same_type(got, field.type):
            raise ContractError(
                f"table {table} ds={ds}: column {field.name!r} has type {got}, contract says {field.type}"
            )


def raw_partition(cfg: MerConfig, table: str, ds: str) -> Path:
    """Path of one raw partition, checked against the contract (missing partition or drift -> ContractError)."""
    path = partition_dir(cfg.raw_table(table), ds)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else []
    if not files:
        raise ContractError(missing_partition(table, ds, path.parent))
    for f in files:
        # Every file's footer: a corrupt or truncated file (or one drifted file among good ones)
        # is named here, not deep inside a Spark task.
        check_schema(table, ds, read_file_schema(table, ds, f), RAW_TABLES[table])
    return path


def read_file_schema(table: str, ds: str, path: Path) -> pa.Schema:
    """The Arrow schema from one Parquet footer; an unreadable file -> ContractError naming it."""
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise ContractError(
            f"table {table} ds={ds}: file {path.name} is not a readable Parquet file ({exc}); "
            f"re-land the partition {path.parent}"
        ) from None


def snapshot_partition(cfg: MerConfig, table: str, ds: str) -> tuple[str, Path]:
    """Latest snapshot partition <= ds, schema-checked."""
    snap = latest_partition(cfg.raw_table(table), ds)
    return snap, raw_partition(cfg, table, snap)


def require_raw_days(cfg: MerConfig, tables: list[str], days: list[str]) -> None:
    """Every missing raw partition of ``tables`` x ``days`` named in one error, not one per re-run."""
    problems = []
    for table in tables:
        missing = [d for d in days if not any(partition_dir(cfg.raw_table(table), d).glob("*.parquet"))]
        if missing:
            problems.append(missing_partition(table, missing, cfg.raw_table(table)))
    if problems:
        raise ContractError("; ".join(problems))


def read_raw_days(spark, cfg: MerConfig, table: str, days: list[str]):
    """The contract's columns of several daily raw partitions in one scan, + ``event_date`` (the partition day).

    Every partition is schema-checked first; the scan then uses the contract schema, so Spark
    neither infers schemas nor the partition column's type (``ds`` stays a string).
    """
    from pyspark.sql import types as T

    paths = [str(raw_partition(cfg, table, day)) for day in days]  # validate_raw.run named every missing day first
    schema = spark_schema(RAW_TABLES[table]).add(T.StructField("ds", T.StringType()))
    df = spark.read.schema(schema).option("basePath", str(cfg.raw_table(table))).parquet(*paths)
    return df.withColumnRenamed("ds", "event_date")


def count_rows(cfg: MerConfig, name: str, ds: str) -> int:
    """Rows of a written warehouse partition, from Parquet footers (no Spark job)."""
    return pads.dataset(partition_dir(cfg.table(name), ds), format="parquet").count_rows()


def read_arrow(cfg: MerConfig, name: str, ds: str, columns: list[str]) -> pa.Table:
    return pads.dataset(partition_dir(cfg.table(name), ds), format="parquet").to_table(columns=columns)


def read_table(spark, cfg: MerConfig, name: str, ds: str):
    """One partition of a warehouse table (without the ds column)."""
    path = partition_dir(cfg.table(name), ds)
    if not path.is_dir():
        raise ContractError(missing_partition(name, ds, path.parent))
    reader = spark.read.schema(spark_schema(DERIVED_TABLES[name])) if name in DERIVED_TABLES else spark.read
    return reader.parquet(str(path))


def write_table(df, cfg: MerConfig, name: str, ds: str) -> Path:
    """Write ``df`` as partition ds of warehouse table ``name``, columns in contract order.

    Spark writes into a staging folder of its own (hidden from readers by the dot) that is then
    swapped in as ds=<ds>, replacing a previous run's partition whole. Whether the write produced
    anything is read from that folder's content, never from file times (clocks of the writers and
    of shared storage disagree): a result with no Parquet file becomes an empty, schema-only partition,
    so a previous run's rows never survive an empty re-run.
    """
    cols = DERIVED_TABLES[name].names if name in DERIVED_TABLES else df.columns
    out = cfg.table(name)
    path = partition_dir(out, ds)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        df.select(*cols).write.parquet(str(staging))
        if any(staging.glob("*.parquet")):
            for marker in ("_SUCCESS", "._SUCCESS.crc"):  # the partition holds data files only
                (staging / marker).unlink(missing_ok=True)
            swap_in(staging, path)
            return path
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once swapped in
    schema = DERIVED_TABLES.get(name) or df.select(*cols).limit(0).toArrow().schema
    return write_partition(out, ds, schema.empty_table())
