"""Stage 2 (`mer build`): training data from the validated logs of the run's window.

Reads ``clean_engagement_log`` / ``clean_source_interest_log`` (partition = run ds, written by
``mer validate``) and the ``item_features`` snapshot (latest partition <= ds). Writes, each as
partition ds of its warehouse table:

- ``cr_triples``: positive engagements joined with source_interest_log on (request_id, item_id)
  where source_interest_id is set -> condition_id (the topic that served the item, paper 3.3).
- ``training_examples``: one row per positive engagement in the window with the user's last
  ``history_len`` engaged items (click/save/hide; impressions are not engagement) strictly
  before its event_ts, oldest first. Events at the *same* timestamp are never history for each
  other (no leakage). History is limited to the validated window: the first days of the window
  see shorter histories; nothing before the window is read, so a run depends on its window only.
  ``hist_valid`` = the item has usable features (non-null pretrained embedding of the catalog's
  length with a finite, non-zero norm) AND the action is not negative (hide).
  ``segment``: core when the user's saves over the train days exceed the paper's rate of
  ``core_saves_per_28d`` (4) saves per 28 days scaled to the train window, i.e.
  ``saves * 28 > core_saves_per_28d * train_days`` (14 days: 3+ saves -> core). Only train
  days count, so the eval day never decides a user's segment.
  ``split``: val for the last ``val_days`` days before the eval days (the validation day: early
  stopping, tuning, bless), train for the days before it, eval for the eval days (the run ds).
- ``item_frequency``: positives per item over the train split, prob = count / total (logQ).
- ``eval_corpus``: the ``eval_corpus_size`` items with most positives before the eval days (ties by item_id).
- ``item_neighbors``: item-kNN over the train split, cosine co-engagement (mer/stages/spark_jobs/item_neighbors.py).
- ``item_factors``: implicit-ALS item factors over the train split (mer/stages/spark_jobs/item_factors.py).

How the history is built (no Python UDFs, bounded memory per row): engaged events are
hash-partitioned by user once; events sharing (user, event_ts) are grouped into one row holding
their items; a window over the previous ``history_len`` group rows (each holds >= 1 item) collects
enough items, and the last ``history_len`` are kept. The positives of each group are then exploded
into examples. One shuffle for the history, one for the source-interest join.
"""
from __future__ import annotations

import time

from mer.base.config import MerConfig
from mer.base.errors import ContractError, validate_ds
from mer.stages.spark_jobs.item_factors import item_factors
from mer.stages.spark_jobs.item_neighbors import item_neighbors


def expected_embedding_dim(items) -> int | None:
    """The catalog's embedding length: the most common non-null length (the contract fixes one per dataset)."""
    from pyspark.sql import functions as F

    row = (
        items.filter(F.col("pretrained_embedding").isNotNull())
        .groupBy(F.size("pretrained_embedding").alias("n"))
        .count()
        .orderBy(F.desc("count"), F.desc("n"))
        .first()
    )
    return int(row["n"]) if row else None


def item_validity(items, dim: int | None):
    """item_features -> (item_id, feat_valid): embedding present, of length ``dim``, finite non-zero norm."""
    from pyspark.sql import functions as F

    emb = F.col("pretrained_embedding")
    sumsq = F.aggregate(emb, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x.cast("double"))
    ok = (
        emb.isNotNull()
        & (F.size(emb) == F.lit(dim if dim is not None else -1))
        & ~F.isnan(sumsq)
        & (sumsq > 0)
        & (sumsq < float("inf"))
    )
    return items.select("item_id", F.coalesce(ok, F.lit(False)).alias("feat_valid"))


def with_conditions(events, source_interest, positive_actions: list[str]):
    """Engaged events + condition_id: the source interest of positives (null for others / not served by a topic)."""
    from pyspark.sql import functions as F

    si = (
        source_interest.filter(F.col("source_interest_id").isNotNull())
        .select("request_id", "item_id", "source_interest_id")
        .dropDuplicates(["request_id", "item_id"])
    )
    joined = events.join(si, on=["request_id", "item_id"], how="left")
    return joined.withColumn(
        "condition_id",
        F.when(F.col("action").isin(list(positive_actions)), F.col("source_interest_id")).cast("long"),
    ).drop("source_interest_id")


def cr_triples(conditioned):
    """Positives with a condition -> CR_TRIPLES rows."""
    from pyspark.sql import functions as F

    return conditioned.filter(F.col("condition_id").isNotNull()).select(
        "condition_id", "user_id", "item_id", "event_ts", "action", "request_id", "event_date"
    )


def training_examples(
    conditioned,
    validity,
    *,
    history_len: int,
    positive_actions: list[str],
    negative_actions: list[str],
    train_days: list[str],
    core_saves_per_28d: int,
    num_partitions: int,
    val_days: int = 1,
):
    """Engaged events with condition_id (see ``with_conditions``) -> TRAINING_EXAMPLES rows (see module doc)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    n = int(history_len)
    last_window = max(train_days) if train_days else "0000-00-00"  # the last day before the eval days
    # The last `val_days` pre-eval days are the validation split (early stopping, tuning, bless); the eval
    # days are scored once and read by nothing else.
    fit_days = sorted(train_days)[: max(len(train_days) - int(val_days), 0)]
    last_train = max(fit_days) if fit_days else "0000-00-00"
    ev = conditioned.join(F.broadcast(validity), on="item_id", how="left").select(
        "user_id",
        "event_ts",
        "event_date",
        F.struct(
            F.col("event_ts").alias("ts"),
            F.col("event_id").alias("event_id"),
            F.col("item_id").alias("item_id"),
            F.col("action").alias("action"),
            (F.coalesce(F.col("feat_valid"), F.lit(False)) & ~F.col("action").isin(list(negative_actions))).alias("ok"),
            F.col("condition_id").alias("condition_id"),
        ).alias("e"),
        ((F.col("action") == "save") & (F.col("event_date") <= F.lit(last_window))).cast("int").alias("train_save"),
    )
    # Hash by user once: the per-(user, ts) grouping and the per-user window both reuse it.
    groups = (
        ev.repartition(num_partitions, "user_id")
        .groupBy("user_id", "event_ts")
        .agg(
            F.array_sort(F.collect_list("e")).alias("items"),  # ties at one instant: by event_id
            F.sum("train_save").alias("saves"),
            F.first("event_date").alias("event_date"),
        )
        # The sliding window copies history entries ~history_len times per row: carry only what
        # the output needs (not event_id / condition_id).
        .withColumn("slim", F.transform("items", lambda x: F.struct(
            x["ts"].alias("ts"), x["item_id"].alias("item_id"), x["action"].alias("action"), x["ok"].alias("ok"))))
    )
    by_time = Window.partitionBy("user_id").orderBy("event_ts")
    whole_user = Window.partitionBy("user_id")
    groups = groups.withColumn(
        "prev", F.flatten(F.collect_list("slim").over(by_time.rowsBetween(-n, -1)))
    ).withColumn("user_saves", F.sum("saves").over(whole_user))
    hist = F.col("prev")
    hist = F.when(F.size(hist) > n, F.slice(hist, F.size(hist) - n + 1, F.lit(n))).otherwise(hist)
    positives = F.filter("items", lambda x: x["action"].isin(list(positive_actions)))
    core = F.col("user_saves") * 28 > F.lit(int(core_saves_per_28d) * len(train_days))
    return (
        groups.select(
            "user_id",
            "event_ts",
            "event_date",
            hist.alias("hist"),
            core.alias("core"),
            F.explode(positives).alias("p"),
        )
        .select(
            F.col("p.event_id").alias("event_id"),
            "user_id",
            F.col("p.item_id").alias("item_id"),
            "event_ts",
            F.col("p.action").alias("action"),
            "event_date",
            F.transform("hist", lambda x: x["item_id"]).alias("hist_item_ids"),
            F.transform("hist", lambda x: x["action"]).alias("hist_actions"),
            F.transform("hist", lambda x: x["ts"]).alias("hist_ts"),
            F.transform("hist", lambda x: x["ok"]).alias("hist_valid"),
            F.col("p.condition_id").alias("condition_id"),
            F.when(F.col("core"), "core").otherwise("non_core").alias("segment"),
            F.when(F.col("event_date") <= F.lit(last_train), "train")
            .when(F.col("event_date") <= F.lit(last_window), "val")
            .otherwise("eval")
            .alias("split"),
        )
    )


def item_frequency(examples):
    """Train-split positives per item; prob = count / all train positives (logQ correction)."""
    from pyspark.sql import functions as F

    counts = examples.filter(F.col("split") == "train").groupBy("item_id").agg(F.count(F.lit(1)).alias("count"))
    total = counts.agg(F.sum("count").alias("total"))
    return counts.crossJoin(F.broadcast(total)).select(
        "item_id", "count", (F.col("count") / F.col("total")).cast("double").alias("prob")
    )


def eval_corpus(examples, size: int):
    """Top ``size`` items by positives before the eval days (train + val splits), rank 1 = most engaged
    (ties: lower item_id). The eval day does not pick the candidates it is scored against."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    top = (
        examples.filter(F.col("split") != "eval")
        .groupBy("item_id")
        .agg(F.count(F.lit(1)).alias("count"))
        .orderBy(F.desc("count"), F.asc("item_id"))
        .limit(int(size))
    )
    rank = F.row_number().over(Window.orderBy(F.desc("count"), F.asc("item_id"))).cast("long")
    return top.select("item_id", rank.alias("rank"), "count")


def build(spark, cfg: MerConfig, ds: str, events, source_interest, items) -> dict:
    """Compute and write the five tables from already-loaded frames (the bench calls this too)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from mer.stages.spark_jobs.warehouse import (
        count_rows,
        read_arrow,
        read_table,
        window_days,
        write_table,
    )

    b = cfg.build
    train_days, _ = window_days(cfg, ds)
    engaged_actions = list(dict.fromkeys([*b.positive_actions, *b.negative_actions]))
    dim = expected_embedding_dim(items)
    validity = item_validity(items, dim)
    engaged = events.filter(F.col("action").isin(engaged_actions))
    conditioned = with_conditions(engaged, source_interest, b.positive_actions).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        write_table(cr_triples(conditioned), cfg, "cr_triples", ds)
        examples = training_examples(
            conditioned,
            validity,
            history_len=b.history_len,
            positive_actions=b.positive_actions,
            negative_actions=b.negative_actions,
            train_days=train_days,
            core_saves_per_28d=b.core_saves_per_28d,
            val_days=b.val_days,
            num_partitions=max(spark.sparkContext.defaultParallelism, cfg.spark.shuffle_partitions),
        )
        write_table(examples, cfg, "training_examples", ds)
    finally:
        conditioned.unpersist()
    written = read_table(spark, cfg, "training_examples", ds).select("item_id", "split", "segment", "condition_id")
    write_table(item_frequency(written), cfg, "item_frequency", ds)
    write_table(eval_corpus(written, b.eval_corpus_size), cfg, "eval_corpus", ds)
    pairs_from = read_table(spark, cfg, "training_examples", ds).select("user_id", "item_id", "event_ts", "split")
    neighbors = item_neighbors(pairs_from, top_m=b.neighbors_top_m, max_items_per_user=b.neighbors_max_items_per_user)
    write_table(neighbors, cfg, "item_neighbors", ds)
    factors = item_factors(pairs_from, rank=b.als_rank, reg=b.als_reg, alpha=b.als_alpha, max_iter=b.als_iters,
                           seed=b.als_seed)
    write_table(factors, cfg, "item_factors", ds)

    # Summary from the written files with pyarrow: no Spark job for a handful of numbers.
    stats = (
        read_arrow(cfg, "training_examples", ds, ["split", "segment", "condition_id"])
        .group_by(["split", "segment"])
        .aggregate([("split", "count"), ("condition_id", "count")])
        .to_pylist()
    )
    examples_n = sum(r["split_count"] for r in stats)
    with_cond = sum(r["condition_id_count"] for r in stats)
    return {
        "embedding_dim": dim,
        "cr_triples": count_rows(cfg, "cr_triples", ds),
        "training_examples": examples_n,
        "by_split": {s: sum(r["split_count"] for r in stats if r["split"] == s) for s in ("train", "val", "eval")},
        "by_segment": {s: sum(r["split_count"] for r in stats if r["segment"] == s) for s in ("core", "non_core")},
        "join_rate": round(with_cond / examples_n, 6) if examples_n else 0.0,
        "item_frequency": count_rows(cfg, "item_frequency", ds),
        "eval_corpus": count_rows(cfg, "eval_corpus", ds),
        "item_neighbors": count_rows(cfg, "item_neighbors", ds),
        "item_factors": count_rows(cfg, "item_factors", ds),
    }


def run(cfg: MerConfig, ds: str) -> dict:
    from mer.stages.spark_jobs import catalog
    from mer.stages.spark_jobs.session import get_spark
    from mer.stages.spark_jobs.warehouse import (
        read_table,
        snapshot_partition,
        window_days,
    )

    validate_ds(ds)
    t0 = time.perf_counter()
    spark = get_spark(cfg, "mer-training-data")
    try:
        events = read_table(spark, cfg, "clean_engagement_log", ds)
        source_interest = read_table(spark, cfg, "clean_source_interest_log", ds)
    except ContractError as err:
        raise ContractError(f"{err} (run `mer validate --ds {ds}` first)") from None
    snap, items_path = snapshot_partition(cfg, "item_features", ds)
    items = spark.read.parquet(str(items_path))
    summary = {"ds": ds, "window": window_days(cfg, ds), "item_features_snapshot": snap}
    summary.update(build(spark, cfg, ds, events, source_interest, items))
    if summary["training_examples"] == 0:
        raise ContractError(f"table clean_engagement_log ds={ds}: no positive engagements in the window; nothing to train on")
    summary["catalog"] = catalog.register_tables(spark, cfg)  # one line; a failure is a warning, not a failed job
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary
