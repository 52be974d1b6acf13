"""Bulk item-tower inference on Spark (``mer.stages.spark_jobs.item_inference.run``) vs the same work in one process.

All encode the same items with the same towers in the same process and run:

- Spark: the whole stage as the DAG runs it (slices of the item_features snapshot read by the
  Python workers, every tower cached per worker, Parquet written, partition swapped in); its
  items/s is ``items x models / seconds`` of that distributed job (driver-side checks excluded);
- fair anchor (the target's reference): the same slices read -> encoded -> written by a plain
  single-process pyarrow loop, no Spark: the served towers from the serving module's
  ``load_item_encoder``, the stage's output schema, Parquet options and bucketed file names (checked
  file by file against the stage's output on the first repeat); the faster of torch intra-op
  threads = cores and 1 torch thread x cores Python threads over the slices;
- raw forward (information only: no stage that reads and writes can approach it): the towers'
  forward in a plain loop over pre-built float32/int64 tensors of the same items (no I/O, no
  Arrow, no feature extraction), in this process, measured two ways and the
  faster one taken: torch intra-op threads = cores, and one torch thread per core with the
  batches spread over that many Python threads (the layout Spark's workers use; on a shared,
  oversubscribed machine OpenMP's spinning threads can make the first several times slower).

Runs alternate (Spark, anchor, Spark, anchor, ...) so both see the same machine load; figures are
medians over ``--repeat``. On a shared machine the wall-clock ratio mostly measures how the
scheduler shares the cores between this process and the Spark workers, so the bench also reports
items per CPU second: Spark = Python workers' CPU (each task reports its own) + the Spark JVM's CPU
from the start of ``run`` to its first check after the job; anchors = this process's CPU over the
loop. The first Spark run also starts the Python workers (torch import, model load) and is
reported on its own as ``*_cold``. Target: Spark >= 0.8x the fair anchor (``ratio_vs_fair_anchor``).

Tower (``--tower``): ``real`` (default) = mer.stages.model.serving's item tower (mer/stages/model/item_tower.py, the
``cpu`` preset of the configured TowerConfig) with seeded random weights, saved for dcm and cr
the way mer.stages.model.train.save_artifacts saves a trained model; ``mlp`` = the generated seeded MLP
32 -> 512 -> 64 of tests/item_tower_fixture.py (the tower of the first measurement).
``--spark-io`` also times the DataFrame path (spark.read.parquet -> mapInArrow -> write.parquet)
with the same encoders once, for comparison.

    .venv/bin/python bench/bench_inference.py [--items 1000000] [--tower real|mlp] [--repeat 3]

Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DS = "2026-01-15"
IN_DIM = 32
N_TOPICS = 16  # tests/item_tower_fixture.write_item_features draws topic ids 0..15


def make_real_models(cfg) -> dict:
    """dcm + cr two-towers with seeded random weights, written by mer.stages.model.train.save_artifacts."""
    import torch

    import mer.stages.model.train as train
    from mer.stages.model.zoo import TwoTower, check_variant, tower_config

    def no_export(*_a, **_k):  # the user-tower export is not what this bench measures (and costs minutes)
        raise RuntimeError("skipped by bench_inference")

    train.export_user_tower = no_export
    out = {}
    for i, name in enumerate(("dcm", "cr")):
        torch.manual_seed(1000 + i)
        tc = tower_config(cfg, name, check_variant(name, None), pre_dim=IN_DIM, topic_vocab=list(range(N_TOPICS)))
        out[name] = train.save_artifacts(cfg, DS, name, TwoTower(tc), tc, [], {"bench": "random weights"})
    return out


def anchor_forwards(cfg, tower: str, items: int, batch: int):
    """(encoder, step) per served model: step(encoder, start) = the tower's forward over one batch of pre-built tensors."""
    import torch

    from mer.base.io import read_partition

    feats = read_partition(cfg.raw_table("item_features"), DS)
    if tower == "mlp":
        from tests import item_tower_fixture as fx

        x = np.asarray(feats.column("pretrained_embedding").combine_chunks().flatten(), dtype=np.float32).reshape(items, IN_DIM)
        xt = torch.from_numpy(x)
        encs = [fx.load_item_encoder(fx.model_dir(cfg, DS, m)) for m in fx.SERVED_MODELS]

        def mlp_step(enc, s):
            torch.nn.functional.normalize(enc.linear(xt[s:s + batch]), dim=1).numpy()

        return [(e, mlp_step) for e in encs]

    from mer.stages.model.data import ITEM_INPUTS, item_arrays
    from mer.stages.model.serving import SERVED_MODELS, load_item_encoder, model_dir

    encs = [load_item_encoder(model_dir(cfg, DS, m)) for m in SERVED_MODELS]
    c = encs[0].c
    a = item_arrays(feats, c.pre_dim, encs[0].vocab, c.cat_buckets, c.creator_buckets)
    t = [torch.from_numpy(a[k]) for k in ITEM_INPUTS]

    def step(enc, s):
        enc.net.item(*(x[s:s + batch] for x in t)).numpy()

    return [(e, step) for e in encs]


def run_anchor(forwards, items: int, batch: int, threads: int, workers: int) -> tuple[float, float]:
    """(items x models per wall second, per CPU second) of every (model, batch) forward: torch on `threads`
    threads, over `workers` Python threads."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    jobs = [(enc, step, s) for enc, step in forwards for s in range(0, items, batch)]

    def work(part):
        with torch.inference_mode():
            for enc, step, s in part:
                step(enc, s)

    torch.set_num_threads(threads)
    t, c = time.perf_counter(), time.process_time()
    if workers == 1:
        work(jobs)
    else:
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(work, [jobs[i::workers] for i in range(workers)]))
    n = items * len(forwards)
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def jvm_cpu_seconds(spark) -> float:
    """user + system CPU of the Spark JVM so far (local mode: driver and executor in one process)."""
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dataframe_body(module: str, models: dict):
    """mapInArrow body of the DataFrame path: each Arrow batch of item_features through every served tower.
    ``models``: name -> (folder, model_version, content digest), as ``run`` ships them."""

    def encode(batches):
        from mer.stages.spark_jobs.item_inference import (
            ENCODERS,
            embeddings_batch,
            encode_batch,
        )

        encoders = [(ENCODERS.get(module, d, digest), v) for d, v, digest in models.values()]
        for batch in batches:
            if batch.num_rows:
                for enc, version in encoders:
                    yield embeddings_batch(version, batch.column("item_id"), encode_batch(enc, batch))

    return encode


def spark_io_items_per_s(cfg, spark, module: str, models: dict) -> float:
    """The DataFrame path, for comparison: JVM Parquet read -> mapInArrow (same encoders) -> JVM Parquet write."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from mer.base.contract import ITEM_FEATURES
    from mer.base.io import partition_dir

    path = str(partition_dir(cfg.raw_table("item_features"), DS))
    items = spark.read.schema(from_arrow_schema(ITEM_FEATURES)).parquet(path)
    n = items.count()
    parts = max(spark.sparkContext.defaultParallelism, -(-n // 50_000))
    t = time.perf_counter()
    (items.repartition(parts).mapInArrow(dataframe_body(module, models), "model_version string, item_id bigint, embedding array<float>")
     .write.mode("overwrite").parquet(str(cfg.root / "spark_io_out")))
    return n * len(models) / (time.perf_counter() - t)


def fair_anchor(cfg, parallelism: int, batch_rows: int, out_dir: Path, threads: int, workers: int) -> tuple[float, float]:
    """(items x models per wall second, per CPU second) of the stage's work in this one process, no Spark:
    the same slices of the snapshot read with pyarrow, the same towers (the serving module's
    ``load_item_encoder``, loaded before the clock starts), written with the stage's schema, Parquet
    options and bucketed file names into ``out_dir``. No staging rename, no parity check, no task
    overhead: what a plain pyarrow loop costs. torch on ``threads`` threads, slices over ``workers``
    Python threads (pyarrow and torch release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from mer.base.contract import ITEM_EMBEDDINGS
    from mer.base.io import partition_dir
    from mer.stages.index import towers
    from mer.stages.index.shards import bucket_file, split_by_shard
    from mer.stages.spark_jobs import item_inference as inf

    srv = towers.serving(cfg)
    encoders = [srv.load_item_encoder(str(p)) for p in towers.served_models(cfg, DS).values()]
    columns = inf.encoder_columns(encoders)
    slices, total = inf.plan_slices(partition_dir(cfg.raw_table("item_features"), DS), DS, columns, parallelism)
    shards = cfg.index.shards
    out_dir.mkdir(parents=True, exist_ok=True)

    def one_slice(s):
        writers = [pq.ParquetWriter(out_dir / bucket_file(b, shards, s.task), ITEM_EMBEDDINGS, **inf.PARQUET_OPTIONS)
                   for b in range(shards)]
        for batch in inf.read_slice(s, columns, batch_rows):
            order, bounds = split_by_shard(batch.column("item_id").to_numpy(), shards)
            batch = batch.take(pa.array(order))
            for enc in encoders:
                out = inf.embeddings_batch(enc.model_version, batch.column("item_id"), inf.encode_batch(enc, batch))
                for b, w in enumerate(writers):
                    if bounds[b + 1] > bounds[b]:
                        w.write_batch(out.slice(bounds[b], bounds[b + 1] - bounds[b]))
        for w in writers:
            w.close()

    torch.set_num_threads(threads)
    t, c = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        if workers == 1:
            for s in slices:
                one_slice(s)
        else:
            with ThreadPoolExecutor(workers) as ex:
                list(ex.map(one_slice, slices))
    n = total * len(encoders)
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def same_files(stage_dir: Path, anchor_dir: Path) -> None:
    """The anchor writes what the stage writes: the same file names, and per file the same schema,
    compression and rows (order within a file may differ between layouts, so rows are compared sorted)."""
    import pyarrow.parquet as pq

    names = sorted(p.name for p in stage_dir.glob("*.parquet"))
    if names != sorted(p.name for p in anchor_dir.glob("*.parquet")):
        raise SystemExit(f"fair anchor wrote other files than the stage: {names[:3]}...")
    for name in names:
        a, b = pq.ParquetFile(stage_dir / name), pq.ParquetFile(anchor_dir / name)
        if not a.schema_arrow.equals(b.schema_arrow) or (a.metadata.num_row_groups and b.metadata.num_row_groups and
                                                         a.metadata.row_group(0).column(2).compression
                                                         != b.metadata.row_group(0).column(2).compression):
            raise SystemExit(f"fair anchor file {name}: schema or compression differs from the stage's")
        keys = [("model_version", "ascending"), ("item_id", "ascending")]
        if not a.read().sort_by(keys).equals(b.read().sort_by(keys)):
            raise SystemExit(f"fair anchor file {name}: rows differ from the stage's")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--tower", choices=("real", "mlp"), default="real")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--spark-io", action="store_true")
    args = ap.parse_args()

    from mer.base.config import MerConfig
    from mer.base.io import partition_dir
    from tests import item_tower_fixture as fx

    serving_module = "tests.item_tower_fixture" if args.tower == "mlp" else "mer.stages.model.serving"
    if args.tower == "mlp":
        tower = "generated seeded MLP 32->512->64 (tests/item_tower_fixture.py)"
    else:
        tower = "mer.stages.model.serving item tower (mer/stages/model/item_tower.py, cpu preset), random weights"

    with tempfile.TemporaryDirectory() as tmp:
        cfg = MerConfig(root=Path(tmp) / "var")
        cfg.index.serving_module = serving_module
        if args.tower == "mlp":
            fx.make_models(cfg, DS, in_dim=IN_DIM, dim=64, hidden=512)
        else:
            make_real_models(cfg)
        fx.write_item_features(cfg, DS, n=args.items, in_dim=IN_DIM, null_every=0)

        from mer.stages.spark_jobs.item_inference import run
        from mer.stages.spark_jobs.session import get_spark

        spark = get_spark(cfg)
        spark.range(1).count()  # JVM start is not inference time
        forwards = anchor_forwards(cfg, args.tower, args.items, args.batch)
        n_models = len(forwards)
        spark_rates, stage_s, raw_rates, anchors, summary = [], [], [], [], {}
        spark_cpu_rates, raw_cpu_rates = [], []
        fair_rates, fair_cpu_rates, fair_runs, spark_cpu_split = [], [], [], []
        parallelism = spark.sparkContext.defaultParallelism
        batch_rows = max(1, int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")))
        import mer.stages.spark_jobs.item_inference as inference

        jvm_at_checks = []
        eager = inference.eager_max_abs_diff

        def eager_after_job(*a, **k):  # the first driver-side check after the job: the JVM's CPU so far
            jvm_at_checks.append(jvm_cpu_seconds(spark))
            return eager(*a, **k)

        inference.eager_max_abs_diff = eager_after_job
        for rep in range(args.repeat):
            t, jvm = time.perf_counter(), jvm_cpu_seconds(spark)
            summary = run(cfg, DS)
            stage_s.append(time.perf_counter() - t)
            spark_rates.append(summary["items_per_s"])
            spark_cpu = summary["worker_cpu_seconds"] + jvm_at_checks[-1] - jvm
            spark_cpu_split.append({"python_workers": summary["worker_cpu_seconds"], "jvm": round(jvm_at_checks[-1] - jvm, 2)})
            spark_cpu_rates.append(args.items * len(summary["versions"]) / spark_cpu)
            assert summary["rows"] == {m: args.items for m in summary["versions"]}, summary["rows"]

            cores = os.cpu_count() or 1
            fair = {}
            for layout, (threads, workers) in {"intra_op": (cores, 1), "per_core": (1, cores)}.items():
                fair[layout] = fair_anchor(cfg, parallelism, batch_rows, Path(tmp) / f"fair_{layout}", threads, workers)
                if rep == 0:
                    same_files(partition_dir(cfg.table("item_embeddings"), DS), Path(tmp) / f"fair_{layout}")
            fair_runs.append({k: round(v[0], 1) for k, v in fair.items()})
            fair_rates.append(max(v[0] for v in fair.values()))
            fair_cpu_rates.append(max(v[1] for v in fair.values()))

            intra, intra_cpu = run_anchor(forwards, args.items, args.batch, cores, 1)
            inter, inter_cpu = run_anchor(forwards, args.items, args.batch, 1, cores)
            anchors.append({"intra_op": round(intra, 1), "per_core": round(inter, 1)})
            raw_rates.append(max(intra, inter))
            raw_cpu_rates.append(max(intra_cpu, inter_cpu))
        spark_io = None
        if args.spark_io:
            from mer.stages.index import towers

            module = cfg.index.serving_module
            srv = towers.serving(cfg)
            models = {m: (str(p), srv.load_item_encoder(str(p)).model_version, inference.model_digest(p))
                      for m, p in towers.served_models(cfg, DS).items()}
            spark_io = spark_io_items_per_s(cfg, spark, module, models)

    spark_med, raw_med, fair_med = (statistics.median(x) for x in (spark_rates, raw_rates, fair_rates))
    out = {
        "bench": "inference",
        "tower": tower,
        "items": args.items,
        "models": n_models,
        "repeat": args.repeat,
        "spark_items_per_s": round(spark_med, 1),
        "fair_anchor_items_per_s": round(fair_med, 1),
        "ratio_vs_fair_anchor": round(spark_med / fair_med, 3),
        "fair_anchor_runs_by_layout": fair_runs,
        "spark_items_per_cpu_s_vs_fair_anchor": round(statistics.median(spark_cpu_rates) / statistics.median(fair_cpu_rates), 3),
        "fair_anchor_items_per_cpu_s": round(statistics.median(fair_cpu_rates), 1),
        "spark_cpu_seconds_runs": spark_cpu_split,  # where the stage's CPU went, per run
        "raw_torch_items_per_s": round(raw_med, 1),
        "ratio_vs_raw_torch": round(spark_med / raw_med, 3),
        "spark_items_per_s_cold": round(spark_rates[0], 1),
        "ratio_cold": round(spark_rates[0] / raw_rates[0], 3),
        "spark_items_per_s_runs": [round(r, 1) for r in spark_rates],
        "raw_torch_items_per_s_runs": [round(r, 1) for r in raw_rates],
        "raw_torch_runs_by_layout": anchors,
        "spark_items_per_cpu_s": round(statistics.median(spark_cpu_rates), 1),
        "raw_torch_items_per_cpu_s": round(statistics.median(raw_cpu_rates), 1),
        "cpu_ratio_vs_raw_torch": round(statistics.median(spark_cpu_rates) / statistics.median(raw_cpu_rates), 3),
        "spark_stage_seconds_incl_checks": round(statistics.median(stage_s), 2),
        "spark_io_path_items_per_s": None if spark_io is None else round(spark_io, 1),
        "spark_io_path_ratio": None if spark_io is None else round(spark_io / raw_med, 3),
        "tasks": summary.get("partitions"),
        "max_abs_diff_vs_eager": summary.get("max_abs_diff_vs_eager"),
        "cores": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
        "target_ratio": 0.8,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
