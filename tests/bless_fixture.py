"""Validation-day eval_metrics for the bless tests: the candidate's and the baseline's HR@K for one ds."""
from __future__ import annotations

import pyarrow as pa

from mer.base.config import MerConfig
from mer.base.contract import EVAL_METRICS
from mer.base.io import write_partition


def write_val_metrics(cfg: MerConfig, ds: str, candidate: float, baseline: float = 0.20) -> None:
    metric = f"hr@{cfg.eval.ks[0]}"
    rows = [(cfg.eval.candidate_model, "", "val", metric, "all", candidate),  # bless reads the val day
            (cfg.eval.baseline_model, "", "val", metric, "all", baseline)]
    write_partition(cfg.table("eval_metrics"), ds,
                    pa.Table.from_pylist([dict(zip(EVAL_METRICS.names, r)) for r in rows], schema=EVAL_METRICS))
