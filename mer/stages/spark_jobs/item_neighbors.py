"""Item-kNN neighbours (``item_neighbors``): cosine co-engagement over the train split.

Written by ``mer build`` (mer/stages/spark_jobs/training_data.py) from the written ``training_examples``:

- each user's *set* of items: the distinct items of their train-split positives (``split == "train"``;
  val and eval rows never make a pair), capped to the ``max_items_per_user`` most recently engaged
  ones (latest event_ts of the item, ties: lower item_id) so a heavy user adds at most m^2 pairs;
- c(i, j) = users whose set holds both i and j; n_i = users whose set holds i;
- score = c(i, j) / sqrt(n_i * n_j): the cosine of columns i and j of the binary user x item matrix;
- each item keeps its ``top_m`` best neighbours (score desc, then c desc, then lower neighbor_id),
  rank 1 = best. No self pairs; an item nobody co-engaged has no row.

Pairs are made inside each user's sorted item list (i < j, no self-join), counted, then mirrored, so
the pair shuffle carries each co-engagement once and Spark combines counts before shuffling.
"""
from __future__ import annotations


def item_neighbors(examples, *, top_m: int, max_items_per_user: int):
    """training_examples rows (user_id, item_id, event_ts, split) -> ITEM_NEIGHBORS rows (see module doc)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    last = (
        examples.filter(F.col("split") == "train")
        .groupBy("user_id", "item_id")
        .agg(F.max("event_ts").alias("ts"))
    )
    recent = Window.partitionBy("user_id").orderBy(F.desc("ts"), F.asc("item_id"))
    kept = last.withColumn("r", F.row_number().over(recent)).filter(F.col("r") <= int(max_items_per_user))
    users = kept.groupBy("user_id").agg(F.array_sort(F.collect_list("item_id")).alias("items"))
    n = users.select(F.explode("items").alias("item_id")).groupBy("item_id").agg(F.count(F.lit(1)).alias("n"))
    # (items[k], items[l]) for k < l: items is sorted and distinct, so i < j and never i == j.
    later = F.transform("items", lambda x, k: F.transform(
        F.slice("items", k + 2, F.greatest(F.size("items") - k - 1, F.lit(0))),
        lambda y: F.struct(x.alias("i"), y.alias("j"))))
    pairs = (
        users.select(F.explode(F.flatten(later)).alias("p"))
        .groupBy(F.col("p.i").alias("i"), F.col("p.j").alias("j"))
        .agg(F.count(F.lit(1)).alias("c"))
    )
    # Score each unordered pair once, then mirror it: (i -> j) and (j -> i) in one pass, no union.
    n_i = n.select(F.col("item_id").alias("i"), F.col("n").alias("n_i"))
    n_j = n.select(F.col("item_id").alias("j"), F.col("n").alias("n_j"))
    scored = (
        pairs.join(n_i, on="i")
        .join(n_j, on="j")
        .withColumn("score", F.col("c") / F.sqrt((F.col("n_i") * F.col("n_j")).cast("double")))
    )
    both = scored.select(F.explode(F.array(
        F.struct(F.col("i").alias("item_id"), F.col("j").alias("neighbor_id"), "c", "score"),
        F.struct(F.col("j").alias("item_id"), F.col("i").alias("neighbor_id"), "c", "score"),
    )).alias("e")).select("e.*")
    best = Window.partitionBy("item_id").orderBy(F.desc("score"), F.desc("c"), F.asc("neighbor_id"))
    return (
        both.withColumn("rank", F.row_number().over(best).cast("long"))
        .filter(F.col("rank") <= int(top_m))
        .select("item_id", "neighbor_id", F.col("score").cast("double").alias("score"), "rank")
    )
