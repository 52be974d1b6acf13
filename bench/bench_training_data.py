"""Benchmark: the full training-data build vs a plain Spark join of the same two logs.

    .venv/bin/python bench/bench_training_data.py [--events 5000000] [--root DIR]

Synthesises (in Spark, seeded) ``--events`` engagement rows over a 15-day window, the matching
source_interest_log (one row per served (request, item)) and an item_features snapshot, writes
them as the validated logs the build reads, then times in one process:

1. plain join: engagement_log JOIN source_interest_log ON (request_id, item_id) -> Parquet;
2. the project's build (``mer.stages.spark_jobs.training_data.build``): cr_triples, training_examples with
   histories, item_frequency, eval_corpus -> Parquet.

Prints events/s for both and their ratio (target: build <= 3x the plain join), then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

DS = "2026-01-15"
DAYS = 15
ACTION_CDF = (("impression", 0.80), ("click", 0.92), ("save", 0.97), ("hide", 1.0))


def synthesise(spark, n_events: int, n_users: int, n_items: int, dim: int, seed: int):
    """(events, source_interest, items) DataFrames: ~12 events per request, requests spread over users and days."""
    from pyspark.sql import functions as F

    start = F.lit(f"2026-01-01 00:00:00").cast("timestamp_ntz")
    ev = spark.range(n_events).select(
        F.concat(F.lit("e"), F.col("id").cast("string")).alias("event_id"),
        (F.col("id") / 12).cast("long").alias("req"),
        F.rand(seed).alias("u_a"),
        F.rand(seed + 1).alias("u_i"),
    )
    ev = ev.select(
        "event_id",
        F.concat(F.lit("r"), F.col("req").cast("string")).alias("request_id"),
        (F.abs(F.xxhash64("req")) % n_users + 1).alias("user_id"),
        # popularity skew: squaring a uniform favours low item ids
        ((F.col("u_i") * F.col("u_i")) * n_items + 1).cast("long").alias("item_id"),
        # a request happens at one instant; its events a few seconds apart
        (start + F.make_dt_interval(
            secs=(F.abs(F.xxhash64("req", F.lit(seed))) % (DAYS * 86400)) + F.col("u_a") * 5)).alias("event_ts"),
        F.when(F.col("u_a") < ACTION_CDF[0][1], "impression")
        .when(F.col("u_a") < ACTION_CDF[1][1], "click")
        .when(F.col("u_a") < ACTION_CDF[2][1], "save")
        .otherwise("hide").alias("action"),
    )
    ev = ev.select(
        "event_id", "event_ts", "user_id", "item_id", "action", "request_id", F.lit("home_feed").alias("surface"),
        F.date_format("event_ts", "yyyy-MM-dd").alias("event_date"),
    )
    si = ev.select("request_id", "item_id", "event_date").dropDuplicates(["request_id", "item_id"]).select(
        "request_id",
        "item_id",
        F.when(F.rand(seed + 2) < 0.3, "followed_topic").otherwise("collaborative").alias("retriever"),
        "event_date",
    ).withColumn(
        "source_interest_id", F.when(F.col("retriever") == "followed_topic", F.col("item_id") % 16 + 1)
    ).select("request_id", "item_id", "retriever", "source_interest_id", "event_date")
    items = spark.range(1, n_items + 1).select(
        F.col("id").alias("item_id"),
        F.transform(F.array_repeat(F.lit(0), dim), lambda _, i: F.sin(F.col("id") * (i + 1)).cast("float"))
        .alias("pretrained_embedding"),
        (F.col("id") % 64).alias("category_id"),
        (F.col("id") % 500).alias("creator_id"),
        F.array((F.col("id") % 16 + 1)).alias("topic_ids"),
        F.array(F.lit(1.0).cast("float")).alias("topic_scores"),
    )
    return ev, si, items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--root", type=Path, default=None, help="data folder (default: a temporary one, removed)")
    args = ap.parse_args()

    from mer.base.config import MerConfig
    from mer.stages.spark_jobs import training_data
    from mer.stages.spark_jobs.session import get_spark
    from mer.stages.spark_jobs.warehouse import read_table, write_table

    root = args.root or Path(tempfile.mkdtemp(prefix="mer-bench-"))
    cfg = MerConfig(root=root)
    cfg.spark = cfg.spark.model_copy(update={"shuffle_partitions": 8})
    spark = get_spark(cfg, "mer-bench-training-data")
    try:
        t = time.perf_counter()
        ev, si, items = synthesise(spark, args.events, args.users, args.items, args.dim, args.seed)
        write_table(ev, cfg, "clean_engagement_log", DS)
        write_table(si, cfg, "clean_source_interest_log", DS)
        items.write.mode("overwrite").parquet(str(cfg.raw_table("item_features") / f"ds={DS}"))
        synth_s = time.perf_counter() - t
        events = read_table(spark, cfg, "clean_engagement_log", DS)
        source = read_table(spark, cfg, "clean_source_interest_log", DS)
        items = spark.read.parquet(str(cfg.raw_table("item_features") / f"ds={DS}"))
        n_events, n_si = events.count(), source.count()

        t = time.perf_counter()
        joined = events.join(source.drop("event_date"), on=["request_id", "item_id"], how="inner")
        joined.write.mode("overwrite").parquet(str(root / "bench_plain_join"))
        join_s = time.perf_counter() - t

        t = time.perf_counter()
        summary = training_data.build(spark, cfg, DS, events, source, items)
        build_s = time.perf_counter() - t
    finally:
        spark.stop()
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)

    join_eps, build_eps = n_events / join_s, n_events / build_s
    ratio = build_s / join_s
    print(f"events {n_events:,}  source_interest rows {n_si:,}  (synthesised in {synth_s:.1f}s)")
    print(f"plain join     {join_s:8.1f}s  {join_eps:12,.0f} events/s")
    print(f"full build     {build_s:8.1f}s  {build_eps:12,.0f} events/s  "
          f"({summary['training_examples']:,} examples, {summary['cr_triples']:,} cr_triples)")
    print(f"build / join   {ratio:8.2f}x  (target <= 3x)")
    print(json.dumps({
        "bench": "training_data", "events": n_events, "source_interest_rows": n_si,
        "plain_join_s": round(join_s, 2), "build_s": round(build_s, 2),
        "plain_join_events_per_s": round(join_eps), "build_events_per_s": round(build_eps),
        "ratio": round(ratio, 2), "within_target": ratio <= 3.0,
        "training_examples": summary["training_examples"], "cr_triples": summary["cr_triples"],
        "history_len": cfg.build.history_len, "spark_master": cfg.spark.master,
    }))


if __name__ == "__main__":
    main()
