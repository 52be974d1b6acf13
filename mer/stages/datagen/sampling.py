"""Vectorised weighted sampling within groups (items of a sub-interest, interests of a user).

One cumulative-weight array over rows sorted by group answers any number of "draw one row of
group g with probability proportional to its weight" queries with a single ``searchsorted``,
so the generator never loops over events in Python.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupedSampler:
    rows: np.ndarray  # row ids sorted by group
    cum: np.ndarray  # float64 cumulative weight over ``rows``
    lo: np.ndarray  # [n_groups] cumulative weight before the group's first row
    hi: np.ndarray  # [n_groups] cumulative weight after its last row
    start: np.ndarray  # [n_groups] first position of the group in ``rows``
    stop: np.ndarray  # [n_groups] one past its last position

    @classmethod
    def build(cls, groups: np.ndarray, weights: np.ndarray, n_groups: int, rows: np.ndarray | None = None) -> "GroupedSampler":
        groups = np.asarray(groups, dtype=np.int64)
        rows = np.arange(len(groups), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        order = np.argsort(groups, kind="stable")
        g = groups[order]
        cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
        start = np.searchsorted(g, np.arange(n_groups), side="left")
        stop = np.searchsorted(g, np.arange(n_groups), side="right")
        padded = np.concatenate([[0.0], cum])
        return cls(rows=rows[order], cum=cum, lo=padded[start], hi=padded[stop], start=start, stop=stop)

    def sizes(self) -> np.ndarray:
        return self.stop - self.start

    def sample(self, groups: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One row per query; ``u`` are uniforms in [0, 1). Every queried group must be non-empty."""
        groups = np.asarray(groups, dtype=np.int64)
        target = self.lo[groups] + u * (self.hi[groups] - self.lo[groups])
        pos = np.searchsorted(self.cum, target, side="right")
        pos = np.clip(pos, self.start[groups], self.stop[groups] - 1)  # float round-off at the edges
        return self.rows[pos]
