"""Scale benchmark (issue 6): one generated run with >= 1M items and >= 10M events through every stage.

    nice .venv/bin/python bench/bench_scale.py [--root /tmp/mer_scale] [--dcm-steps 1500] [--keep]
    nice .venv/bin/python bench/bench_scale.py --shard-rss [--rss-items 400000] [--rss-shards 2 4]

``--shard-rss`` measures only the index build's memory per shard task (issue 11, shard-local I/O):
item_embeddings of ``--rss-items`` generated vectors, bucketed as ``mer infer`` writes them, then every
``build-index --shard i`` task of 2 and of 4 shards in its own process; its peak RSS is the kernel's
(``ru_maxrss`` from ``os.wait4``), next to the floor of a process that only imports the same modules.
``--code-tree DIR`` runs the tasks with another checkout's ``mer`` (e.g. the code before the change).

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


SHARD_TASK = """
import importlib, os, sys
from mer.base.config import load_config
from mer.stages.index import build
if sys.argv[1] == "floor":  # the same imports as a task (the serving module brings torch), no data
    importlib.import_module(os.environ["MER_INDEX__SERVING_MODULE"])
else:
    build.run(load_config(), sys.argv[2], shard=int(sys.argv[1]))
"""


# A lean launcher: a forked child starts with its parent's RSS as its high-water mark (kept across exec),
# so the tasks are started from a bare Python process, not from the bench that holds the generated vectors.
LAUNCHER = """
import json, os, subprocess, sys, time
env = json.loads(sys.argv[1])
out = []
for cmd in json.loads(sys.argv[2]):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"shard task {cmd[-2:]} failed with exit code {os.waitstatus_to_exitcode(status)}")
    out.append([usage.ru_maxrss * 1024, time.perf_counter() - t0])  # Linux: KiB
print(json.dumps(out))
"""


def children_peak_rss(cmds: list[list[str]], env: dict, cwd: Path) -> list[tuple[int, float]]:
    """(peak RSS in bytes, wall seconds) of each command run in turn, from the kernel's accounting of that child.
    ``cwd``: not the repository, whose ``mer`` would shadow PYTHONPATH's for ``python -c``."""
    import subprocess

    res = subprocess.run([sys.executable, "-c", LAUNCHER, json.dumps(env), json.dumps(cmds)], capture_output=True,
                         text=True, cwd=cwd)
    if res.returncode:
        raise SystemExit(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"launcher failed ({res.returncode})")
    return [tuple(x) for x in json.loads(res.stdout.strip().splitlines()[-1])]


def shard_rss(args) -> dict:
    """Peak RSS of every shard task at each shard count, on one generated bucketed item_embeddings."""
    import numpy as np
    import pyarrow as pa

    from mer.base.config import load_config
    from mer.base.contract import ITEM_EMBEDDINGS
    from mer.base.io import write_json_atomic
    from mer.stages.index.shards import write_bucketed
    from tests import item_tower_fixture as fx

    root = Path(args.root)
    n, dim = args.rss_items, args.rss_dim
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(n, dim)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), dim).cast(pa.list_(pa.float32()))
    del vec
    out = {"items": n, "dim": dim, "index_key": args.rss_index_key, "code_tree": args.code_tree or str(REPO), "shards": {}}
    for shards in args.rss_shards:
        base = root / f"shards{shards}"
        env = {**os.environ, "MER_ROOT": str(base), "MER_INDEX__SHARDS": str(shards), "MER_INDEX__BUILD_WORKERS": "1",
               "MER_INDEX__INDEX_KEY": args.rss_index_key, "MER_INDEX__SERVING_MODULE": "tests.item_tower_fixture",
               "MER_INDEX__RECALL_QUERIES": "200", "PYTHONPATH": os.pathsep.join([args.code_tree or str(REPO), str(REPO)])}
        if args.code_tree:  # a tree from before the config held it reads the serving module from here
            env["MER_SERVING_MODULE"] = env["MER_INDEX__SERVING_MODULE"]
        cfg = load_config(root=base)
        fx.make_models(cfg, DS, dim=dim)  # the user tower the tuning queries come from
        version = fx.load_item_encoder(fx.model_dir(cfg, DS, "dcm")).model_version
        table = pa.table({"model_version": [version] * n, "item_id": np.arange(n, dtype=np.int64) * 7 + 1, "embedding": emb},
                         schema=ITEM_EMBEDDINGS)
        write_bucketed(cfg.table("item_embeddings"), DS, table, shards)
        del table
        write_json_atomic(cfg.run_dir(DS) / "item_inference.json", {"versions": {"dcm": version}})
        runs = children_peak_rss([[sys.executable, "-c", SHARD_TASK, t, DS] for t in ["floor", *map(str, range(shards))]], env, base)
        floor = runs[0][0]
        tasks = []
        for s, (peak, secs) in enumerate(runs[1:]):
            tasks.append({"shard": s, "peak_rss_mb": round(peak / 2**20, 1), "above_floor_mb": round((peak - floor) / 2**20, 1),
                          "seconds": round(secs, 1)})
            print(f"shards={shards} shard={s}: peak RSS {peak / 2**20:8.1f} MiB ({(peak - floor) / 2**20:7.1f} above the "
                  f"{floor / 2**20:.0f} MiB import floor), {secs:.1f} s", flush=True)
        out["shards"][shards] = {"floor_mb": round(floor / 2**20, 1), "tasks": tasks,
                                 "max_peak_rss_mb": max(t["peak_rss_mb"] for t in tasks),
                                 "max_above_floor_mb": max(t["above_floor_mb"] for t in tasks)}
    return out


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
    p.add_argument("--shard-rss", action="store_true", help="only the peak RSS per build-index shard task")
    p.add_argument("--rss-items", type=int, default=400_000)
    p.add_argument("--rss-dim", type=int, default=64)
    p.add_argument("--rss-shards", type=int, nargs="+", default=[2, 4])
    p.add_argument("--rss-index-key", default="IVF256,Flat", help="small nlist: k-means training stays seconds")
    p.add_argument("--code-tree", default=None, help="run the shard tasks with the mer package of this folder")
    args = p.parse_args(argv)

    root = Path(args.root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if args.shard_rss:
        res = shard_rss(args)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        print(json.dumps({"bench": "scale-shard-rss", **res}))
        return 0
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
    # Per shard and merged, with the search parameters the tuning chose: what the gate decided on.
    recall = {m: {"merged": r["merged"], "target": rec.get("target", cfg.index.recall_target), "query_source": r.get("query_source"),
                  "shards": {k: {"recall": v.get("recall"), "params": v.get("params")} for k, v in r["shards"].items()}}
              for m, r in rec["models"].items()}
    print("recall:", json.dumps(recall))
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
        "recall": recall,
        "publish_bytes": results["publish"].get("bytes"),
        "shards": shard_meta,
    }
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
