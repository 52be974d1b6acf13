"""`mer compare`: every tower, the simple baselines and the DCM ablations on the same data, evaluated together:
one table with novel HR and paired bootstrap intervals vs single and vs the strongest simple baseline."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch
from rich.console import Console
from rich.table import Table

from mer.base.config import MerConfig
from mer.base.errors import MerError, NotApplicable, validate_ds
from mer.base.io import read_partition
from mer.stages.model import evaluate, train
from mer.stages.model.intervals import verdict
from mer.stages.model.zoo import FITTERS, artifact_name, tower_config

log = logging.getLogger(__name__)

NOTE = ("HR scores an item by the max over a user's embeddings; hr_novel: records whose target is not in the "
        "user's own history (a new item, not a repeat). Simple baselines are fitted on the train split and ranked "
        "with ties broken by train popularity. CR and inverted rows (cr = source association, cr-item = condition "
        "sampled from the target's topics, inverted = the followed topic's most engaged items) are scored on the "
        "eval records that logged a source interest, with that condition; filtered HR keeps only corpus items "
        "tagged with it. hr_served = the served merge at the serving budget. 'vs single' / 'vs best baseline': "
        "ratio of HR@100 on the records both were scored on, with its paired bootstrap 95% interval (resampling "
        "users: a user's records are not independent); the best "
        "baseline is the strongest simple baseline on the validation day. 'val hr@100': the validation day's users "
        "that early stopping did not read (half of them), the figure bless decides on.")
RUNS = [("popularity", None), ("itemknn", "sum"), ("itemknn", "max"), ("pretrained", "mean"), ("pretrained", "max"),
        ("als", None), ("inverted", None), ("pinnersage", None), ("single", None), ("dcm", None), ("mind", None), ("sa", None),
        ("token", None), ("cr", "source"), ("cr", "item"), ("dcm", "no-vafpi"), ("dcm", "no-sar"), ("dcm", "k2"),
        ("dcm", "k7")]


def run(cfg: MerConfig, ds: str, train_models: bool = True, only: list[str] | None = None) -> dict:
    """Train every run (or the named artifacts in `only`; none with train_models=False), evaluate all, one table."""
    validate_ds(ds)
    runs = [(m, v) for m, v in RUNS if train_models and (only is None or artifact_name(m, v) in only)]
    train.set_threads(cfg)
    evaluator = evaluate.Evaluator(cfg, ds)  # the records and corpus every model is scored on, read once
    trained, skipped = train_all(cfg, ds, runs, evaluator.add)
    models = evaluate.trained_models(cfg, ds)
    if not models:
        raise MerError(f"no trained model under {cfg.run_dir(ds) / 'models'}: nothing to compare")
    for name, conf in models:  # folders trained before this run (or all of them, without training)
        evaluator.add(name, conf)
    result = evaluator.finish([name for name, _ in models])
    table = read_partition(cfg.table("eval_metrics"), ds).to_pandas()
    table = table[table.split == "eval"]
    iv = read_partition(cfg.table("eval_intervals"), ds).to_pandas()
    k0 = cfg.eval.ks[0]
    cols = [f"hr@{k}" for k in cfg.eval.ks] + [f"hr_novel@{k0}", f"hr@{k0} core", f"hr@{k0} non_core",
                                             f"filtered_hr@{k0}", f"hr_served@{cfg.eval.serve_budget}"]
    head = ["model"] + cols + ["vs single [95% CI]", "novel vs single", "vs best baseline [95% CI]",
                               "novel vs best", "val hr@100", "epochs", "train s"]
    rt = Table(title=f"MER model comparison ds={ds} ({result['records']} eval records from {result['users']} users, "
                     f"corpus {result['corpus']}, "
                     f"best simple baseline on the val day: {result['best_baseline']})")
    for h in head:
        rt.add_column(h, justify="right" if h != "model" else "left")
    rows = []
    for name, conf in models:
        variant = conf.get("variant") or ""
        vals = []
        for c in cols:
            metric, _, seg = c.partition(" ")
            vals.append(_fmt(_val(table, conf["model"], variant, metric, seg or "all")))
        rels = [_interval(iv, name, ref, recs) for ref in ("single", "best_baseline") for recs in ("all", "novel")]
        meta = _train_meta(cfg, ds, name)
        val_hr = meta.get("best_val_hr@100")
        rows.append([name] + vals + rels + [_fmt(val_hr), str(meta.get("epochs_run", "")),
                                            str(trained.get(name, {}).get("seconds") or meta.get("train_seconds", ""))])
        rt.add_row(*rows[-1])
    Console(width=max(Console().width, 220)).print(rt)
    words = [f"- {r}" for r in verdicts(iv)]
    for w in words:
        print(w)
    not_trained = [f"- {name}: {why}" for name, why in skipped.items()]
    if not_trained:
        print("Not trained (nothing to train on in this data):")
        print("\n".join(not_trained))
    path = cfg.run_dir(ds) / "compare.md"
    lines = [f"# Model comparison ds={ds}", "", f"{result['records']} eval records from {result['users']} users "
             f"(the intervals resample users), corpus {result['corpus']} items; "
             f"strongest simple baseline on the validation day: {result['best_baseline']}.", "", NOTE, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "## In words (HR@100, eval day, all records, paired bootstrap 95% intervals)", ""] + words
    if not_trained:
        lines += ["", "## Not trained (nothing to train on in this data)", ""] + not_trained
    path.write_text("\n".join(lines) + "\n")
    return {"ds": ds, "table": str(path), "trained": trained, "skipped": skipped,
            "best_baseline": result["best_baseline"],
            "verdicts": [w[2:] for w in words],
            "hr": {n: m.get(f"hr@{k0}/all") for n, m in result["metrics"].items()},
            "hr_novel": {n: m.get(f"hr_novel@{k0}/all") for n, m in result["metrics"].items()}}


def train_all(cfg: MerConfig, ds: str, runs: list[tuple[str, str | None]],
              on_trained: Callable[[str, dict], None] | None = None) -> tuple[dict, dict]:
    """Fit the simple baselines here (seconds each), then train the towers on train.compare_workers processes.

    Returns ({artifact: seconds, epochs, final_loss}, {artifact: why it was not trained}). `on_trained(name, conf)`
    runs here for every model as soon as its folder is saved (compare evaluates it while the workers train the
    rest). A worker is a fresh (spawned) interpreter: nothing of this process's torch or thread state is inherited.
    Each tower's result does not depend on the worker count (same seed, same data order); it does on its thread
    count, as torch's sums do.
    """
    # Towers with more user embeddings first (their steps take longest): the last to finish are then short ones and
    # neither worker idles long at the end (in the table's order, MovieLens's DCM K=4 ablation ran alone for 3 min).
    # K as tower_config builds it; the data's sizes (pretrained width, topics) do not change it.
    towers = sorted((r for r in runs if r[0] not in FITTERS),
                    key=lambda r: -tower_config(cfg, *r, pre_dim=1, topic_vocab=[]).k)
    workers = min(len(towers), cfg.train.compare_workers or os.cpu_count() or 1)
    trained, skipped, done = {}, {}, []

    def record(outcome: tuple[str, dict | None, str | None]) -> None:
        name, info, why = outcome
        if why is not None:
            skipped[name] = why
        else:
            trained[name] = info
            done.append(name)
            log.info("compare: %s trained in %.0f s", name, info["seconds"])

    def hand_over() -> None:
        while on_trained is not None and done:
            name = done.pop(0)
            on_trained(name, json.loads((cfg.model_dir(ds, name) / "config.json").read_text()))

    for model, variant in [r for r in runs if r[0] in FITTERS] + (towers if workers <= 1 else []):
        record(_train_one(cfg, ds, model, variant))
        if workers <= 1:
            hand_over()
    if workers > 1:
        threads = cfg.train.num_threads or max(1, (os.cpu_count() or 1) // workers)
        wcfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_threads": threads})})
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        # What this process scores meanwhile shares the cores with the workers: at a worker's thread count (a
        # model's HR is the same at 1 or 2 threads here: single and CR, unchanged, scored the same in session 13
        # at 1 thread during training as in session 12 at 2 after it).
        torch.set_num_threads(threads)
        try:
            futures = [pool.submit(_train_one, wcfg, ds, model, variant) for model, variant in towers]
            hand_over()  # the fitted baselines, while the first towers train
            for fut in as_completed(futures):
                record(fut.result())  # a failed tower fails the comparison (its message, not a worker's trace)
                hand_over()
        finally:
            pool.shutdown(cancel_futures=True)  # after a failure, the towers not yet started are not trained
            train.set_threads(cfg)
    hand_over()
    pos = {artifact_name(m, v): i for i, (m, v) in enumerate(runs)}

    def in_runs_order(d: dict) -> dict:  # not the order the workers finished in
        return dict(sorted(d.items(), key=lambda kv: pos.get(kv[0], len(pos))))

    return in_runs_order(trained), in_runs_order(skipped)


def _train_one(cfg: MerConfig, ds: str, model: str, variant: str | None) -> tuple[str, dict | None, str | None]:
    t0 = time.time()
    try:
        r = train.run(cfg, ds, model, variant)
    except NotApplicable as err:  # e.g. CR on data without explicit interests: the others still compare
        return artifact_name(model, variant), None, str(err)
    # a tower's "model" is its artifact name; a baseline's is the bare model ("pretrained"), its folder is "name"
    return r.get("name", r["model"]), {"seconds": round(time.time() - t0, 1), "epochs": r.get("epochs_run"),
                        "final_loss": r.get("final_loss")}, None


def verdicts(iv) -> list[str]:
    out = []
    for r in iv[(iv.segment == "all") & (iv.records == "all")].to_dict("records"):
        if r["ratio"] != r["ratio"]:
            continue
        out.append(f"{r['name']} vs {r['reference']} ({r['reference_model']}): {verdict(r['ratio'], r['lo'], r['hi'])}")
    return out


def _interval(iv, name: str, ref: str, records: str) -> str:
    m = iv[(iv.name == name) & (iv.reference == ref) & (iv.records == records) & (iv.segment == "all")]
    if not len(m) or m.ratio.iloc[0] != m.ratio.iloc[0]:
        return ""
    r = m.iloc[0]
    mark = "+" if r.lo > 1 else ("-" if r.hi < 1 else "~")
    return f"{r.ratio:.3f}x [{r.lo:.3f}, {r.hi:.3f}] {mark}"


def _train_meta(cfg: MerConfig, ds: str, name: str) -> dict:
    p = cfg.model_dir(ds, name) / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _val(df, model: str, variant: str, metric: str, segment: str = "all"):
    m = df[(df.model == model) & (df.variant == variant) & (df.metric == metric) & (df.segment == segment)]
    return float(m.value.iloc[0]) if len(m) else None


def _fmt(v) -> str:
    return "" if v is None or v != v else f"{v:.4f}"
