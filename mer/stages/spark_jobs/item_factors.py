"""Collaborative item factors (``item_factors``): implicit ALS (Spark MLlib) over the train split.

Written by ``mer build`` (mer/stages/spark_jobs/training_data.py) from the written ``training_examples``:

- r(u, i) = the user's train-split positives of the item (``split == "train"``: val and eval rows never
  enter, so neither day the towers are selected or scored on leaks into the factors);
- implicit-feedback ALS (Hu, Koren, Volinsky 2008: confidence 1 + alpha * r) factorises the binary
  user x item matrix; an item's factor row is its co-engagement signature, the same signal item-kNN reads;
- ids are mapped to dense integers with MLlib's StringIndexer (ALS needs 32-bit ids; ours are int64),
  ordered alphabetically so the same rows give the same indices and, with the seed, the same factors.

Read by the ``als`` simple baseline (mer/stages/model/baselines.py) and, with ``train.id_init=item_factors``, as
the starting rows of the towers' learned item-id embeddings (mer/stages/model/train.py; off by default: the
validation-day measurements are in bench/RESULTS.md).
"""
from __future__ import annotations


def item_factors(examples, *, rank: int, reg: float, alpha: float, max_iter: int, seed: int):
    """training_examples rows (user_id, item_id, split) -> ITEM_FACTORS rows (item_id, factors)."""
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    counts = (
        examples.filter(F.col("split") == "train")
        .groupBy("user_id", "item_id")
        .agg(F.count(F.lit(1)).cast("float").alias("r"))
        .withColumn("user", F.col("user_id").cast("string"))
        .withColumn("item", F.col("item_id").cast("string"))
    )
    if counts.limit(1).count() == 0:  # ALS refuses an empty matrix; no train positives -> no factors
        spark = counts.sparkSession
        return spark.createDataFrame([], "item_id bigint, factors array<float>")
    indexer = StringIndexer(inputCols=["user", "item"], outputCols=["u", "i"], stringOrderType="alphabetAsc")
    indexed = indexer.fit(counts).transform(counts).select(
        F.col("u").cast("int").alias("u"), F.col("i").cast("int").alias("i"), "r", "item_id")
    als = ALS(rank=int(rank), maxIter=int(max_iter), regParam=float(reg), alpha=float(alpha), implicitPrefs=True,
              userCol="u", itemCol="i", ratingCol="r", seed=int(seed), nonnegative=False)
    model = als.fit(indexed)
    ids = indexed.select("i", "item_id").distinct()
    return (
        model.itemFactors.join(ids, model.itemFactors["id"] == ids["i"])
        .select("item_id", F.col("features").cast("array<float>").alias("factors"))
    )
