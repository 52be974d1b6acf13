"""The served merge (paper 3.5): per-embedding budgets, then round-robin with de-duplication."""
from __future__ import annotations

import numpy as np


def importance_budgets(importance: np.ndarray, budget: int) -> list[int]:
    """Split `budget` over embeddings proportionally to cluster importance (largest remainder).

    Implicit interests: importance = sum of routing weights. Equal importance gives equal budgets
    (the explicit K_ex followed topics). Embeddings with zero importance get nothing.
    """
    imp = np.clip(np.asarray(importance, dtype=np.float64), 0, None)
    if imp.sum() <= 0:
        imp = np.ones_like(imp)
    share = imp / imp.sum() * budget
    base = np.floor(share).astype(int)
    rest = budget - base.sum()
    order = np.argsort(-(share - base), kind="stable")
    base[order[:rest]] += 1
    return base.tolist()


def round_robin_merge(lists: list[list[int]], budgets: list[int], total: int) -> list[int]:
    """Take one candidate from each list in turn (each up to its budget), skipping duplicates, until `total`."""
    out: list[int] = []
    seen: set[int] = set()
    pos = [0] * len(lists)
    taken = [0] * len(lists)
    while len(out) < total:
        progressed = False
        for j, items in enumerate(lists):
            if taken[j] >= budgets[j]:
                continue
            while pos[j] < len(items) and items[pos[j]] in seen:
                pos[j] += 1
            if pos[j] >= len(items):
                continue
            out.append(items[pos[j]])
            seen.add(items[pos[j]])
            pos[j] += 1
            taken[j] += 1
            progressed = True
            if len(out) >= total:
                break
        if not progressed:
            break
    return out
