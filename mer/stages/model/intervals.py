"""Paired bootstrap intervals for model comparisons, and how a comparison is said in words (numpy only: the
report imports this without torch)."""
from __future__ import annotations

import numpy as np


def paired_bootstrap_ratio(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                           groups: np.ndarray | None = None) -> tuple[float, float, float]:
    """mean(a) / mean(b) and its percentile interval from a paired bootstrap.

    a, b: per-record outcomes (hits) of two models on the same records, so each resample draws the same
    records for both (the pairing removes the records' shared difficulty from the interval's width).
    groups: the unit each record belongs to (its user). A user's records are not independent draws (the same
    history and tower output score all of them), so the resamples draw whole users: MovieLens's eval day has
    4,894 records from 50 users, and resampling records as if they were 4,894 independent draws gave intervals
    up to twice too narrow there (bench/RESULTS.md, session 7). Without groups (or one record per group), records are the unit.
    NaN when there is no record or the reference never hits.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or b.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    if groups is not None:  # per-group sums: a resample of groups is a resample of their records, together
        _, codes = np.unique(np.asarray(groups), return_inverse=True)
        a, b = np.bincount(codes, weights=a), np.bincount(codes, weights=b)
    n = len(a)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    sa, sb = a[idx].sum(1), b[idx].sum(1)
    ratios = np.where(sb > 0, sa / np.where(sb > 0, sb, 1), np.nan)
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(ratios, [tail, 100 - tail])
    return float(a.sum() / b.sum()), float(lo), float(hi)


def verdict(ratio: float, lo: float, hi: float) -> str:
    """A ratio and its interval in words: which model won and whether the interval excludes 1."""
    if ratio != ratio:
        return "no figure (no record, or the reference never hits)"
    span = f"{ratio:.3f}x [{lo:.3f}, {hi:.3f}]"
    if lo > 1:
        return f"{span}: better, the interval excludes 1"
    if hi < 1:
        return f"{span}: worse, the interval excludes 1"
    return f"{span}: no difference shown (the interval contains 1)"
