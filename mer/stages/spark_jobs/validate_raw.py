"""Stage 1 (`mer validate`): check the raw logs of the run's window, quarantine bad rows, keep the clean ones.

Reads ``engagement_log`` and ``source_interest_log`` for every day of the window (train days +
eval days, see ``warehouse.window_days``) and the ``item_features`` / ``topics`` snapshots (latest
partition <= ds). Each row gets the first reason that applies, in this order:

engagement_log:      null_id (event_id, event_ts, user_id, item_id, action, request_id) ->
                     unknown_action -> ts_outside_ds (event_ts not on its partition's day) ->
                     unknown_item (not in the item_features snapshot) -> duplicate_event_id
                     (every copy after the first by event_ts; the first stays clean)
source_interest_log: null_id (request_id, item_id, retriever) -> unknown_item -> unknown_topic
                     (source_interest_id not a topic; null is fine) -> duplicate_key
                     (request_id, item_id seen before: the join key must be unique)

Outputs (partition = run ds): ``clean_engagement_log``, ``clean_source_interest_log`` (contract
columns + event_date), ``quarantine`` (reason, column, row as JSON) and
``<quality_dir>/ds=<ds>/validation.json``. A table whose bad fraction exceeds
``build.max_bad_fraction`` fails the run with DataQualityError, after everything is written.
"""
from __future__ import annotations

import time

from mer.base.config import MerConfig
from mer.base.contract import RAW_TABLES
from mer.base.errors import ContractError, DataQualityError, validate_ds
from mer.base.io import write_json_atomic

ENGAGEMENT_ID_COLUMNS = ("event_id", "event_ts", "user_id", "item_id", "action", "request_id")
SOURCE_INTEREST_ID_COLUMNS = ("request_id", "item_id", "retriever")
LOG_OUTPUTS = {"engagement_log": "clean_engagement_log", "source_interest_log": "clean_source_interest_log"}


def _first_null(columns):
    """Name of the first null column among ``columns`` (null when none is)."""
    from pyspark.sql import functions as F

    return F.coalesce(*[F.when(F.col(c).isNull(), F.lit(c)) for c in columns])


def _rc(reason: str, column):
    """(reason, column) as one struct so a single CASE picks both."""
    from pyspark.sql import functions as F

    col = column if not isinstance(column, str) else F.lit(column)
    return F.struct(F.lit(reason).alias("r"), col.alias("c"))


def _known(df, ids, column: str, flag: str):
    """Left-join a broadcast id list: adds boolean ``flag`` (id present in ``ids``)."""
    from pyspark.sql import functions as F

    ref = ids.select(F.col(ids.columns[0]).alias(column)).distinct().withColumn(flag, F.lit(True))
    return df.join(F.broadcast(ref), on=column, how="left").withColumn(flag, F.coalesce(F.col(flag), F.lit(False)))


def split_flagged(flagged, source_table: str):
    """(good rows with the contract columns + event_date, bad rows in the QUARANTINE shape)."""
    from pyspark.sql import functions as F

    columns = RAW_TABLES[source_table].names
    good = flagged.filter(F.col("_reason").isNull()).select(*columns, "event_date")
    bad = flagged.filter(F.col("_reason").isNotNull()).select(
        F.lit(source_table).alias("source_table"),
        F.col("event_date").alias("source_ds"),
        F.col("_reason").alias("reason"),
        F.col("_column").alias("column"),
        F.to_json(F.struct(*columns), {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"}).alias("row_json"),
    )
    return good, bad


def check_engagement(events, item_ids, known_actions: list[str]):
    """engagement_log rows (+ event_date) -> (good, bad). ``item_ids``: one-column frame of catalog ids."""
    return split_flagged(flag_engagement(events, item_ids, known_actions), "engagement_log")


def flag_engagement(events, item_ids, known_actions: list[str]):
    """engagement_log rows + ``_reason`` / ``_column`` (null when the row is clean)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    null_col = _first_null(ENGAGEMENT_ID_COLUMNS)
    df = _known(events, item_ids, "item_id", "_known_item")
    reason = (
        F.when(null_col.isNotNull(), _rc("null_id", null_col))
        .when(~F.col("action").isin(list(known_actions)), _rc("unknown_action", "action"))
        .when(F.date_format("event_ts", "yyyy-MM-dd") != F.col("event_date"),
              _rc("ts_outside_ds", "event_ts"))
        .when(~F.col("_known_item"), _rc("unknown_item", "item_id"))
    )
    df = df.withColumn("_rc", reason)
    # Keep the first clean copy of an event id; a copy that is bad for another reason keeps that reason.
    first = Window.partitionBy("event_id").orderBy(
        F.col("_rc").isNull().desc(), "event_ts", "event_date", "user_id", "item_id", "action", "request_id"
    )
    df = df.withColumn("_n", F.row_number().over(first)).withColumn(
        "_rc",
        F.when(F.col("_rc").isNull() & (F.col("_n") > 1), _rc("duplicate_event_id", "event_id"))
        .otherwise(F.col("_rc")),
    )
    return df.withColumn("_reason", F.col("_rc").getField("r")).withColumn("_column", F.col("_rc").getField("c"))


def flag_source_interest(rows, item_ids, topic_ids):
    """source_interest_log rows + ``_reason`` / ``_column`` (null when the row is clean)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    null_col = _first_null(SOURCE_INTEREST_ID_COLUMNS)
    df = _known(rows, item_ids, "item_id", "_known_item")
    df = _known(df, topic_ids, "source_interest_id", "_known_topic")
    reason = (
        F.when(null_col.isNotNull(), _rc("null_id", null_col))
        .when(~F.col("_known_item"), _rc("unknown_item", "item_id"))
        .when(F.col("source_interest_id").isNotNull() & ~F.col("_known_topic"),
              _rc("unknown_topic", "source_interest_id"))
    )
    df = df.withColumn("_rc", reason)
    first = Window.partitionBy("request_id", "item_id").orderBy(
        F.col("_rc").isNull().desc(), "event_date", F.col("source_interest_id").asc_nulls_last(), "retriever"
    )
    df = df.withColumn("_n", F.row_number().over(first)).withColumn(
        "_rc",
        F.when(F.col("_rc").isNull() & (F.col("_n") > 1), _rc("duplicate_key", "request_id"))
        .otherwise(F.col("_rc")),
    )
    return df.withColumn("_reason", F.col("_rc").getField("r")).withColumn("_column", F.col("_rc").getField("c"))


def threshold_failures(tables: dict[str, dict], max_bad_fraction: float) -> list[str]:
    """One message per table over the threshold, naming the dominant reason's column."""
    out = []
    for name, t in tables.items():
        if t["rows"] and t["bad_fraction"] > max_bad_fraction:
            reason, rec = max(t["reasons"].items(), key=lambda kv: kv[1]["count"])
            columns = rec.get("columns") or {rec["column"]: rec["count"]}
            where = (
                f"in column {rec['column']!r}" if len(columns) == 1
                else "in columns " + ", ".join(f"{c!r} ({n})" for c, n in columns.items())
            )
            out.append(
                f"table {name}: {t['bad']} of {t['rows']} rows quarantined "
                f"(fraction {t['bad_fraction']:.4f} > max_bad_fraction {max_bad_fraction}); "
                f"mostly {reason} {where} ({rec['count']} rows)"
            )
    return out


def empty_partitions(cfg: MerConfig, days: list[str]) -> list[str]:
    """``table/ds=day`` of every log partition of ``days`` that landed with zero rows (footers only)."""
    import pyarrow.dataset as pads

    from mer.stages.spark_jobs.warehouse import raw_partition

    return [
        f"{table}/ds={day}"
        for table in LOG_OUTPUTS
        for day in days
        if pads.dataset(raw_partition(cfg, table, day), format="parquet").count_rows() == 0
    ]


def run(cfg: MerConfig, ds: str) -> dict:
    from pyspark import StorageLevel

    from mer.stages.spark_jobs import catalog
    from mer.stages.spark_jobs.session import get_spark
    from mer.stages.spark_jobs.warehouse import (
        count_rows,
        read_arrow,
        read_raw_days,
        snapshot_partition,
        require_raw_days,
        window_days,
        write_table,
    )

    validate_ds(ds)
    t0 = time.perf_counter()
    train_days, eval_days = window_days(cfg, ds)
    days = train_days + eval_days
    require_raw_days(cfg, list(LOG_OUTPUTS), days)  # every missing day named at once
    # An eval day that landed empty is an upstream outage, not a quiet day: the model would be
    # evaluated (and blessed) on nothing. Train days may be empty (the first days of a dataset).
    empty = empty_partitions(cfg, eval_days)
    if empty:
        raise ContractError(
            "raw input: eval-day partition(s) with 0 rows: " + ", ".join(empty)
            + f"; re-land them, then re-run `mer validate --ds {ds}`"
        )
    spark = get_spark(cfg, "mer-validate-raw")

    items_snap, items_path = snapshot_partition(cfg, "item_features", ds)
    topics_snap, topics_path = snapshot_partition(cfg, "topics", ds)
    item_ids = spark.read.parquet(str(items_path)).select("item_id")
    topic_ids = spark.read.parquet(str(topics_path)).select("topic_id")

    events = read_raw_days(spark, cfg, "engagement_log", days)
    si = read_raw_days(spark, cfg, "source_interest_log", days)
    # Clean and quarantined rows come from one flagged frame per log: keep it so the checks
    # (and their shuffle) run once, not once per output.
    flagged = {
        "engagement_log": flag_engagement(events, item_ids, cfg.build.known_actions),
        "source_interest_log": flag_source_interest(si, item_ids, topic_ids),
    }
    try:
        bad = []
        for name, df in flagged.items():
            good, rejected = split_flagged(df.persist(StorageLevel.MEMORY_AND_DISK), name)
            write_table(good, cfg, LOG_OUTPUTS[name], ds)
            bad.append(rejected)
        write_table(bad[0].unionByName(bad[1]), cfg, "quarantine", ds)
    finally:
        for df in flagged.values():
            df.unpersist()

    # Counts from what was written (Parquet footers, and the quarantine's few columns), not by
    # recomputing the checks in Spark.
    reason_rows = (
        read_arrow(cfg, "quarantine", ds, ["source_table", "reason", "column"])
        .group_by(["source_table", "reason", "column"])
        .aggregate([("reason", "count")])
        .to_pylist()
    )
    tables: dict[str, dict] = {}
    for raw_name, clean_name in LOG_OUTPUTS.items():
        good = count_rows(cfg, clean_name, ds)
        # One entry per reason; a reason can hit several columns (null_id in user_id and item_id):
        # every column's rows count, the column with most rows names the reason.
        reasons: dict[str, dict] = {}
        mine = [r for r in reason_rows if r["source_table"] == raw_name]
        for r in sorted(mine, key=lambda r: (-r["reason_count"], r["column"] or "")):
            rec = reasons.setdefault(r["reason"], {"column": r["column"], "count": 0, "columns": {}})
            rec["count"] += r["reason_count"]
            rec["columns"][r["column"]] = r["reason_count"]
        bad = sum(v["count"] for v in reasons.values())
        rows = good + bad
        tables[raw_name] = {
            "rows": rows,
            "clean": good,
            "bad": bad,
            "bad_fraction": round(bad / rows, 6) if rows else 0.0,
            "reasons": reasons,
        }
    failures = threshold_failures(tables, cfg.build.max_bad_fraction)
    summary = {
        "ds": ds,
        "window": {"train": [train_days[0], train_days[-1]] if train_days else [], "eval": eval_days},
        "snapshots": {"item_features": items_snap, "topics": topics_snap},
        "tables": tables,
        "max_bad_fraction": cfg.build.max_bad_fraction,
        "passed": not failures,
        "failures": failures,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json_atomic(cfg.quality_dir / f"ds={ds}" / "validation.json", summary)
    summary["catalog"] = catalog.register_tables(spark, cfg)  # one line; a failure is a warning, not a failed job
    if failures:
        raise DataQualityError("; ".join(failures))
    return summary
