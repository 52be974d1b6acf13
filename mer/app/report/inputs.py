"""What the report reads, each loader returning ``None`` when its input is not there.

A run that stopped early (not blessed, a failed gate) still gets a report: every section
shows what exists and says "not available" for the rest.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from mer.app.pipeline import read_stages
from mer.base.config import MerConfig
from mer.base.errors import MerError
from mer.base.io import list_partitions, partition_dir, read_partition

HR_RE = re.compile(r"^(?P<kind>(?:filtered_)?hr(?:_followed)?)@(?P<k>\d+)$", re.IGNORECASE)


def stages(cfg: MerConfig, ds: str) -> dict[str, dict[str, Any]]:
    return read_stages(cfg, ds)


def table(cfg: MerConfig, name: str, ds: str) -> pd.DataFrame | None:
    if not partition_dir(cfg.table(name), ds).is_dir():
        return None
    try:
        return read_partition(cfg.table(name), ds).to_pandas()
    except (MerError, OSError, ValueError):
        return None


def eval_metrics(cfg: MerConfig, ds: str) -> pd.DataFrame | None:
    """The eval day's metrics (the validation day's rows are what bless decided on, not what we report)."""
    df = table(cfg, "eval_metrics", ds)
    if df is not None and "split" in df.columns:
        df = df[df["split"] == "eval"]
    if df is None or df.empty:
        return None
    df = df.copy()
    df["variant"] = df["variant"].fillna("")
    df["segment"] = df["segment"].fillna("all")
    df["label"] = [m if not v else f"{m}/{v}" for m, v in zip(df["model"], df["variant"])]
    return df


def eval_intervals(cfg: MerConfig, ds: str) -> pd.DataFrame | None:
    df = table(cfg, "eval_intervals", ds)
    if df is None or df.empty:
        return None
    df = df.copy()
    df["variant"] = df["variant"].fillna("")
    return df


def hr_curves(metrics: pd.DataFrame | None) -> pd.DataFrame | None:
    """Rows (label, kind hr|filtered_hr, segment, k, value) from metrics named ``hr@K``."""
    if metrics is None:
        return None
    parsed = metrics["metric"].str.extract(HR_RE)
    df = metrics.assign(kind=parsed["kind"].str.lower(), k=pd.to_numeric(parsed["k"]))
    df = df.dropna(subset=["k"])
    if df.empty:
        return None
    return df[["label", "kind", "segment", "k", "value"]].sort_values(["label", "kind", "segment", "k"])


def recall(cfg: MerConfig, ds: str) -> dict | None:
    path = cfg.run_dir(ds) / "index" / "recall.json"
    return _json(path)


def quarantine_counts(cfg: MerConfig, ds: str) -> pd.DataFrame | None:
    df = table(cfg, "quarantine", ds)
    if df is None:
        return None
    if df.empty:
        return pd.DataFrame({"source_table": [], "reason": [], "rows": []})
    return df.groupby(["source_table", "reason"]).size().rename("rows").reset_index()


def data_docs(cfg: MerConfig) -> Path | None:
    """The Great Expectations Data Docs index (every gate, run and ds), when a gate has built it."""
    from mer.stages.quality.gates import data_docs_index

    page = data_docs_index(cfg)
    return page if page.is_file() else None


def eval_history(cfg: MerConfig, ds: str) -> pd.DataFrame | None:
    """The eval-day metrics of every ds up to this one under the same root (a backfill shows no later day)."""
    frames = []
    for day in list_partitions(cfg.table("eval_metrics")):
        if day > ds:
            continue
        df = eval_metrics(cfg, day)
        if df is not None:
            frames.append(df.assign(ds=day)[["ds", "label", "metric", "segment", "value"]])
    return pd.concat(frames, ignore_index=True) if frames else None


def user_interests(cfg: MerConfig, ds: str) -> dict[str, pd.DataFrame]:
    """Per model: one row per (user, embedding) with its importance, from the user-tower export.

    Read from ``<run_dir>/index/users/<model>.parquet``; the interests of a user are the rows
    that share its user id (a column ``importance`` when the tower gives one).
    """
    out: dict[str, pd.DataFrame] = {}
    folder = cfg.run_dir(ds) / "index" / "users"
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.parquet")):
        try:
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            cols = [c for c in ("user_id", "importance", "embedding_index", "slot", "condition_id") if c in schema.names]
            if "user_id" not in cols:
                continue
            df = pq.read_table(path, columns=cols).to_pandas()
        except (OSError, ValueError):
            continue
        out[path.stem] = _explode_importance(df)
    return out


def _explode_importance(df: pd.DataFrame) -> pd.DataFrame:
    # An export may hold one row per user with a list of importances; make it one row per interest.
    first = df["importance"].iloc[0] if "importance" in df.columns and len(df) else None
    if first is not None and hasattr(first, "__len__") and not isinstance(first, str):
        df = df[["user_id", "importance"]].explode("importance")
        df["importance"] = pd.to_numeric(df["importance"], errors="coerce")
    return df


def _json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
