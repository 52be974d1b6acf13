"""Stage 5: the whole item catalog through each served model's item tower (``mer infer``).

The latest ``item_features`` snapshot at or before ``ds`` is split into Arrow batches on Spark;
each Python worker loads an item tower once (cached per process) and encodes batch after batch.
Output: warehouse ``item_embeddings`` (model_version, item_id, embedding), partition ``ds``,
replaced by dynamic partition overwrite on re-run.
"""
from __future__ import annotations

import importlib
import json
import math
import sys
import time
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from index_builder import layout, towers
from mer.config import MerConfig
from mer.contract import ITEM_FEATURES, ITEM_EMBEDDINGS
from mer.errors import ContractError, validate_ds
from mer.tables import latest_partition, partition_dir, read_partition

OUT_SCHEMA_DDL = "model_version string, item_id bigint, embedding array<float>"
ROWS_PER_PARTITION = 50_000
EAGER_SAMPLE = 256

# One encoder per (serving module, model folder) per Python worker process.
_ENCODERS: dict[tuple[str, str], object] = {}


def cached_encoder(module: str, model_dir: str):
    key = (module, model_dir)
    if key not in _ENCODERS:
        _ENCODERS[key] = importlib.import_module(module).load_item_encoder(model_dir)
        if "torch" in sys.modules:
            # Spark already runs one worker per core; a tower using every core in each oversubscribes.
            sys.modules["torch"].set_num_threads(1)
    return _ENCODERS[key]


def embeddings_batch(model_version: str, item_ids: pa.Array, emb: np.ndarray) -> pa.RecordBatch:
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    values = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]).cast(pa.list_(pa.float32()))
    return pa.RecordBatch.from_arrays(
        [pa.array([model_version] * len(item_ids), pa.string()), item_ids.cast(pa.int64()), values],
        schema=ITEM_EMBEDDINGS,
    )


def encode_partition(module: str, models: dict[str, tuple[str, str]]) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow body: each Arrow batch through every served tower (cached per process).

    One pass over the catalog for all models: the features are read, shuffled and converted
    to pandas once, not once per model.
    """

    def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        encoders = [(cached_encoder(module, d), v) for d, v in models.values()]
        for batch in batches:
            if batch.num_rows == 0:
                continue
            frame = batch.to_pandas()
            for enc, version in encoders:
                yield embeddings_batch(version, batch.column("item_id"), enc.encode(frame))

    return encode


def encode_catalog(items_df, module: str, models: dict[str, tuple[str, str]]):
    """DataFrame of item_features -> DataFrame of item_embeddings for every served model."""
    return items_df.mapInArrow(encode_partition(module, models), OUT_SCHEMA_DDL)


def eager_max_abs_diff(cfg: MerConfig, ds: str, snapshot: str, module: str, models: dict[str, tuple[str, str]], n: int, seed: int) -> dict[str, float]:
    """Largest |spark - eager| over a seeded sample of items, per model (the two paths must agree)."""
    import pyarrow.dataset as pads

    feats = read_partition(cfg.raw_table("item_features"), snapshot)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(feats.num_rows, min(n, feats.num_rows), replace=False))
    sample = feats.take(pa.array(pick))
    written = pads.dataset(partition_dir(cfg.table("item_embeddings"), ds), format="parquet")
    diffs = {}
    for name, (model_dir, version) in models.items():
        enc = importlib.import_module(module).load_item_encoder(model_dir)
        eager = np.asarray(enc.encode(sample.to_pandas()), dtype=np.float32)
        got = written.to_table(
            filter=(pc.field("model_version") == version) & pc.field("item_id").isin(sample.column("item_id")),
            columns=["item_id", "embedding"],
        )
        by_id = {int(i): np.asarray(e, dtype=np.float32) for i, e in zip(got.column("item_id").to_pylist(), got.column("embedding").to_pylist())}
        ids = sample.column("item_id").to_pylist()
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ContractError(f"table item_embeddings: item_id={missing[0]} missing for model_version={version!r}")
        spark_emb = np.stack([by_id[i] for i in ids])
        diffs[name] = float(np.max(np.abs(spark_emb - eager))) if len(ids) else 0.0
    return diffs


def quality_gate(cfg: MerConfig, ds: str) -> object:
    """The Great Expectations gate for item_embeddings lives with the quality engineer; call it if present."""
    try:
        gates = importlib.import_module("mer.quality.gates")
    except ImportError:
        return "skipped (mer.quality.gates not available)"
    return gates.run(cfg, ds, "embeddings")


def run(cfg: MerConfig, ds: str) -> dict:
    from pyspark.sql import functions as F

    from spark_jobs.session import get_spark

    validate_ds(ds)
    t0 = time.perf_counter()
    module = towers.serving_module_name()
    srv = towers.serving(module)
    served = towers.served_models(cfg, ds, module)
    models = {m: (str(p), srv.load_item_encoder(str(p)).model_version) for m, p in served.items()}

    snapshot = latest_partition(cfg.raw_table("item_features"), ds)
    spark = get_spark(cfg, app_name="mer-item-inference")
    items = spark.read.schema(_spark_schema(spark)).parquet(str(partition_dir(cfg.raw_table("item_features"), snapshot)))
    n_items = items.count()
    if n_items == 0:
        raise ContractError(f"table item_features: snapshot ds={snapshot} is empty")
    parts = max(spark.sparkContext.defaultParallelism, math.ceil(n_items / ROWS_PER_PARTITION))
    embedded = encode_catalog(items.repartition(parts), module, models)
    t_write = time.perf_counter()
    (
        embedded.withColumn("ds", F.lit(ds))
        .write.mode("overwrite")
        .partitionBy("ds")
        .parquet(str(cfg.table("item_embeddings")))
    )
    write_s = time.perf_counter() - t_write

    rows = {
        r["model_version"]: r["count"]
        for r in spark.read.parquet(str(partition_dir(cfg.table("item_embeddings"), ds))).groupBy("model_version").count().collect()
    }
    diffs = eager_max_abs_diff(cfg, ds, snapshot, module, models, EAGER_SAMPLE, cfg.train.seed)
    versions = {m: v for m, (_, v) in models.items()}
    summary = {
        "ds": ds,
        "snapshot_ds": snapshot,
        "items": int(n_items),
        "versions": versions,
        "rows": {m: int(rows.get(v, 0)) for m, v in versions.items()},
        "partitions": parts,
        "eager_sample": min(EAGER_SAMPLE, n_items),
        "max_abs_diff_vs_eager": diffs,
        "seconds": round(time.perf_counter() - t0, 2),
        "items_per_s": round(n_items * len(models) / max(write_s, 1e-9), 1),
    }
    for m, v in versions.items():
        if summary["rows"][m] != n_items:
            raise ContractError(f"table item_embeddings: {summary['rows'][m]} rows for model_version={v!r}, expected {n_items}")
    layout.atomic_write_json(cfg.run_dir(ds) / "item_inference.json", summary)
    summary["quality"] = quality_gate(cfg, ds)
    return summary


def _spark_schema(spark):
    """item_features contract as a Spark schema, so a drifted snapshot fails at read, not in a worker."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(ITEM_FEATURES)
