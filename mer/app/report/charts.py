"""Matplotlib charts for the run report, each returned as a base64 PNG (the page is one file)."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display on workers
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _legend_outside(ax) -> None:
    # A dozen models and their variants: a legend inside the axes would hide the lines.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def hr_curves(curves: pd.DataFrame, segment: str) -> str:
    """HR@K against K, one line per model (filtered / followed-topic HR dashed), for one segment."""
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    for (label, kind), g in curves[curves["segment"] == segment].groupby(["label", "kind"]):
        ax.plot(g["k"], g["value"], marker="o", linestyle="-" if kind == "hr" else "--",
                label=label if kind == "hr" else f"{label} ({kind})")
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("HR@K")
    ax.set_title(f"HR@K, segment {segment}")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return _png(fig)


def history(rows: pd.DataFrame, metric: str) -> str:
    """``metric`` per model across the runs' ds (rows: ds, label, value), one line per model."""
    fig, ax = plt.subplots(figsize=(8.5, 4.0))
    days = sorted(rows["ds"].unique())
    x = {d: i for i, d in enumerate(days)}
    for label, g in rows.sort_values("ds").groupby("label"):
        ax.plot([x[d] for d in g["ds"]], g["value"], marker="o", label=label)
    ax.set_xticks(range(len(days)), days, rotation=30 if len(days) > 4 else 0, fontsize=8)
    ax.set_xlabel("ds (eval day)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per model across runs")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return _png(fig)


def segment_bars(curves: pd.DataFrame, k: int) -> str:
    """HR@k per model, bars grouped by user segment."""
    df = curves[(curves["kind"] == "hr") & (curves["k"] == k)]
    pivot = df.pivot_table(index="label", columns="segment", values="value")
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    pivot.plot.bar(ax=ax, rot=30)
    _legend_outside(ax)
    ax.set_ylabel(f"HR@{k}")
    ax.set_title(f"HR@{k} per segment")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def interests(per_user: pd.Series, importance: pd.Series | None, model: str) -> str:
    """Histogram of interests per user and, when known, of interest importance."""
    n = 2 if importance is not None else 1
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), squeeze=False)
    ax = axes[0][0]
    bins = range(int(per_user.min()), int(per_user.max()) + 2)
    ax.hist(per_user, bins=bins, align="left", rwidth=0.8)
    ax.set_xlabel("embeddings per user")
    ax.set_ylabel("users")
    ax.set_title(model)
    if importance is not None:
        ax = axes[0][1]
        ax.hist(importance.dropna(), bins=20)
        ax.set_xlabel("importance")
        ax.set_title(f"{model}: importance")
    return _png(fig)


def recall_bars(rows: pd.DataFrame, target: float | None) -> str:
    """Recall@K per shard (and merged), per model, with the gate's target."""
    pivot = rows.pivot_table(index="shard", columns="model", values="recall")
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    pivot.plot.bar(ax=ax, rot=0)
    if target is not None:
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_ylim(max(0.0, min(0.9, float(rows["recall"].min()) - 0.05)), 1.01)
    ax.set_ylabel("recall@K")
    ax.legend(fontsize=8)
    ax.set_title("index recall vs exact search")
    return _png(fig)


def timings(rows: pd.DataFrame) -> str:
    """Seconds per task, in the order the tasks started."""
    rows = rows.sort_values("started", ascending=False)
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(rows) + 1.2))
    colors = ["#c0392b" if s == "failed" else "#2e86c1" for s in rows["status"]]
    ax.barh(rows["task"], rows["seconds"], color=colors)
    ax.set_xlabel("seconds")
    ax.set_title("stage timings")
    return _png(fig)
