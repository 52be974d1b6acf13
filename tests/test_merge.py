"""The one served merge (mer.stages.model.merge): known answers, and evaluation and the reader agreeing on it."""
from __future__ import annotations

import os
import subprocess
import sys

import faiss
import numpy as np
import pytest
import torch

from mer.stages.index.reader import merged_candidates
from mer.stages.index.search import Shard, search_shards
from mer.stages.model.evaluate import embedding_lists, served
from mer.stages.model.merge import (
    embedding_weights,
    round_robin,
    round_robin_rows,
    served_merge,
    served_merge_rows,
    split_budget,
)


# ---------------------------------------------------------------- budgets
def test_split_budget_by_largest_remainder():
    assert split_budget([0.5, 0.3, 0.2], 10) == [5, 3, 2]
    assert split_budget([1, 1, 1], 10) == [4, 3, 3]  # the one left over goes to the first of the ties
    assert split_budget([0.45, 0.45, 0.1], 7) == [3, 3, 1]  # 3.15, 3.15, 0.7: the largest remainder wins
    assert split_budget([3.0, 1.0, 0.0], 8) == [6, 2, 0]  # zero importance gets nothing
    assert split_budget([0.0, 0.0], 5) == [3, 2]  # all zero: equal
    assert split_budget([-1.0, 1.0], 4) == [0, 4]  # negative counts as zero
    assert split_budget([], 5) == []


def test_embedding_weights_give_each_model_an_equal_share():
    # DCM by importance inside its half, CR equally inside its half, whatever the embedding counts.
    w = embedding_weights(["dcm", "dcm", "dcm", "cr"], [0.5, 0.25, 0.25, 1.0], [False, False, False, True])
    assert np.allclose(w, [0.25, 0.125, 0.125, 0.5])
    w = embedding_weights(["dcm", "dcm", "cr", "cr"], [0.75, 0.25, 7.0, 1.0], [False, False, True, True])
    assert np.allclose(w, [0.375, 0.125, 0.25, 0.25])  # explicit importance is ignored
    # A user who follows nothing: DCM alone takes all of it; zero importance splits equally.
    assert np.allclose(embedding_weights(["dcm", "dcm"], [0.0, 0.0], [False, False]), [0.5, 0.5])


# ---------------------------------------------------------------- round robin
def test_round_robin_order_dedup_and_budgets():
    lists = [[1, 2, 3, 4], [2, 5, 6, 7], [1, 8, 9]]
    # One from each list in turn; 1 is a duplicate for list 2 (-> 8), 2 for list 0 (-> 3); list 1 stops at budget 1.
    assert round_robin(lists, [2, 1, 1], 4) == [(1, 0), (2, 1), (8, 2), (3, 0)]


def test_round_robin_backfills_past_budgets_when_dedup_leaves_the_total_short():
    # List 0 runs dry on duplicates after one item; list 1 reaches its budget: the fourth slot is back-filled.
    assert round_robin([[1, 2], [1, 2, 5, 6]], [2, 2], 4) == [(1, 0), (2, 1), (5, 1), (6, 1)]
    # ...but never beyond the distinct candidates there are.
    assert round_robin([[1, 2], [2, 1]], [5, 5], 10) == [(1, 0), (2, 1)]


def test_round_robin_skips_negative_ids():
    # FAISS fills missing results with -1: they are never served and take no budget.
    assert round_robin([[-1, 4], [5, -1, 6]], [1, 2], 3) == [(4, 0), (5, 1), (6, 1)]


def _round_robin_by_rounds(lists, budgets, k):
    """The rule written out slot by slot (the implementation before 2026-12-01): the oracle for the one below."""
    seen, out, pos, taken = set(), [], [0] * len(lists), [0] * len(lists)
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
                    seen.add(items[pos[i]])
                    out.append((items[pos[i]], i))
                    taken[i], pos[i], progress = taken[i] + 1, pos[i] + 1, True
    return out


def test_round_robin_agrees_with_the_rule_slot_by_slot_on_random_lists():
    rng = np.random.default_rng(5)
    for _ in range(2000):
        n_lists, pool = int(rng.integers(1, 9)), int(rng.integers(1, 60))
        lists = [rng.integers(-2, pool, int(rng.integers(0, 40))).tolist() for _ in range(n_lists)]
        budgets = rng.multinomial(int(rng.integers(0, 50)), np.ones(n_lists) / n_lists).tolist()
        k = int(rng.integers(0, 60))
        assert round_robin(lists, budgets, k) == _round_robin_by_rounds(lists, budgets, k), (lists, budgets, k)


def test_round_robin_rows_merge_every_user_as_one_user_alone():
    # The compiled batch evaluation runs (one user alone runs uncompiled: the tests above): users of one call do
    # not see each other's items (de-duplication is per user), and -1 pads (shorter lists) change nothing.
    rng = np.random.default_rng(11)
    for _ in range(300):
        n_users, n_lists, width = int(rng.integers(2, 7)), int(rng.integers(1, 6)), int(rng.integers(0, 30))
        lists = rng.integers(-2, 25, (n_users, n_lists, width))
        budgets = rng.integers(0, 12, (n_users, n_lists))
        k = int(rng.integers(0, 40))
        items, src = round_robin_rows(lists, budgets, k)
        for u in range(n_users):
            want = _round_robin_by_rounds(lists[u].tolist(), budgets[u].tolist(), k)
            assert [(int(i), int(s)) for i, s in zip(items[u], src[u]) if i >= 0] == want
            assert (items[u][len(want):] == -1).all() and (src[u][len(want):] == -1).all()


def test_served_merge_rows_leave_inactive_embeddings_out_as_the_reader_does():
    # An inactive embedding has no row in the user export: it takes no share of the budget and no candidate.
    rng = np.random.default_rng(2)
    models, explicit = ["dcm", "dcm", "dcm", "cr", "cr"], [False, False, False, True, True]
    for _ in range(200):
        n_users = int(rng.integers(1, 5))
        lists = rng.integers(0, 40, (n_users, 5, 15))
        imp = rng.random((n_users, 5)) * (rng.random((n_users, 5)) < 0.8)
        active = rng.random((n_users, 5)) < 0.7
        k = int(rng.integers(1, 30))
        items, src = served_merge_rows(lists, models, imp, explicit, active, k)
        for u in range(n_users):
            on = np.flatnonzero(active[u])
            want = served_merge([lists[u, j].tolist() for j in on], [models[j] for j in on], imp[u, on].tolist(),
                                [explicit[j] for j in on], k)
            got = [(int(i), int(s)) for i, s in zip(items[u], src[u]) if i >= 0]
            assert got == [(i, int(on[s])) for i, s in want]


def test_merge_runs_where_numba_has_nowhere_to_cache_its_code():
    # A read-only install with no writable home (an Airflow worker under an arbitrary uid): numba finds no cache
    # locator and refuses cache=True; the merge must still serve, compiled for the process alone. The locator list
    # is narrowed to one that never applies to a plain file, which is what numba meets there. A fresh interpreter:
    # the compiled kernel is kept per process.
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "numba.core.caching.ZipCacheLocator"}
    code = ("from mer.stages.model.merge import round_robin_rows; "
            "print(round_robin_rows([[[1, 2], [2, 3]], [[4, 5], [5, 6]]], [[1, 1], [1, 1]], 3)[0].tolist())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[[1, 2, 3], [4, 5, 6]]"
    assert "numba cannot cache" in out.stderr


# ---------------------------------------------------------------- the served merge of one user
DCM0, DCM1, CR0 = list(range(10, 20)), list(range(20, 30)), list(range(30, 40))


def test_served_merge_one_weighted_pass_over_every_embedding():
    # weights dcm 0.375 / 0.125, cr 0.5 -> budgets 3 / 1 / 4 of 8; models visited in name order (cr first).
    got = served_merge([DCM0, DCM1, CR0], ["dcm", "dcm", "cr"], [3.0, 1.0, 1.0], [False, False, True], 8)
    assert got == [(30, 2), (10, 0), (20, 1), (31, 2), (11, 0), (32, 2), (12, 0), (33, 2)]
    # The caller's order of the embeddings does not change the answer (reader: manifest order; evaluation: dcm, cr).
    again = served_merge([CR0, DCM0, DCM1], ["cr", "dcm", "dcm"], [1.0, 3.0, 1.0], [True, False, False], 8)
    assert [i for i, _ in again] == [i for i, _ in got]
    assert [src for _, src in again] == [0, 1, 2, 0, 1, 0, 1, 0]


def test_served_merge_without_explicit_embeddings_gives_dcm_the_whole_budget():
    got = served_merge([DCM0, DCM1], ["dcm", "dcm"], [3.0, 1.0], [False, False], 8)
    assert [i for i, _ in got] == [10, 20, 11, 21, 12, 13, 14, 15]  # budgets 6 / 2


# ---------------------------------------------------------------- evaluation and the reader agree
def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("n_items", [60, 9])  # 9 < k: FAISS pads with -1, evaluation's top-k is shorter
def test_evaluation_and_reader_serve_the_same_list(n_items):
    """Same user embeddings, same corpus: evaluation's dcm+cr served list (exact torch top-k per embedding,
    then `served`) equals the reader's (FAISS search of the published shards, then `merged_candidates`)."""
    rng = np.random.default_rng(7)
    d, k, n_users = 8, 12, 3
    item_ids = np.arange(1000, 1000 + n_items)
    items = {"dcm": _unit(rng, n_items, d), "cr": _unit(rng, n_items, d)}
    shards = {}
    for m, vecs in items.items():
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        index.add_with_ids(vecs, item_ids)
        shards[m] = [Shard("shard-00000", index, {})]

    # DCM: K = 3 slots; user 1 has an empty cluster (importance 0, inactive: the user export drops it).
    dcm_user = torch.from_numpy(_unit(rng, n_users * 3, d).reshape(n_users, 3, d))
    dcm_imp = torch.tensor([[0.5, 0.3, 0.2], [0.7, 0.0, 0.3], [0.2, 0.2, 0.6]])
    dcm_act = dcm_imp > 0
    # CR: K_ex = 2 followed topics; user 2 follows nothing.
    cr_user = torch.from_numpy(_unit(rng, n_users * 2, d).reshape(n_users, 2, d))
    cr_act = torch.tensor([[True, True], [True, False], [False, False]])
    topics = [[4, 9], [6], []]

    dcm_c = embedding_lists(dcm_user, dcm_imp * dcm_act, dcm_act, torch.from_numpy(items["dcm"]), item_ids, k)
    cr_c = embedding_lists(cr_user, cr_act.float(), cr_act, torch.from_numpy(items["cr"]), item_ids, k)
    evaluation = served([("dcm", False, dcm_c), ("cr", True, cr_c)], k)

    def search(model, vec, kk):
        return search_shards(shards[model], np.atleast_2d(vec), kk)

    for u in range(n_users):
        # The reader's rows: (model, k, vector, importance, topic), CR listed first as a manifest may.
        embs = [("cr", j, cr_user[u, j].numpy(), 1.0, topics[u][j]) for j in range(2) if cr_act[u, j]]
        embs += [("dcm", j, dcm_user[u, j].numpy(), float(dcm_imp[u, j]), None) for j in range(3) if dcm_act[u, j]]
        reader = [c.item_id for c in merged_candidates(embs, search, k)]
        assert reader == evaluation[u][evaluation[u] >= 0].tolist()
        assert len(reader) == min(k, n_items) and len(set(reader)) == len(reader)
