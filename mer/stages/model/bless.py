"""Blessing, decided on the validation day (the eval day selects nothing): the candidate must beat single and
the strongest simple baseline, and must not regress against the last blessed model.

    candidate HR@K >= single HR@K * (1 + bless_margin)                  (relative margin)
    candidate HR@K >= best simple baseline HR@K * (1 + bless_margin)    (when baselines were trained)
    candidate HR@K >= last blessed HR@K * (1 - bless_tolerance)         (no regression)
K is the first of cfg.eval.ks; every HR is the val split's. The registry (cfg.artifacts_dir/blessed.json)
changes only when blessed. MER_BLESS_FORCE_FAIL=1 forces a non-blessed outcome (tests, drills).
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from mer.base.config import MerConfig
from mer.base.errors import MerError, validate_ds
from mer.base.io import read_partition, write_json_atomic

REGISTRY = "blessed.json"


def metric_value(df, model: str, metric: str, segment: str = "all", split: str = "val") -> float | None:
    """One figure of eval_metrics (as a pandas frame); the validation day's by default."""
    name, _, variant = model.partition("-")
    m = df[(df.model == name) & (df.variant == variant) & (df.metric == metric) & (df.segment == segment)
           & (df.split == split)]
    return float(m.value.iloc[0]) if len(m) else None


def decide(candidate: float, baseline: float, last: float | None, margin: float, tolerance: float,
           best: tuple[str, float] | None = None) -> tuple[bool, str]:
    if candidate < baseline * (1 + margin):
        return False, f"candidate {candidate:.4f} does not beat baseline {baseline:.4f} by {margin:.1%}"
    if best is not None and candidate < best[1] * (1 + margin):
        return False, (f"candidate {candidate:.4f} does not beat the strongest simple baseline {best[0]} "
                       f"{best[1]:.4f} by {margin:.1%}")
    if last is not None and candidate < last * (1 - tolerance):
        return False, f"candidate {candidate:.4f} regresses more than {tolerance:.1%} vs last blessed {last:.4f}"
    return True, (f"candidate {candidate:.4f} vs baseline {baseline:.4f}"
                  + (f", {best[0]} {best[1]:.4f}" if best else "") + (f", last blessed {last:.4f}" if last else ""))


def strongest_baseline(table, metric: str, names: list[str]) -> tuple[str, float] | None:
    found = [(n, metric_value(table, n, metric)) for n in names]
    found = [(n, v) for n, v in found if v is not None and v == v]
    return max(found, key=lambda x: (x[1], x[0])) if found else None


def run(cfg: MerConfig, ds: str) -> dict:
    validate_ds(ds)
    e = cfg.eval
    metric = f"hr@{e.ks[0]}"
    table = read_partition(cfg.table("eval_metrics"), ds).to_pandas()  # once: every lookup below filters it
    cand = metric_value(table, e.candidate_model, metric)
    base = metric_value(table, e.baseline_model, metric)
    if cand is None or base is None:
        missing = e.candidate_model if cand is None else e.baseline_model
        raise MerError(f"table eval_metrics: no validation-day {metric} for model {missing!r} in ds={ds}: "
                       "train and evaluate it first")
    best = strongest_baseline(table, metric, e.simple_baselines)
    path = cfg.artifacts_dir / REGISTRY
    registry = json.loads(path.read_text()) if path.is_file() else {"history": []}
    last = registry.get("current", {}).get("value")
    blessed, reason = decide(cand, base, last, e.bless_margin, e.bless_tolerance, best)
    if os.environ.get("MER_BLESS_FORCE_FAIL") == "1":
        blessed, reason = False, "forced by MER_BLESS_FORCE_FAIL=1"
    if blessed:
        entry = {"ds": ds, "model": e.candidate_model, "metric": metric, "split": "val", "value": cand,
                 "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        registry["current"] = entry
        registry["history"] = (registry.get("history", []) + [entry])[-50:]
        write_json_atomic(path, registry)
    return {"blessed": blessed, "reason": reason, "metric": metric, "split": "val", "candidate": cand,
            "baseline": base, "best_baseline": best[0] if best else None,
            "best_baseline_value": best[1] if best else None, "last_blessed": last}
