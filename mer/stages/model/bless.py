"""Blessing, decided on the validation day (the eval day selects nothing): the candidate must beat single and
the strongest simple baseline, and must not regress against the last blessed model.

    candidate HR@K >= single HR@K * (1 + bless_margin)                  (relative margin)
    candidate HR@K >= best simple baseline HR@K * (1 + bless_margin)    (when baselines were trained)
    candidate HR@K >= last blessed HR@K * (1 - bless_tolerance)         (no regression)
K is the first of cfg.eval.ks; every HR is the val split's, on the validation day's users that early stopping
did not read (data.validation_part), so a tower's early-stopping luck does not count in its favour against a
baseline that has none.

Each run writes its verdict, blessed or not, to ``run_dir(ds)/bless.json`` and to nothing else. "The last
blessed model" is the newest record strictly before ``ds`` that was blessed on the same metric, found by
scanning those per-day records: the verdict is a function of the ds's inputs and the older records only, so
a re-run of a ds gives the same record, and a backfill of an older ds never changes a newer ds's record.
A not-blessed outcome for a drill comes from the config (a large ``eval.bless_margin``), not a switch.
"""
from __future__ import annotations

from pathlib import Path

from mer.base.config import MerConfig
from mer.base.errors import MerError, validate_ds
from mer.base.io import read_json, read_partition, write_json_atomic

RECORD = "bless.json"


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


def record_path(cfg: MerConfig, ds: str) -> Path:
    return cfg.run_dir(ds) / RECORD


def records(cfg: MerConfig) -> dict[str, dict]:
    """Every ds's bless record, by ds (oldest first)."""
    out: dict[str, dict] = {}
    for path in sorted(cfg.artifacts_dir.glob(f"ds=*/{RECORD}")):
        ds = path.parent.name.removeprefix("ds=")
        try:
            out[validate_ds(ds)] = read_json(path)
        except (OSError, ValueError, MerError) as err:  # written atomically: a bad one was edited by hand
            raise MerError(f"bless record {path}: unreadable ({err}); fix or remove it") from None
    return out


def last_blessed(cfg: MerConfig, ds: str, metric: str) -> dict | None:
    """The newest blessed record strictly before ``ds`` on ``metric`` (another K is not comparable)."""
    found = [r for d, r in records(cfg).items() if d < ds and r.get("blessed") and r.get("metric") == metric]
    return found[-1] if found else None


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
    last = last_blessed(cfg, ds, metric)
    blessed, reason = decide(cand, base, last["candidate"] if last else None, e.bless_margin, e.bless_tolerance, best)
    # No wall-clock field: the same inputs give the same bytes.
    record = {"ds": ds, "blessed": blessed, "reason": reason, "model": e.candidate_model, "metric": metric,
              "split": "val", "candidate": cand, "baseline": base, "best_baseline": best[0] if best else None,
              "best_baseline_value": best[1] if best else None, "margin": e.bless_margin,
              "tolerance": e.bless_tolerance, "last_blessed": last["candidate"] if last else None,
              "last_blessed_ds": last["ds"] if last else None}
    path = record_path(cfg, ds)
    write_json_atomic(path, record)
    return {**record, "record": str(path)}
