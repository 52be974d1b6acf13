"""Stage 5: the whole item catalog through each served model's item tower (``mer infer``).

Spark schedules the work; the bytes never cross the JVM. The latest ``item_features`` snapshot at
or before ``ds`` is cut into slices (file, row group, row range) on the driver from Parquet
metadata; one Spark task per slice reads it with pyarrow in its Python worker, runs every served
tower over it batch by batch (the towers are loaded once per worker process and cached by the
content hash of the model folder) and writes one Parquet file of embeddings per index shard
(bucketed by ``mer.stages.index.shards``, so a shard's build reads only its bucket) into a staging
folder. When every task has finished and a sample of the written rows matches the eager item tower
(``index.parity_tolerance``), the staging folder replaces partition ``ds`` of warehouse
``item_embeddings`` (model_version, item_id, embedding) in one rename, so a re-run replaces exactly
its own partition and a failed run leaves the previous one in place. A retried task rewrites the
same file names.

Why not ``spark.read.parquet(...).mapInArrow(...).write.parquet(...)``: on the reference machine
the JVM's row <-> Arrow conversion of the list columns (32 floats in, 64 floats out per item and
model) and Spark's Parquet writer cost more CPU than the tower itself (bench/RESULTS.md).
"""
from __future__ import annotations

import hashlib
import importlib
import math
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mer.base.config import MerConfig
from mer.base.contract import ITEM_EMBEDDINGS, ITEM_FEATURES
from mer.base.errors import ContractError, GateError, validate_ds
from mer.base.io import (
    latest_partition,
    partition_dataset,
    partition_dir,
    swap_in,
    write_json_atomic,
)
from mer.stages.index import towers
from mer.stages.index.shards import bucket_file, embeddings_to_numpy, split_by_shard
from mer.stages.spark_jobs.warehouse import check_schema

RESULT_DDL = "task int, model_version string, rows bigint, file string, cpu_seconds double"
RESULT_SCHEMA = pa.schema([("task", pa.int32()), ("model_version", pa.string()), ("rows", pa.int64()),
                          ("file", pa.string()), ("cpu_seconds", pa.float64())])
ROWS_PER_TASK = 250_000  # a slice re-decodes its row group from the start: few, large slices
TASKS_PER_CORE = 2  # enough slices that a slow core (shared machine) does not hold the stage
# Embeddings never repeat: dictionary-encoding them only costs time (4x the write); nobody prunes on
# min/max of embedding values, so no statistics for them either.
PARQUET_OPTIONS = dict(compression="snappy", use_dictionary=["model_version"], write_statistics=["model_version", "item_id"])

def model_digest(model_dir: str | Path) -> str:
    """sha256 of every file of a model folder (weights, config): the identity of what the tower computes.

    A retrain into the same folder changes it, so no cache can serve the old weights under the new version.
    """
    h = hashlib.sha256()
    root = Path(model_dir)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


class EncoderCache:
    """Loaded item towers of one Python worker process, keyed by (module, folder, content digest).

    Spark reuses Python workers across tasks and jobs; the digest comes from the driver with the task,
    so a retrained model in the same folder is a new key. Only the newest digest per folder is kept.
    """

    def __init__(self):
        self._loaded: dict[tuple[str, str], tuple[str, object]] = {}

    def get(self, module: str, model_dir: str, digest: str, threads: int = 1):
        hit = self._loaded.get((module, model_dir))
        if hit is None or hit[0] != digest:
            self._loaded[(module, model_dir)] = (digest, importlib.import_module(module).load_item_encoder(model_dir))
            if "torch" in sys.modules:
                # Spark already runs one worker per task slot; a tower using every core in each oversubscribes.
                sys.modules["torch"].set_num_threads(threads)
        return self._loaded[(module, model_dir)][1]


# The one cache of this worker process: the mapInArrow closures are pickled per task, so the cache
# cannot travel with them; it lives as long as the (reused) worker does.
ENCODERS = EncoderCache()


def encoder_columns(encoders) -> list[str]:
    """item_features columns to read: item_id + what the encoders declare (all features when one does not)."""
    want = {"item_id"}
    for enc in encoders:
        want.update(getattr(enc, "columns", None) or ITEM_FEATURES.names)
    return [n for n in ITEM_FEATURES.names if n in want]


def encode_batch(enc, batch: pa.RecordBatch) -> np.ndarray:
    """The Arrow path when the encoder has one (no pandas, no per-row Python), else pandas."""
    if hasattr(enc, "encode_arrow"):
        return enc.encode_arrow(batch)
    return enc.encode(batch.to_pandas())


def _constant_strings(value: str, n: int) -> pa.Array:
    data = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def embeddings_batch(model_version: str, item_ids: pa.Array, emb: np.ndarray) -> pa.RecordBatch:
    """ITEM_EMBEDDINGS rows from a [n, d] array: list<float> built on the flat buffer, no Python lists."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    n, d = emb.shape
    values = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), pa.array(emb.reshape(-1)),
                                      pa.list_(pa.float32()))
    return pa.RecordBatch.from_arrays([_constant_strings(model_version, n), item_ids.cast(pa.int64()), values],
                                      schema=ITEM_EMBEDDINGS)


# ---------------------------------------------------------------- the plan: slices of the snapshot
@dataclass(frozen=True)
class Slice:
    task: int
    path: str
    row_group: int
    start: int  # rows [start, stop) of the row group
    stop: int


def plan_slices(snapshot_dir: Path, snapshot: str, columns: list[str], parallelism: int) -> tuple[list[Slice], int]:
    """Cut the snapshot into about TASKS_PER_CORE slices per core (at most ROWS_PER_TASK rows each).

    The contract is checked here, from the footers, so a drifted snapshot fails on the driver
    naming the column, not in a worker.
    """
    files = sorted(p for p in Path(snapshot_dir).glob("*.parquet") if not p.name.startswith((".", "_")))
    wanted = pa.schema([ITEM_FEATURES.field(c) for c in columns])
    metas = []
    for f in files:
        md = pq.read_metadata(f)
        check_schema("item_features", f"{snapshot} (file {f.name})", md.schema.to_arrow_schema(), wanted)
        metas.append((f, md))
    groups = [(str(f), g, md.row_group(g).num_rows) for f, md in metas for g in range(md.num_row_groups)]
    groups = [x for x in groups if x[2] > 0]
    total = sum(n for _, _, n in groups)
    if not groups:
        return [], 0
    want_tasks = max(TASKS_PER_CORE * parallelism, math.ceil(total / ROWS_PER_TASK))
    slices = []
    for path, g, n in groups:
        k = max(1, min(n, round(want_tasks * n / total)), math.ceil(n / ROWS_PER_TASK))
        bounds = np.linspace(0, n, k + 1).round().astype(int)
        slices += [Slice(len(slices) + i, path, g, int(a), int(b)) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    return slices, total


def read_slice(s: Slice, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Rows [start, stop) of one row group, as record batches of at most batch_rows, cast to the contract."""
    want = pa.schema([ITEM_FEATURES.field(c) for c in columns])
    pos = 0
    for b in pq.ParquetFile(s.path).iter_batches(batch_size=batch_rows, row_groups=[s.row_group], columns=columns,
                                                 use_threads=False):
        lo, hi = max(s.start - pos, 0), min(s.stop - pos, b.num_rows)
        pos += b.num_rows
        if hi > lo:
            b = b.slice(lo, hi - lo)
            if not b.schema.equals(want):
                b = pa.Table.from_batches([b]).select(columns).cast(want).combine_chunks().to_batches()[0]
            yield b
        if pos >= s.stop:
            break


def encode_slices(module: str, models: dict[str, tuple[str, str, str]], slices: list[Slice], columns: list[str],
                  out_dir: str, batch_rows: int, shards: int,
                  threads: int = 1) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow body over a frame of slice numbers: read the slice, every tower, one Parquet file per
    (slice, index shard). ``models``: name -> (model folder, model_version, content digest)."""

    def encode(tasks: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        cpu0 = time.process_time()  # this worker's CPU for the slice (the first one also loads the towers)
        encoders = [(ENCODERS.get(module, d, digest, threads), v) for d, v, digest in models.values()]
        for t in tasks:
            for task in t.column(0).to_pylist():
                s = slices[task]
                names = [bucket_file(b, shards, task) for b in range(shards)]
                tmps = [Path(out_dir) / f".{n}-{uuid.uuid4().hex[:8]}.tmp" for n in names]
                rows = {v: 0 for _, v in encoders}
                try:
                    # Every bucket gets its file, empty or not: a bucket without files means "not bucketed so".
                    writers = [pq.ParquetWriter(tmp, ITEM_EMBEDDINGS, **PARQUET_OPTIONS) for tmp in tmps]
                    try:
                        for batch in read_slice(s, columns, batch_rows):
                            order, bounds = split_by_shard(batch.column("item_id").to_numpy(), shards)
                            batch = batch.take(pa.array(order))  # rows grouped by shard: one slice per bucket
                            ids = batch.column("item_id")
                            for enc, version in encoders:
                                out = embeddings_batch(version, ids, encode_batch(enc, batch))
                                for b, w in enumerate(writers):
                                    if bounds[b + 1] > bounds[b]:
                                        w.write_batch(out.slice(bounds[b], bounds[b + 1] - bounds[b]))
                                rows[version] += batch.num_rows
                    finally:
                        for w in writers:
                            w.close()
                    for tmp, name in zip(tmps, names):
                        os.replace(tmp, Path(out_dir) / name)  # a retried task replaces its own files
                except BaseException:
                    for tmp in tmps:
                        tmp.unlink(missing_ok=True)
                    raise
                cpu = time.process_time() - cpu0
                cpu0 += cpu
                yield pa.RecordBatch.from_pydict(
                    {"task": [task] * len(rows), "model_version": list(rows), "rows": list(rows.values()),
                     "file": [f"part-{task:05d}"] * len(rows), "cpu_seconds": [cpu / len(rows)] * len(rows)},
                    schema=RESULT_SCHEMA,
                )

    return encode


def eager_max_abs_diff(cfg: MerConfig, written: Path, snapshot: str, module: str, models: dict[str, tuple[str, str, str]],
                       n: int, seed: int) -> dict[str, float]:
    """Largest |written - eager| per model over a seeded sample of ``n`` items of the snapshot.

    ``written`` is the folder of item_embeddings files the Spark job wrote; eager is a freshly loaded
    item tower's ``encode`` on the same item_features rows. Rows with a non-finite value on either
    side are left to the quality gate (``emb_finite``); parity is about the finite values agreeing.
    """
    import pyarrow.dataset as pads

    feats = partition_dataset(cfg.raw_table("item_features"), snapshot)
    total = feats.count_rows()
    pick = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
    sample = feats.take(pa.array(pick))  # only the sampled rows are read
    ids = sample.column("item_id").to_numpy().astype(np.int64)
    table = pads.dataset(written, format="parquet")
    diffs = {}
    for name, (model_dir, version, _) in models.items():
        enc = importlib.import_module(module).load_item_encoder(model_dir)
        eager = np.asarray(enc.encode(sample.to_pandas()), dtype=np.float32)
        got = table.to_table(filter=(pc.field("model_version") == version) & pc.field("item_id").isin(pa.array(ids)),
                             columns=["item_id", "embedding"])
        pos = {int(i): r for r, i in enumerate(got.column("item_id").to_numpy())}
        missing = [int(i) for i in ids if int(i) not in pos]
        if missing:
            raise ContractError(f"table item_embeddings: item_id={missing[0]} missing for model_version={version!r}")
        if not len(ids):
            diffs[name] = 0.0
            continue
        spark_emb = embeddings_to_numpy(got.take(pa.array([pos[int(i)] for i in ids])))
        if spark_emb.shape != eager.shape:
            raise ContractError(f"table item_embeddings: model_version={version!r} has dim {spark_emb.shape[1]}, "
                                f"the eager tower gives {eager.shape[1]}")
        finite = np.isfinite(spark_emb).all(axis=1) & np.isfinite(eager).all(axis=1)
        diffs[name] = float(np.max(np.abs(spark_emb[finite] - eager[finite]), initial=0.0))
    return diffs


def check_parity(diffs: dict[str, float], versions: dict[str, str], sample: int, tolerance: float) -> None:
    """Fail the stage when the written embeddings and the eager tower disagree beyond ``tolerance``."""
    bad = [f"model {m} (model_version {versions[m]}): max |spark - eager| = {d:.3g}" for m, d in diffs.items() if not d <= tolerance]
    if bad:
        raise GateError(f"item inference parity failed over {sample} sampled items, index.parity_tolerance={tolerance}: "
                        + "; ".join(bad))


def quality_gate(cfg: MerConfig, ds: str) -> object:
    """The Great Expectations gate for item_embeddings lives with the quality engineer; call it if present."""
    try:
        gates = importlib.import_module("mer.stages.quality.gates")
    except ImportError:
        return "skipped (mer.stages.quality.gates not available)"
    return gates.run(cfg, ds, "embeddings")


def run(cfg: MerConfig, ds: str) -> dict:
    import pyarrow.dataset as pads

    from mer.stages.spark_jobs.session import get_spark

    validate_ds(ds)
    t0 = time.perf_counter()
    module = cfg.index.serving_module
    srv = towers.serving(cfg)
    served = towers.served_models(cfg, ds)
    loaded = {m: srv.load_item_encoder(str(p)) for m, p in served.items()}
    models = {m: (str(served[m]), enc.model_version, model_digest(served[m])) for m, enc in loaded.items()}
    versions = {m: v for m, (_, v, _) in models.items()}
    shards = cfg.index.shards
    columns = encoder_columns(loaded.values())

    snapshot = latest_partition(cfg.raw_table("item_features"), ds)
    spark = get_spark(cfg, app_name="mer-item-inference")
    parallelism = spark.sparkContext.defaultParallelism
    threads = max(1, int(spark.conf.get("spark.task.cpus", "1")))
    batch_rows = max(1, int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")))
    slices, n_items = plan_slices(partition_dir(cfg.raw_table("item_features"), snapshot), snapshot, columns, parallelism)
    if n_items == 0:
        raise ContractError(f"table item_features: snapshot ds={snapshot} is empty")

    final = partition_dir(cfg.table("item_embeddings"), ds)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"  # hidden from Spark / pyarrow readers
    staging.mkdir()
    t_job = time.perf_counter()
    try:
        fn = encode_slices(module, models, slices, columns, str(staging), batch_rows, shards, threads)
        done = spark.range(0, len(slices), 1, len(slices)).mapInArrow(fn, RESULT_DDL).collect()
        missing = sorted({s.task for s in slices} - {r["task"] for r in done})
        if missing:
            raise ContractError(f"table item_embeddings: slice {missing[0]} of the snapshot produced no output")
        write_s = time.perf_counter() - t_job
        # Before the swap: rows that disagree with the eager tower never replace the previous partition.
        diffs = eager_max_abs_diff(cfg, staging, snapshot, module, models, cfg.index.parity_sample, cfg.train.seed)
        check_parity(diffs, versions, min(cfg.index.parity_sample, n_items), cfg.index.parity_tolerance)
        swap_in(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    # Counted from what was written, not from what the tasks said they wrote.
    written = pads.dataset(final, format="parquet").to_table(columns=["model_version"]).column("model_version")
    rows = {str(v): int(c) for v, c in zip(*(x.to_pylist() for x in pc.value_counts(written).flatten()))} if len(written) else {}
    summary = {
        "ds": ds,
        "snapshot_ds": snapshot,
        "items": int(n_items),
        "versions": versions,
        "rows": {m: int(rows.get(v, 0)) for m, v in versions.items()},
        "partitions": len(slices),
        "shards": shards,  # item_embeddings is bucketed for this index.shards
        "eager_sample": min(cfg.index.parity_sample, n_items),
        "max_abs_diff_vs_eager": diffs,
        "parity_tolerance": cfg.index.parity_tolerance,
        "digests": {m: d for m, (_, _, d) in models.items()},
        "seconds": round(time.perf_counter() - t0, 2),
        "encode_seconds": round(write_s, 2),
        "items_per_s": round(n_items * len(models) / max(write_s, 1e-9), 1),
        # CPU of the Python workers (read + features + towers + write), independent of other load on the machine
        "worker_cpu_seconds": round(sum(r["cpu_seconds"] for r in done), 2),
    }
    for m, v in versions.items():
        if summary["rows"][m] != n_items:
            raise ContractError(f"table item_embeddings: {summary['rows'][m]} rows for model_version={v!r}, expected {n_items}")
    write_json_atomic(cfg.run_dir(ds) / "item_inference.json", summary)
    summary["quality"] = quality_gate(cfg, ds)
    return summary
