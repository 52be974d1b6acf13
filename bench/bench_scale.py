"""Scale benchmark (issue 6): one generated run with >= 1M items and >= 10M events through every stage.

    nice .venv/bin/python bench/bench_scale.py [--root /tmp/mer_scale] [--dcm-steps 1500] [--keep]

Stages are called in-process, the same functions the DAG tasks call (through ``run_stage``, so each
writes its ``stages/<task>.json``): generate (``--large``), validate_raw, gate_raw, training_data,
gate_training, train_dcm (steps capped by ``--dcm-steps``, one epoch), train_single (capped by
``--single-steps``), evaluate (sampled: ``eval.max_eval_records`` records over the eval corpus),
item_inference (every item of the snapshot), build_index (all shards, ``index.build_workers``
processes), recall_gate, publish (boto3 to moto's S3 server on 127.0.0.1).

For every stage it prints wall seconds, the peak RSS of the whole process tree (this process, the
Spark JVM, its Python workers, the shard-build processes; sampled every 0.25 s with psutil), the
rows it processed and rows/s. The last line of the output is one JSON object with the headline
figures (the project's bench convention).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DS = "2026-01-15"


class PeakRss:
    """Peak resident memory of this process and all its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.25):
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> int:
        total = 0
        procs = [self._me]
        try:
            procs += self._me.children(recursive=True)
        except self._psutil.Error:
            pass
        for p in procs:
            try:
                total += p.memory_info().rss
            except self._psutil.Error:
                continue
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.sample())

    def reset(self) -> None:
        self.peak = self.sample()

    def start(self) -> "PeakRss":
        self.reset()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


def configure(root: Path, args) -> None:
    """Environment-driven config, so every stage (and Spark's Python workers) sees the same one."""
    env = {
        "MER_ROOT": str(root),
        "MER_GENERATE__END_DS": DS,
        "MER_GENERATE__LARGE_ITEMS": str(args.items),
        "MER_GENERATE__LARGE_USERS": str(args.users),
        "MER_SPARK__SHUFFLE_PARTITIONS": str(args.shuffle_partitions),
        "MER_TRAIN__EPOCHS": "1",
        "MER_TRAIN__NUM_THREADS": "2",
        "MER_TRAIN__EARLY_STOP_RECORDS": "1000",
        "MER_EVAL__MAX_EVAL_RECORDS": str(args.eval_records),
        "MER_INDEX__SHARDS": str(args.shards),
        "MER_PUBLISH__BUCKET": "mer-scale",
        "MER_SPARK__DRIVER_MEMORY": args.driver_memory,
    }
    os.environ.update(env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/mer_scale")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=60_000)
    p.add_argument("--dcm-steps", type=int, default=1500, help="training steps for DCM (batch 512, one epoch)")
    p.add_argument("--single-steps", type=int, default=400, help="training steps for the single-embedding baseline")
    p.add_argument("--eval-records", type=int, default=5000)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--shuffle-partitions", type=int, default=16)
    p.add_argument("--driver-memory", default="8g")
    p.add_argument("--keep", action="store_true", help="keep the data root afterwards")
    args = p.parse_args(argv)

    root = Path(args.root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    configure(root, args)

    from mer.base.config import load_config
    from mer.app.local_s3 import local_s3
    from mer.app.pipeline import run_stage, stage_function

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    cfg = load_config()
    mem = PeakRss().start()
    rows: list[dict] = []
    results: dict[str, dict] = {}
    t_all = time.perf_counter()

    def stage(task: str, fn, *fargs, count=None, unit="rows", cfg_=None):
        mem.reset()
        t0 = time.perf_counter()
        out = run_stage(cfg_ or cfg, DS, task, fn, *fargs)
        secs = time.perf_counter() - t0
        n = count(out) if count else None
        row = {"stage": task, "seconds": round(secs, 1), "peak_rss_gb": round(mem.peak / 2**30, 2),
               "rows": n, "unit": unit, "rows_per_s": round(n / secs) if n else None}
        rows.append(row)
        results[task] = out if isinstance(out, dict) else {"result": out}
        print(f"[{time.perf_counter() - t_all:7.1f}s] {task:<15} {row['seconds']:8.1f} s  peak {row['peak_rss_gb']:5.2f} GiB"
              f"  {n if n is not None else '':>12} {unit:<10} {row['rows_per_s'] or '':>10}/s", flush=True)
        return out

    from mer.stages.datagen.synthetic import generate

    gen = stage("generate", lambda c, _ds: generate(c, large=True), count=lambda o: o["rows"]["engagement_log"],
                unit="events")
    events = gen["rows"]["engagement_log"]
    raw_rows = sum(gen["rows"].values())
    stage("validate_raw", stage_function("mer.stages.spark_jobs.validate_raw:run"), count=lambda o: raw_rows, unit="raw rows")
    stage("gate_raw", stage_function("mer.stages.quality.gates:run"), "raw", count=lambda o: raw_rows, unit="raw rows")
    stage("training_data", stage_function("mer.stages.spark_jobs.training_data:run"), count=lambda o: events, unit="events")

    import pyarrow.dataset as pads

    def table_rows(name: str) -> int:
        return pads.dataset(str(cfg.table(name) / f"ds={DS}"), format="parquet").count_rows()

    n_examples = table_rows("training_examples")
    n_triples = table_rows("cr_triples")
    stage("gate_training", stage_function("mer.stages.quality.gates:run"), "training", count=lambda o: n_examples,
          unit="examples")

    train = stage_function("mer.stages.model.train:run")

    def capped(steps: int):
        c = load_config()
        c.train = c.train.model_copy(update={"max_steps_per_epoch": steps})
        return c

    stage("train_dcm", train, "dcm", cfg_=capped(args.dcm_steps), count=lambda o: o["train_examples_seen"],
          unit="examples")
    stage("train_single", train, "single", cfg_=capped(args.single_steps), count=lambda o: o["train_examples_seen"],
          unit="examples")
    stage("evaluate", stage_function("mer.stages.model.evaluate:run"), count=lambda o: o["records"], unit="eval recs")
    inf = stage("item_inference", stage_function("mer.stages.spark_jobs.item_inference:run"),
                count=lambda o: sum(o["rows"].values()), unit="item embs")
    stage("build_index", stage_function("mer.stages.index.build:run"),
          count=lambda o: sum(m["n_items"] for m in o.values()), unit="vectors")
    stage("recall_gate", stage_function("mer.stages.index.recall:run"), count=None)
    with local_s3(cfg.publish.bucket, mirror=None):
        stage("publish", stage_function("mer.stages.index.publish:run"), "scale__1",
              count=lambda o: o.get("bytes"), unit="bytes")
    mem.stop()
    total = time.perf_counter() - t_all

    # ------------------------------------------------------------------ report
    print("\n| stage | wall s | peak RSS (tree) GiB | rows | rows/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        n = "" if r["rows"] is None else f"{r['rows']:,} {r['unit']}"
        rate = "" if r["rows_per_s"] is None else f"{r['rows_per_s']:,}"
        print(f"| {r['stage']} | {r['seconds']:.1f} | {r['peak_rss_gb']:.2f} | {n} | {rate} |")
    print(f"| **total** | {total:.1f} | {max(r['peak_rss_gb'] for r in rows):.2f} | | |")

    dcm = results["train_dcm"]
    ev = results["evaluate"].get("metrics", {})
    idx = results["build_index"]
    rec = results["recall_gate"]
    from mer.stages.index import layout

    shard_meta = {m: {k: {"key": v.get("key"), "n": v.get("n"), "params": v.get("params"), "build_s": v.get("build_seconds"),
                          "bytes": (layout.model_index_dir(cfg, DS, m) / v["index_file"]).stat().st_size}
                      for k, v in s["built"].items()} for m, s in idx.items()}
    print("\nshards:", json.dumps(shard_meta))
    print("recall:", json.dumps({m: r["merged"] for m, r in rec["models"].items()}))
    print("eval:", json.dumps({m: {k: v for k, v in d.items() if k.startswith("hr@")} for m, d in ev.items()}))
    headline = {
        "bench": "scale",
        "items": gen["items"],
        "users": gen["users"],
        "events": events,
        "raw_rows": raw_rows,
        "training_examples": n_examples,
        "cr_triples": n_triples,
        "seconds": {r["stage"]: r["seconds"] for r in rows},
        "rows_per_s": {r["stage"]: r["rows_per_s"] for r in rows},
        "peak_rss_gb": {r["stage"]: r["peak_rss_gb"] for r in rows},
        "total_seconds": round(total, 1),
        "dcm_examples_per_s": dcm.get("curve", [{}])[0].get("examples_per_s") if "curve" in dcm else
        round(dcm["train_examples_seen"] / max(dcm["train_seconds"], 1e-9), 1),
        "dcm_best_eval_hr@100": dcm.get("best_eval_hr@100"),
        "inference_items_per_s": inf.get("items_per_s"),
        "recall_merged": {m: r["merged"] for m, r in rec["models"].items()},
        "publish_bytes": results["publish"].get("bytes"),
        "shards": shard_meta,
    }
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
