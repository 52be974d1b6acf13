"""The served merge of a multi-embedding user's candidates (paper 3.4-3.5, SPEC "served merge").

One implementation, called by the reader (mer/stages/index/reader.py, what online serving runs) and by
evaluation (mer/stages/model/evaluate.py: each model's hr_served and the dcm+cr union), so the served
figures the report gives are those of the merge the reader runs. It lives in the model stage because the
index stage may import the model stage, not the other way round.

Rules: each model gets an equal share of the budget; inside a model, implicit (DCM) embeddings split that
share by cluster importance and explicit (CR) embeddings, one per sampled followed topic, equally.
Integer budgets by largest remainder. Candidates are then taken round-robin across embeddings, each up to
its budget, skipping duplicates and empty slots (id < 0: FAISS fills missing results with -1); when
de-duplication leaves the total short, lists with candidates left fill the rest, still round-robin.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


def split_budget(weights: Sequence[float], total: int) -> list[int]:
    """Integer budgets summing to ``total`` proportional to ``weights`` (largest remainder).

    Negative weights count as zero; all-zero weights split equally (no interest is preferred).
    One row of `split_budget_rows`.
    """
    return split_budget_rows(np.asarray(weights, dtype=np.float64).reshape(1, -1), total)[0].tolist()


def split_budget_rows(weights: np.ndarray, total: int) -> np.ndarray:
    """`split_budget` of every row of weights [R, K] -> int64 [R, K]; the ties of the remainders go to the first."""
    w = np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    w = np.where(w.sum(1, keepdims=True) <= 0, 1.0, w)
    exact = w / w.sum(1, keepdims=True) * total
    base = np.floor(exact).astype(np.int64)
    place = np.argsort(np.argsort(-(exact - base), axis=1, kind="stable"), axis=1, kind="stable")
    return base + (place < total - base.sum(1, keepdims=True))


def round_robin(lists: Sequence[Sequence[int]], budgets: Sequence[int], k: int) -> list[tuple[int, int]]:
    """(item, source list) in round-robin order, each list up to its budget, duplicates and ids < 0 skipped.

    When de-duplication leaves the total short of ``k``, lists with candidates left fill the
    rest, still round-robin, so the caller gets k items whenever k distinct ones exist.
    One user's merge: `round_robin_rows` with one row.
    """
    budget_row = np.asarray(list(budgets), dtype=np.int64).reshape(1, len(lists))
    return _pairs(*round_robin_rows(_one_row(lists), budget_row, k))


def round_robin_rows(lists: np.ndarray, budgets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`round_robin` for R users at once: lists [R, K, L] (pad a short list with -1: an id < 0 is an empty slot),
    budgets [R, K] -> (items [R, k], source list [R, k]), both -1 past a user's last item.

    Compiled (numba): evaluation merges every record of every model (5,000 merges of up to 7 x 1,000 candidates per
    model on MovieLens), and the same loop in Python took ~9 s per model of the main process's CPU, which the
    training workers need while `mer compare` runs (13x faster compiled, same answers: tests/test_merge.py).
    """
    lists = np.ascontiguousarray(lists, dtype=np.int64)
    budgets = np.ascontiguousarray(budgets, dtype=np.int64)
    if lists.ndim != 3 or budgets.shape != lists.shape[:2]:
        raise ValueError(f"round_robin_rows: lists {lists.shape} must be [R, K, L] and budgets {budgets.shape} [R, K]")
    # One user (the reader's query) runs the same function uncompiled: loading numba and the compiled code takes
    # ~0.7 s, hundreds of times one merge (`mer query` 4.5 s -> 5.9 s when it did); many users amortise it.
    kernel = _round_robin_kernel if len(lists) <= 1 else _compiled()
    return kernel(lists, budgets, int(k))


def _round_robin_kernel(lists, budgets, k):  # plain Python for one row, numba-compiled by _compiled() for more
    n_rows, n_lists, length = lists.shape
    items = np.full((n_rows, k), -1, np.int64)
    src = np.full((n_rows, k), -1, np.int64)
    quota = np.empty(n_lists, np.int64)
    pos = np.empty(n_lists, np.int64)  # each list's cursor: read once, taken or skipped
    turn = np.empty(n_lists, np.int64)  # the lists that take in this round, in order
    for r in range(n_rows):
        seen = set()
        n = 0
        pos[:] = 0
        for fill in range(2):  # 0: each list up to its budget; 1: back-fill past the budgets when short of k
            m = 0
            for i in range(n_lists):
                quota[i] = budgets[r, i]
                if fill == 1 or quota[i] > 0:
                    turn[m] = i
                    m += 1
            while m > 0 and n < k:
                kept = 0
                for j in range(m):
                    if n >= k:
                        break
                    i = turn[j]
                    took = False
                    while pos[i] < length:  # the list's next item not taken yet; an exhausted list leaves the turn
                        x = lists[r, i, pos[i]]
                        pos[i] += 1
                        if x >= 0 and x not in seen:
                            seen.add(x)
                            items[r, n] = x
                            src[r, n] = i
                            n += 1
                            quota[i] -= 1
                            took = True
                            break
                    if took and (fill == 1 or quota[i] > 0):
                        turn[kept] = i
                        kept += 1
                m = kept
    return items, src


@functools.cache
def _compiled():
    # Compiled on first use, not at import: the DAG file and `mer` commands that never merge do not load numba.
    # cache=True keeps the machine code beside this file (or in the user's cache), so later processes (compare's
    # workers, Airflow tasks) load it instead of compiling again (~2 s).
    import numba

    try:
        return numba.njit(cache=True)(_round_robin_kernel)
    except RuntimeError as err:  # no writable place for the cache (read-only install, no home): compile per process
        log.warning("served merge: numba cannot cache its compiled code (%s); compiling it in this process", err)
        return numba.njit(cache=False)(_round_robin_kernel)


def _one_row(lists: Sequence[Sequence[int]]) -> np.ndarray:
    """One user's lists as the [1, K, L] int64 rows the batch functions take, -1 where a list is shorter."""
    out = np.full((1, len(lists), max((len(x) for x in lists), default=0)), -1, dtype=np.int64)
    for i, x in enumerate(lists):
        out[0, i, : len(x)] = x
    return out


def _pairs(items: np.ndarray, src: np.ndarray) -> list[tuple[int, int]]:
    """The one row of a batch function's (items, source) as (item, source) pairs, the -1 padding dropped."""
    keep = items[0] >= 0
    return list(zip(items[0][keep].tolist(), src[0][keep].tolist()))


def embedding_weights(models: Sequence[str], importance: Sequence[float], explicit: Sequence[bool]) -> list[float]:
    """One weight per embedding: each model gets an equal share of the total; inside a model,
    implicit embeddings split it by importance and explicit ones equally. One row of `embedding_weights_rows`."""
    n = len(models)
    return embedding_weights_rows(models, np.asarray(importance, dtype=np.float64).reshape(1, n), explicit,
                                  np.ones((1, n), dtype=bool))[0].tolist()


def embedding_weights_rows(models: Sequence[str], importance: np.ndarray, explicit: Sequence[bool],
                           active: np.ndarray) -> np.ndarray:
    """`embedding_weights` of R users whose embeddings share one layout (column j: model models[j], explicit[j]);
    importance, active [R, E]. An inactive embedding weighs 0 and does not count: a model with none active takes
    no share."""
    importance = np.asarray(importance, dtype=np.float64)
    active = np.asarray(active, dtype=bool)
    models, explicit = np.asarray(models, dtype=object), np.asarray(explicit, dtype=bool)
    weights = np.zeros(importance.shape)
    n_models = np.zeros((len(importance), 1))
    for m in dict.fromkeys(models.tolist()):
        cols = np.flatnonzero(models == m)
        on = active[:, cols]
        n_on = on.sum(1, keepdims=True)
        n_models += n_on > 0
        equal = np.where(on, 1.0 / np.maximum(n_on, 1), 0.0)
        imp = np.where(on, np.clip(importance[:, cols], 0, None), 0.0)
        tot = imp.sum(1, keepdims=True)
        by_importance = np.where(tot > 0, imp / np.where(tot > 0, tot, 1.0), equal)
        weights[:, cols] = np.where(explicit[cols], equal, by_importance)
    return weights / np.maximum(n_models, 1)


def served_merge(lists: Sequence[Sequence[int]], models: Sequence[str], importance: Sequence[float],
                 explicit: Sequence[bool], k: int) -> list[tuple[int, int]]:
    """The served merge of one user: (item, index of the embedding it came from) for up to ``k`` items.

    lists[j]: embedding j's candidates, best first; models[j], importance[j], explicit[j] describe it.
    `served_merge_rows` with one row.
    """
    n = len(lists)
    return _pairs(*served_merge_rows(_one_row(lists), models, np.asarray(importance, dtype=np.float64).reshape(1, n),
                                     explicit, np.ones((1, n), dtype=bool), k))


def served_merge_rows(lists: np.ndarray, models: Sequence[str], importance: np.ndarray, explicit: Sequence[bool],
                      active: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The served merge of R users whose embeddings share one layout: column j of lists [R, E, L] (best first, -1
    pads), importance [R, E] and active [R, E] is an embedding of model models[j] (explicit[j]). An inactive
    embedding is not served (the user export has no row for it): it takes no share and no candidate.
    -> (items [R, k], column of the embedding each came from [R, k]), -1 past a user's last item.

    Embeddings are visited grouped by model name (stable inside a model), so the answer does not depend
    on the order the caller found the models in (the reader: the manifest's; evaluation: dcm then cr).
    """
    lists = np.asarray(lists, dtype=np.int64)
    active = np.asarray(active, dtype=bool)
    importance = np.asarray(importance, dtype=np.float64)
    order = np.array(sorted(range(len(models)), key=lambda j: models[j]), dtype=np.int64)
    # (copies only when needed: evaluation's lists are ~5,000 x 7 x 1,000 and already -1 where inactive)
    if (lists[~active] >= 0).any():
        lists = np.where(active[:, :, None], lists, -1)
    if (order != np.arange(len(order))).any():
        lists = lists[:, order]
    budgets = split_budget_rows(embedding_weights_rows([models[j] for j in order], importance[:, order],
                                                       [explicit[j] for j in order], active[:, order]), k)
    items, src = round_robin_rows(lists, budgets, k)
    return items, np.append(order, -1)[src]  # src -1 (no item) stays -1
