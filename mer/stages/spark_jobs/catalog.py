"""Analyst access from Spark: every raw and warehouse table as an external Parquet table.

``register_tables(spark, cfg)`` creates databases ``mer`` (every table, raw and warehouse) and
``raw`` (raw tables only) and registers each table folder that has at least one ``ds=``
partition, so ``spark.sql("SELECT count(*) FROM mer.cr_triples")`` works in any session.
The catalog is Spark's in-memory one (no Hive metastore), so each session registers again:
the jobs do it when they finish, analysts call ``analyst_session(cfg)``. Tables are external
(LOCATION), so dropping a registration never deletes data; ``ds`` stays a string.
"""
from __future__ import annotations

from pathlib import Path

from mer.base.config import MerConfig
from mer.base.io import list_partitions, list_tables


def _ddl(spark, path: Path) -> str:
    """Column list of the newest partition's files (read from a footer, no Spark job), plus ``ds``."""
    import pyarrow.parquet as pq

    from mer.stages.spark_jobs.warehouse import spark_type

    newest = path / f"ds={list_partitions(path)[-1]}"
    schema = pq.read_schema(sorted(newest.glob("*.parquet"))[0])
    try:
        cols = [f"`{f.name}` {spark_type(f.type).simpleString()}" for f in schema if f.name != "ds"]
    except TypeError:  # a type the contract never uses: let Spark say what it is
        cols = [f"`{f.name}` {f.dataType.simpleString()}" for f in spark.read.parquet(str(newest)).schema.fields
                if f.name != "ds"]
    return ", ".join(cols + ["`ds` string"])


def register_tables(spark, cfg: MerConfig) -> list[str]:
    """(Re)register every table that has data; returns the qualified names."""
    names: list[str] = []
    raw, warehouse = list_tables(cfg.raw_dir), list_tables(cfg.warehouse_dir)
    spark.sql("CREATE DATABASE IF NOT EXISTS mer")
    spark.sql("CREATE DATABASE IF NOT EXISTS raw")
    targets = [("raw", n, p) for n, p in raw.items()] + [("mer", n, p) for n, p in raw.items() if n not in warehouse]
    targets += [("mer", n, p) for n, p in warehouse.items()]
    for db, name, path in targets:
        qualified = f"{db}.{name}"
        location = str(path).replace("'", "\\'")
        spark.sql(f"DROP TABLE IF EXISTS {qualified}")
        spark.sql(
            f"CREATE TABLE {qualified} ({_ddl(spark, path)}) USING parquet PARTITIONED BY (ds) LOCATION '{location}'"
        )
        spark.sql(f"ALTER TABLE {qualified} RECOVER PARTITIONS")
        names.append(qualified)
    return names


def analyst_session(cfg: MerConfig | None = None):
    """A Spark session with every table registered: ``analyst_session().sql("SELECT ... FROM mer.cr_triples")``."""
    from mer.base.config import load_config
    from mer.stages.spark_jobs.session import get_spark

    cfg = cfg or load_config()
    spark = get_spark(cfg, "mer-analyst")
    register_tables(spark, cfg)
    return spark
