"""`mer compare`: every model and the DCM ablations on the same data, evaluated together, one table."""
from __future__ import annotations

import json
import time

from rich.console import Console
from rich.table import Table

from mer.config import MerConfig
from mer.errors import validate_ds
from model import evaluate, train
from model.zoo import artifact_name

NOTE = ("HR scores an item by the max over a user's embeddings. CR rows (cr = source association, cr-item = "
        "condition sampled from the target's topics) are scored on the eval records that logged a source interest, "
        "with that condition; filtered HR keeps only corpus items tagged with it. hr_served = the served merge at the "
        "serving budget (importance budgets for implicit models, equal budgets over K_ex followed topics for CR). "
        "'vs single' for CR rows divides by single's HR on the same conditioned records (hr_cond), per segment.")
RUNS = [("single", None), ("dcm", None), ("mind", None), ("sa", None), ("token", None), ("cr", "source"),
        ("cr", "item"), ("pinnersage", None), ("dcm", "no-vafpi"), ("dcm", "no-sar"), ("dcm", "k2"), ("dcm", "k4")]


def run(cfg: MerConfig, ds: str, train_models: bool = True, only: list[str] | None = None) -> dict:
    """Train every run (or the named artifacts in `only`; none with train_models=False), evaluate all, one table."""
    validate_ds(ds)
    trained = {}
    for model, variant in RUNS if train_models else []:
        if only is not None and artifact_name(model, variant) not in only:
            continue
        t0 = time.time()
        r = train.run(cfg, ds, model, variant)
        trained[r["model"]] = {"seconds": round(time.time() - t0, 1), "epochs": r.get("epochs_run"),
                               "final_loss": r.get("final_loss")}
    result = evaluate.run(cfg, ds)
    models = evaluate.trained_models(cfg, ds)
    # re-read the per-model metrics from the evaluation to build one table
    from mer.tables import read_partition

    table = read_partition(cfg.table("eval_metrics"), ds).to_pandas()
    ks, b = cfg.eval.ks, cfg.eval.serve_budget
    cols = [f"hr@{k}" for k in ks] + [f"filtered_hr@{ks[0]}", f"hr_served@{b}", f"topic_distinct@{cfg.eval.diversity_k}",
                                     "mean_pairwise_cos"]
    k0 = ks[0]
    base = _val(table, "single", "", f"hr@{k0}")
    rt = Table(title=f"MER model comparison ds={ds} ({result['records']} eval records, corpus {result['corpus']})")
    head = (["model"] + cols + [f"hr@{k0} core", f"hr@{k0} non_core", f"vs single hr@{k0}", "vs single core",
                                "vs single non_core", "epochs", "train s"])
    for h in head:
        rt.add_column(h, justify="right" if h != "model" else "left")
    rows = []
    for name, conf in models:
        variant = conf.get("variant") or ""
        vals = [_val(table, conf["model"], variant, c) for c in cols]
        segs = [_val(table, conf["model"], variant, f"hr@{k0}", s) for s in ("core", "non_core")]
        # CR is scored on the records with a logged source interest: its baseline is single on those records
        ref = f"hr_cond@{k0}" if conf["model"] == "cr" else f"hr@{k0}"
        bases = [_val(table, "single", "", ref, s) for s in ("all", "core", "non_core")]
        rels = [f"{v / b:.3f}x" if (v is not None and b) else "" for v, b in zip([vals[0]] + segs, bases)]
        meta = _train_meta(cfg, ds, name)
        row = [name] + [_fmt(v) for v in vals + segs] + rels + [str(meta.get("epochs_run", "")),
                                                                str(trained.get(name, {}).get("seconds")
                                                                    or meta.get("train_seconds", ""))]
        rows.append(row)
        rt.add_row(*row)
    Console(width=max(Console().width, 200)).print(rt)
    path = cfg.run_dir(ds) / "compare.md"
    lines = [f"# Model comparison ds={ds}", "", f"{result['records']} eval records, corpus {result['corpus']} items.",
             "", NOTE, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return {"ds": ds, "table": str(path), "trained": trained, "metrics": result["metrics"]}


def _train_meta(cfg: MerConfig, ds: str, name: str) -> dict:
    p = train.model_dir(cfg, ds, name) / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _val(df, model: str, variant: str, metric: str, segment: str = "all"):
    m = df[(df.model == model) & (df.variant == variant) & (df.metric == metric) & (df.segment == segment)]
    return float(m.value.iloc[0]) if len(m) else None


def _fmt(v) -> str:
    return "" if v is None or v != v else f"{v:.4f}"
