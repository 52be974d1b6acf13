"""Bulk item-tower inference on Spark (``mer.stages.spark_jobs.item_inference.run``) vs a raw torch loop.

Both encode the same items with the same towers in the same process and run:

- Spark: the whole stage as the DAG runs it (slices of the item_features snapshot read by the
  Python workers, every tower cached per worker, Parquet written, partition swapped in); its
  items/s is ``items x models / seconds`` of that distributed job (driver-side checks excluded);
- anchor: the towers' forward in a plain loop over pre-built float32/int64 tensors of the same
  items (no I/O, no Arrow, no feature extraction), in this process, measured two ways and the
  faster one taken: torch intra-op threads = cores, and one torch thread per core with the
  batches spread over that many Python threads (the layout Spark's workers use; on a shared,
  oversubscribed machine OpenMP's spinning threads can make the first several times slower).

Runs alternate (Spark, anchor, Spark, anchor, ...) so both see the same machine load; figures are
medians over ``--repeat``. On a shared machine the wall-clock ratio mostly measures how the
scheduler shares the cores between this process and the Spark workers, so the bench also reports
items per CPU second: Spark = Python workers' CPU (each task reports its own) + the Spark JVM's CPU
from the start of ``run`` to its first check after the job; anchor = this process's CPU over the loop. The first Spark run also starts the Python workers (torch import, model
load) and is reported on its own as ``*_cold``. Target: Spark >= 0.8x the anchor.

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
    from mer.stages.model.zoo import TwoTower, tower_config

    def no_export(*_a, **_k):  # the user-tower export is not what this bench measures (and costs minutes)
        raise RuntimeError("skipped by bench_inference")

    train.export_user_tower = no_export
    out = {}
    for i, name in enumerate(("dcm", "cr")):
        torch.manual_seed(1000 + i)
        tc = tower_config(cfg, name, None, pre_dim=IN_DIM, topic_vocab=list(range(N_TOPICS)))
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


def spark_io_items_per_s(cfg, spark, module: str, models: dict) -> float:
    """The DataFrame path, for comparison: JVM Parquet read -> mapInArrow (same encoders) -> JVM Parquet write."""
    from mer.base.contract import ITEM_FEATURES
    from mer.base.io import partition_dir
    from pyspark.sql.pandas.types import from_arrow_schema
    from mer.stages.spark_jobs.item_inference import encode_catalog

    path = str(partition_dir(cfg.raw_table("item_features"), DS))
    items = spark.read.schema(from_arrow_schema(ITEM_FEATURES)).parquet(path)
    n = items.count()
    parts = max(spark.sparkContext.defaultParallelism, -(-n // 50_000))
    t = time.perf_counter()
    encode_catalog(items.repartition(parts), module, models).write.mode("overwrite").parquet(str(cfg.root / "spark_io_out"))
    return n * len(models) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--tower", choices=("real", "mlp"), default="real")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--spark-io", action="store_true")
    args = ap.parse_args()

    from mer.base.config import MerConfig
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
        import mer.stages.spark_jobs.item_inference as inference

        jvm_at_checks = []
        eager = inference.eager_max_abs_diff

        def eager_after_job(*a, **k):  # the first driver-side check after the job: the JVM's CPU so far
            jvm_at_checks.append(jvm_cpu_seconds(spark))
            return eager(*a, **k)

        inference.eager_max_abs_diff = eager_after_job
        for _ in range(args.repeat):
            t, jvm = time.perf_counter(), jvm_cpu_seconds(spark)
            summary = run(cfg, DS)
            stage_s.append(time.perf_counter() - t)
            spark_rates.append(summary["items_per_s"])
            spark_cpu = summary["worker_cpu_seconds"] + jvm_at_checks[-1] - jvm
            spark_cpu_rates.append(args.items * len(summary["versions"]) / spark_cpu)
            assert summary["rows"] == {m: args.items for m in summary["versions"]}, summary["rows"]

            cores = os.cpu_count() or 1
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
            models = {m: (str(p), srv.load_item_encoder(str(p)).model_version) for m, p in towers.served_models(cfg, DS).items()}
            spark_io = spark_io_items_per_s(cfg, spark, module, models)

    spark_med, raw_med = statistics.median(spark_rates), statistics.median(raw_rates)
    out = {
        "bench": "inference",
        "tower": tower,
        "items": args.items,
        "models": n_models,
        "repeat": args.repeat,
        "spark_items_per_s": round(spark_med, 1),
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
