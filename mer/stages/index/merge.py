"""The served merge of a multi-embedding user's candidates (paper section 3.4 / SPEC "served merge").

Implicit (DCM) embeddings get retrieval budgets proportional to cluster importance; explicit
(CR) embeddings, one per sampled followed topic, get equal budgets. Candidates are then taken
round-robin across embeddings with de-duplication, so no single interest dominates.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def split_budget(weights: Sequence[float], total: int) -> list[int]:
    """Integer budgets summing to ``total`` proportional to ``weights`` (largest remainder)."""
    w = np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    if len(w) == 0:
        return []
    w = np.ones_like(w) if w.sum() <= 0 else w
    exact = w / w.sum() * total
    base = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - base), kind="stable")[: total - base.sum()]:
        base[i] += 1
    return base.tolist()


def round_robin(lists: Sequence[Sequence[int]], budgets: Sequence[int], k: int) -> list[tuple[int, int]]:
    """(item, source list) in round-robin order, each list up to its budget, duplicates skipped.

    When de-duplication leaves the total short of ``k``, lists with candidates left fill the
    rest, still round-robin, so the caller gets k items whenever k distinct ones exist.
    """
    seen: set[int] = set()
    out: list[tuple[int, int]] = []
    pos = [0] * len(lists)
    taken = [0] * len(lists)
    for respect_budget in (True, False):
        progress = True
        while len(out) < k and progress:
            progress = False
            for i, items in enumerate(lists):
                if len(out) >= k or (respect_budget and taken[i] >= budgets[i]):
                    continue
                while pos[i] < len(items) and (items[pos[i]] in seen or items[pos[i]] < 0):
                    pos[i] += 1
                if pos[i] < len(items):
                    seen.add(int(items[pos[i]]))
                    out.append((int(items[pos[i]]), i))
                    taken[i] += 1
                    pos[i] += 1
                    progress = True
    return out


def embedding_weights(models: Sequence[str], importance: Sequence[float], explicit: Sequence[bool]) -> list[float]:
    """One weight per embedding: each model gets an equal share of the total; inside a model,
    implicit embeddings split it by importance and explicit ones equally."""
    models = list(models)
    names = sorted(set(models))
    weights = []
    for m, imp, exp in zip(models, importance, explicit):
        same = [j for j, mm in enumerate(models) if mm == m]
        if exp:
            within = 1.0 / len(same)
        else:
            tot = sum(max(float(importance[j]), 0.0) for j in same)
            within = max(float(imp), 0.0) / tot if tot > 0 else 1.0 / len(same)
        weights.append(within / len(names))
    return weights
