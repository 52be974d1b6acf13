"""Non-neural baselines (mer/stages/model/baselines.py) and the item_neighbors Spark job, on hand-built data whose
every answer is worked out in the comments."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from mer.base.contract import DERIVED_TABLES, ITEM_FACTORS, ITEM_FEATURES, ITEM_NEIGHBORS, TOPICS
from mer.base.io import read_partition, write_partition
from mer.stages.model.baselines import (
    InvertedIndex,
    ItemKNN,
    Popularity,
    Pretrained,
    Records,
    factor_space,
    bind,
    fit_baseline,
    load_baseline,
    neighbor_matrix,
    ranks_from_scores,
    top_lists,
)
from mer.stages.model.data import build_catalog
from tests.raw_fixture import DS, built_small  # noqa: F401 (fixture)

R6 = math.sqrt(6)
S2 = math.sqrt(2)

# ---------------------------------------------------------------- the hand-built log
# (user, item, minute, split). With max_items_per_user = 3 each user's item set is:
#   u1 {1, 2, 3} (item 1 twice: counted once)    u2 {1, 2}    u3 {2, 3, 4}    u4 {5}
#   u5 {1}: its val row (item 6) and eval row (item 4) must make no pair (no (1, 6), no (1, 4) from u5)
#   u6 {4, 5, 6}: item 3 is its oldest of 4 distinct items, cut by the cap (no (3, 5), (3, 6))
# n: 1 -> 3 (u1 u2 u5), 2 -> 3 (u1 u2 u3), 3 -> 2 (u1 u3), 4 -> 2 (u3 u6), 5 -> 2 (u4 u6), 6 -> 1 (u6)
# c(1,2) = 2 -> 2/sqrt(9) = 2/3     c(1,3) = 1 -> 1/sqrt(6)     c(2,3) = 2 -> 2/sqrt(6)
# c(2,4) = 1 -> 1/sqrt(6)           c(3,4) = 1 -> 1/sqrt(4)     c(4,5) = 1 -> 1/sqrt(4)
# c(4,6) = 1 -> 1/sqrt(2)           c(5,6) = 1 -> 1/sqrt(2)
LOG = [
    (1, 1, 0, "train"), (1, 2, 1, "train"), (1, 3, 2, "train"), (1, 1, 3, "train"),
    (2, 1, 0, "train"), (2, 2, 1, "train"),
    (3, 2, 0, "train"), (3, 3, 1, "train"), (3, 4, 2, "train"),
    (4, 5, 0, "train"),
    (5, 1, 0, "train"), (5, 6, 1, "val"), (5, 4, 2, "eval"),
    (6, 3, 0, "train"), (6, 4, 1, "train"), (6, 5, 2, "train"), (6, 6, 3, "train"),
]
# Each item's neighbours, best first (score desc, then c desc, then lower neighbor id), cut at top_m = 3:
# item 4 has four: 6 (0.707), then 3 and 5 tie at 0.5 with c = 1 -> lower id 3 first; 2 (0.408) is cut.
# item 6: 4 and 5 tie at 1/sqrt(2) with c = 1 -> 4 first.
EXPECTED = {
    1: [(2, 2 / 3), (3, 1 / R6)],
    2: [(3, 2 / R6), (1, 2 / 3), (4, 1 / R6)],
    3: [(2, 2 / R6), (4, 1 / 2), (1, 1 / R6)],
    4: [(6, 1 / S2), (3, 1 / 2), (5, 1 / 2)],
    5: [(6, 1 / S2), (4, 1 / 2)],
    6: [(4, 1 / S2), (5, 1 / S2)],
}
# A tie on score broken by the co-count: item 10 with 11 (c = 1, n_11 = 1) and with 12 (c = 2, n_12 = 4):
# 1/sqrt(2 * 1) == 2/sqrt(2 * 4) exactly in floating point (sqrt(8) = 2 sqrt(2)), so 12 (higher c) beats 11.
TIE_LOG = [(21, 10, 0, "train"), (21, 11, 1, "train"), (21, 12, 2, "train"), (22, 10, 0, "train"),
           (22, 12, 1, "train"), (23, 12, 0, "train"), (24, 12, 0, "train")]


def rows(lists: np.ndarray) -> list[list[int]]:
    """top_lists' padded [R, n] array as each record's list (the -1 pads dropped)."""
    return [r[r >= 0].tolist() for r in lists]


def neighbors_table(expected=EXPECTED) -> pa.Table:
    rows = [(i, j, s, r) for i, nb in expected.items() for r, (j, s) in enumerate(nb, start=1)]
    return pa.table({k: list(v) for k, v in zip(ITEM_NEIGHBORS.names, zip(*rows))}, schema=ITEM_NEIGHBORS)


def examples_frame(spark, log):
    t0 = datetime(2026, 1, 13, 10)
    rows = [(u, i, t0 + timedelta(minutes=m), split) for u, i, m, split in log]
    return spark.createDataFrame(rows, "user_id long, item_id long, event_ts timestamp_ntz, split string")


@pytest.mark.spark
def test_item_neighbors_known_answers(spark):
    from mer.stages.spark_jobs.item_neighbors import item_neighbors

    out = item_neighbors(examples_frame(spark, LOG), top_m=3, max_items_per_user=3).toArrow()
    assert out.schema.names == ITEM_NEIGHBORS.names
    got: dict[int, list] = {}
    for r in sorted(out.to_pylist(), key=lambda r: (r["item_id"], r["rank"])):
        got.setdefault(r["item_id"], []).append((r["neighbor_id"], r["score"]))
        assert r["rank"] == len(got[r["item_id"]])  # ranks 1..k
    assert got == EXPECTED  # exact: the same c / sqrt(n_i * n_j) in IEEE doubles
    assert all(r["item_id"] != r["neighbor_id"] for r in out.to_pylist())

    # top_m = 100: item 4 keeps its 4th neighbour (2, 1/sqrt(6)); still no val/eval pair, no capped-away pair
    wide = {(r["item_id"], r["neighbor_id"]) for r in item_neighbors(
        examples_frame(spark, LOG), top_m=100, max_items_per_user=3).toArrow().to_pylist()}
    assert (4, 2) in wide and len(wide) == 2 * 8
    assert not {(1, 6), (6, 1), (1, 4), (4, 1), (3, 5), (3, 6)} & wide
    # without the cap u6 pairs 3 with 4, 5, 6 too
    uncapped = {(r["item_id"], r["neighbor_id"]) for r in item_neighbors(
        examples_frame(spark, LOG), top_m=100, max_items_per_user=200).toArrow().to_pylist()}
    assert {(3, 5), (3, 6)} <= uncapped and (1, 6) not in uncapped

    tie = item_neighbors(examples_frame(spark, TIE_LOG), top_m=5, max_items_per_user=10).toArrow().to_pylist()
    of10 = [(r["neighbor_id"], r["score"]) for r in sorted(tie, key=lambda r: r["rank"]) if r["item_id"] == 10]
    assert of10 == [(12, 1 / S2), (11, 1 / S2)]


@pytest.mark.spark
def test_build_writes_item_neighbors_from_the_train_split(built_small):
    cfg, summary = built_small
    table = read_partition(cfg.table("item_neighbors"), DS)
    assert table.schema.names == DERIVED_TABLES["item_neighbors"].names
    for f in ITEM_NEIGHBORS:
        assert table.schema.field(f.name).type == f.type, f.name
    assert summary["item_neighbors"] == table.num_rows
    # Reference on the written training_examples: train-split item sets -> cosine pairs.
    ex = read_partition(cfg.table("training_examples"), DS, columns=["user_id", "item_id", "split"]).to_pylist()
    sets: dict[int, set] = {}
    for r in ex:
        if r["split"] == "train":
            sets.setdefault(r["user_id"], set()).add(r["item_id"])
    n = {i: sum(i in s for s in sets.values()) for s in sets.values() for i in s}
    want = {(i, j): sum(i in s and j in s for s in sets.values()) / math.sqrt(n[i] * n[j])
            for i in n for j in n if i != j and any(i in s and j in s for s in sets.values())}
    got = {(r["item_id"], r["neighbor_id"]): r["score"] for r in table.to_pylist()}
    assert got == pytest.approx(want)
    assert want  # the fixture's train split has at least one co-engaged pair
    non_train = {r["item_id"] for r in ex if r["split"] != "train"} - {i for s in sets.values() for i in s}
    assert not {i for pair in got for i in pair} & non_train


# ---------------------------------------------------------------- a tiny catalog
# item  embedding   topics        train count
#   1   (1, 0)      [100]             5
#   2   (0, 1)      [100, 200]        3
#   3   (2, 2)      [200]             4
#   4   (-1, 0)     [100]             3
#   5   missing     [200]             1
#   6   (3, 4)      [300]             0
# Items 1..6 are catalog rows 1..6 (rows follow sorted item ids; row 0 = unknown).
VOCAB = np.array([100, 200, 300])
COUNTS = np.array([0, 5, 3, 4, 3, 1, 0], dtype=np.float64)  # by row


def catalog():
    items = pa.table({
        "item_id": [1, 2, 3, 4, 5, 6],
        "pretrained_embedding": [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [-1.0, 0.0], None, [3.0, 4.0]],
        "category_id": [1, 1, 2, 2, 3, 3],
        "creator_id": [10, 11, 12, 13, 14, 15],
        "topic_ids": [[100], [100, 200], [200], [100], [200], [300]],
        "topic_scores": [[1.0], [0.5, 0.5], [1.0], [1.0], [1.0], [1.0]],
    }, schema=ITEM_FEATURES)
    return build_catalog(items, VOCAB, cat_buckets=8, creator_buckets=8)


ALL = np.arange(1, 7)
# ALS factors (item_factors rows) of items 1..5 and 99 (not in the catalog: dropped); item 6 has none (zero row).
FACTORS = pa.table({"item_id": [1, 2, 3, 4, 5, 99], "factors": [[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [-1.0, 0.0],
                                                                 [0.0, -1.0], [1.0, 1.0]]}, schema=ITEM_FACTORS)


def test_catalog_pretrained_embeddings_are_unit_length():
    # (2, 2) -> (0.707, 0.707), (3, 4) -> (0.6, 0.8); unit ones unchanged; a missing one stays zero and flagged.
    c = catalog()
    pre = np.asarray(c.pre)
    assert np.allclose(pre[3], [2 ** -0.5, 2 ** -0.5]) and np.allclose(pre[6], [0.6, 0.8])
    assert np.allclose(pre[1], [1.0, 0.0]) and np.allclose(pre[4], [-1.0, 0.0])
    assert np.allclose(pre[5], 0.0) and np.asarray(c.missing)[5] == 1


def test_catalog_flags_all_zero_and_non_finite_embeddings_as_missing():
    """Defect: an all-zero embedding (synthetic's invalid kind 2) kept missing = 0, so the towers saw it as a present
    embedding and counted the item as valid history, while the build's hist_valid (finite, non-zero norm) did not."""
    items = pa.table({
        "item_id": [1, 2, 3, 4],
        "pretrained_embedding": [[1.0, 0.0], [0.0, 0.0], [float("nan"), 1.0], [1.0, 2.0, 3.0]],
        "category_id": [1, 1, 1, 1], "creator_id": [1, 1, 1, 1],
        "topic_ids": [[100]] * 4, "topic_scores": [[1.0]] * 4,
    }, schema=ITEM_FEATURES)
    c = build_catalog(items, VOCAB, cat_buckets=8, creator_buckets=8)
    assert np.asarray(c.missing)[1:].tolist() == [0.0, 1.0, 1.0, 1.0]  # present, all-zero, NaN, wrong length
    assert not np.asarray(c.pre)[2:].any()


def test_als_baseline_is_cosine_to_the_mean_of_the_history_factors():
    cat = catalog()
    space = factor_space(FACTORS, cat)
    assert space.shape == (7, 2) and not space[0].any() and not space[6].any()
    assert space[3].tolist() == pytest.approx([0.6, 0.8])
    # history {1, 2}: unit factors (1, 0) + (0, 1) -> mean direction (1, 1)/sqrt(2)
    rec = Records(hist_rows=np.array([[1, 2]]), use=np.ones((1, 2), bool))
    got = Pretrained(cat, "mean", space=space).score(rec, ALL)[0]
    want = [1 / S2, 1 / S2, 1.4 / S2, -1 / S2, -1 / S2, 0.0]  # items 1..6; item 6 has no factor: 0
    assert got.tolist() == pytest.approx(want)


def test_ranks_break_ties_by_tiebreak_then_row():
    # 100 corpus rows; row 7 scores 2, row 9 scores 1, every other row 0.
    scores = np.zeros(101)
    scores[7], scores[9] = 2.0, 1.0
    tiebreak = np.zeros(101)
    tiebreak[[60, 70]] = 5.0  # beat a zero-score positive with tiebreak 3
    tiebreak[[20, 50, 80]] = 3.0  # 20 (lower row) beats 50; 80 does not
    corpus = np.arange(1, 101)

    def fn(sl, cols):
        return np.broadcast_to(scores[cols], (sl.stop - sl.start, len(cols)))

    pos = np.array([50, 7, 9, 60, 70, 20, 1, 0])
    ranks = ranks_from_scores(fn, len(pos), pos, corpus, tiebreak, chunk=3)
    # 50: 7 and 9 (higher score) + 60 and 70 (higher tiebreak) + 20 (same tiebreak, lower row) = 5, not 0.
    # 1: tiebreak 0 like 94 other zero-score rows, of which none has a lower row: behind 2+2+3 = 7.
    # 0 (not in the corpus, score 0, tiebreak 0): behind 7, 9, 60, 70, 20, 50, 80 and rows 1..100 with
    # tiebreak 0 and a lower row than 0: none -> 7.
    assert ranks.tolist() == [5, 0, 1, 2, 3, 4, 7, 7]
    # top_lists serves the same total order: a corpus row's rank is its position in the full list.
    full = rows(top_lists(fn, 1, corpus, tiebreak, budget=100))[0]
    assert full[:8] == [7, 9, 60, 70, 20, 50, 80, 1]
    assert all(full.index(p) == r for p, r in zip(pos[:7], ranks[:7]))
    assert rows(top_lists(fn, 4, corpus, tiebreak, budget=3, chunk=3)) == [[7, 9, 60]] * 4


def test_top_lists_cut_at_the_budget_are_the_full_orders_first_rows():
    # Many ties and -inf rows: the partial selection must keep the total order (score desc, tiebreak desc, row).
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, (7, 60)).astype(float)
    scores[rng.random((7, 60)) < 0.2] = -np.inf
    tb = rng.integers(0, 3, 61).astype(float)
    corpus = np.arange(1, 61)
    fn = lambda sl, cols: scores[sl][:, cols - 1]  # noqa: E731
    want = [sorted((c for c in corpus if scores[r, c - 1] > -np.inf), key=lambda c: (-scores[r, c - 1], -tb[c], c))
            for r in range(7)]
    for budget in (1, 5, 17, 59, 60, 100):
        assert rows(top_lists(fn, 7, corpus, tb, budget=budget, chunk=3)) == [w[:budget] for w in want]


def test_ranks_and_lists_skip_minus_inf_and_nan():
    scores = np.array([0.0, 1.0, -np.inf, np.nan, 0.5])
    fn = lambda sl, cols: np.broadcast_to(scores[cols], (sl.stop - sl.start, len(cols)))  # noqa: E731
    tb = np.zeros(5)
    assert rows(top_lists(fn, 1, np.arange(1, 5), tb, budget=10)) == [[1, 4]]
    # a -inf positive still gets a place: behind 1 and 4, ahead of row 3 (NaN = -inf, higher row)
    assert ranks_from_scores(fn, 2, np.array([2, 3]), np.arange(1, 5), tb).tolist() == [2, 3]


def test_popularity_ranks_by_train_count():
    cat = catalog()
    pop = Popularity(COUNTS)
    rec = Records(n=2)
    # counts 1:5 3:4 2:3 4:3 5:1 6:0 -> 1, 3, then 2 and 4 (tie: lower row 2), 5, 6
    assert rows(top_lists(bind(pop, rec), 2, ALL, COUNTS, budget=6)) == [[1, 3, 2, 4, 5, 6]] * 2
    assert ranks_from_scores(bind(pop, Records(n=6)), 6, ALL, ALL, COUNTS).tolist() == [0, 2, 1, 3, 4, 5]
    assert cat.n_rows == 7


def test_itemknn_sum_and_max():
    cat = catalog()
    sim = neighbor_matrix(neighbors_table(), cat)
    assert sim.shape == (7, 7) and sim.nnz == sum(len(v) for v in EXPECTED.values())
    # history [1, 3] (+ an unused slot on 5 and an empty slot 0); S rows: 1 -> {2: 2/3, 3: 1/sqrt6},
    # 3 -> {2: 2/sqrt6, 4: 1/2, 1: 1/sqrt6}; item 1 appearing twice counts once.
    rec = Records(hist_rows=np.array([[0, 1, 5, 3, 1], [0, 0, 0, 0, 0]]),
                  use=np.array([[False, True, False, True, True], [False] * 5]))
    s = ItemKNN(sim, "sum").score(rec, ALL)
    assert s[0] == pytest.approx([1 / R6, 2 / 3 + 2 / R6, 1 / R6, 1 / 2, 0.0, 0.0])
    assert s[1].tolist() == [0.0] * 6  # no history: nothing scores
    m = ItemKNN(sim, "max").score(rec, ALL)
    assert m[0] == pytest.approx([1 / R6, 2 / R6, 1 / R6, 1 / 2, 0.0, 0.0])
    # served list for record 0 (tiebreak = counts): 2, 4, then 1 vs 3 tie at 1/sqrt6 -> count 5 beats 4,
    # then the zero-score rest by count: 5 (1) before 6 (0)
    assert rows(top_lists(bind(ItemKNN(sim, "sum"), rec), 2, ALL, COUNTS, budget=6))[0] == [2, 4, 1, 3, 5, 6]
    # a positive scoring 0 does not rank 0: positive 6 (count 0) is behind every other item
    assert ranks_from_scores(bind(ItemKNN(sim, "max"), rec), 2, np.array([6, 6]), ALL, COUNTS).tolist() == [5, 5]
    # candidate columns that are a subset: same values
    assert ItemKNN(sim, "sum").score(rec, np.array([2, 4]))[0] == pytest.approx([2 / 3 + 2 / R6, 1 / 2])


def test_collaborative_baselines_read_engaged_items_without_features():
    """Defect: the baselines read the history through hist_valid, which also drops items without a pretrained
    embedding, so on a data set without pretrained embeddings item-kNN and ALS saw no history at all and scored
    exactly as popularity. They read every engaged item but the negative (hidden) ones."""
    from mer.stages.model.data import make_batch

    cat = catalog()
    ts = pa.array([0], type=pa.timestamp("us"))
    table = pa.table({
        "event_id": ["a"], "user_id": [1], "item_id": [2], "event_ts": ts,
        # item 5 has no pretrained embedding (hist_valid False, yet engaged); item 4 was hidden
        "hist_item_ids": [[5, 4, 1]], "hist_ts": pa.array([[0, 0, 0]], type=pa.list_(pa.timestamp("us"))),
        "hist_valid": [[False, False, True]], "hist_actions": [["click", "hide", "save"]],
        "condition_id": pa.array([None], type=pa.int64()), "segment": ["core"]})
    b = make_batch(table, cat, 4)
    assert b.use.tolist() == [[False, False, False, True]]  # what the towers and PinnerSage read: unchanged
    assert b.engaged.tolist() == [[False, True, False, True]]
    rec = Records.from_batch(b)
    sim = neighbor_matrix(neighbors_table(), cat)
    # history {5, 1}: S rows 5 -> {6: 1/sqrt2, 4: 1/2}, 1 -> {2: 2/3, 3: 1/sqrt6}; the hidden 4 adds nothing
    assert ItemKNN(sim, "sum").score(rec, ALL)[0] == pytest.approx([0.0, 2 / 3, 1 / R6, 1 / 2, 0.0, 1 / S2])
    # the pretrained rule skips the featureless 5 itself: cosine to item 1's unit vector (1, 0)
    assert Pretrained(cat, "mean").score(rec, ALL)[0] == pytest.approx([1.0, 0.0, 1 / S2, -1.0, 0.0, 0.6])
    # a batch built from rows without hist_actions keeps the hist_valid slots
    assert Records.from_batch(make_batch(table.drop_columns(["hist_actions"]), cat, 4)).use.tolist() == b.use.tolist()


def test_pretrained_mean_and_max():
    cat = catalog()
    # history [1, 2] + missing item 5 (left out): unit vectors (1,0), (0,1); mean -> (1,1)/sqrt2
    rec = Records(hist_rows=np.array([[1, 2, 5], [0, 0, 0], [5, 0, 0]]), use=np.ones((3, 3), bool))
    mean = Pretrained(cat, "mean").score(rec, ALL)
    # cos with 1: 1/sqrt2, 2: 1/sqrt2, 3 (unit (1,1)/sqrt2): 1, 4: -1/sqrt2, 5 (missing): 0, 6 (0.6,0.8): 1.4/sqrt2
    assert mean[0] == pytest.approx([1 / S2, 1 / S2, 1.0, -1 / S2, 0.0, 1.4 / S2])
    assert mean[1].tolist() == [0.0] * 6 and mean[2].tolist() == [0.0] * 6  # no usable history
    mx = Pretrained(cat, "max").score(rec, ALL)
    # max over {1, 2}: 1 -> 1, 2 -> 1, 3 -> 1/sqrt2, 4 -> max(-1, 0) = 0, 5 -> 0, 6 -> max(0.6, 0.8)
    assert mx[0] == pytest.approx([1.0, 1.0, 1 / S2, 0.0, 0.0, 0.8])
    assert mx[1].tolist() == [0.0] * 6
    # mean's served list: 3, 6, then 1 and 2 tie at 1/sqrt2 -> count 5 (item 1) first, 5, then 4
    assert rows(top_lists(bind(Pretrained(cat, "mean"), rec), 1, ALL, COUNTS, budget=6)) == [[3, 6, 1, 2, 5, 4]]


def test_pretrained_max_blocks_many_records(monkeypatch):
    import mer.stages.model.baselines as mb

    monkeypatch.setattr(mb, "PAIR_BLOCK", 3)  # several matmul blocks, record boundaries respected
    cat = catalog()
    rng = np.random.default_rng(0)
    hist = rng.integers(0, 7, size=(40, 4))
    rec = Records(hist_rows=hist, use=np.ones_like(hist, bool))
    got = Pretrained(cat, "max").score(rec, ALL)
    u = np.asarray(cat.pre, np.float64)  # unit (test_catalog_pretrained_embeddings_are_unit_length)
    for b in range(40):
        h = [r for r in set(hist[b].tolist()) if r > 0 and cat.missing[r] == 0]
        want = np.max(u[h] @ u[ALL].T, axis=0) if h else np.zeros(6)
        assert got[b] == pytest.approx(want)


def test_inverted_index_condition_and_followed_round_robin():
    cat = catalog()
    inv = InvertedIndex.from_catalog(cat, COUNTS)
    # lists: 100 -> [1 (5), 2 (3), 4 (3)] (2 before 4: same count, lower row); 200 -> [3 (4), 2 (3), 5 (1)]; 300 -> [6]
    served = {(r["topic_id"], r["rank"]): (r["item_id"], r["count"]) for r in inv.to_table(cat).to_pylist()}
    assert served == {(100, 1): (1, 5), (100, 2): (2, 3), (100, 3): (4, 3), (200, 1): (3, 4), (200, 2): (2, 3),
                      (200, 3): (5, 1), (300, 1): (6, 0)}
    # condition topic 100 (vocab index + 1 = 1), 300 (= 3), none (0)
    cond = np.array([1, 3, 0])
    s = inv.score_condition(cond, ALL)
    ninf = -np.inf
    assert s.tolist() == [[5, 3, ninf, 3, ninf, ninf], [ninf] * 5 + [0], [ninf] * 6]
    assert rows(top_lists(bind(inv, Records(cond=cond)), 3, ALL, COUNTS, budget=10)) == [[1, 2, 4], [6], []]
    # followed {100, 200}: best positions 1 -> 1, 3 -> 1, 2 -> 2 (in both), 4 -> 3, 5 -> 3, 6 -> none
    # round robin: position 1 of each list (1 before 3: count 5 > 4), position 2 (2 once), position 3 (4, then 5)
    followed = [np.array([1, 2]), np.array([2]), np.array([], dtype=np.int64)]
    f = inv.score_followed(followed, ALL)
    assert f[0].tolist() == [-1, -2, -1, -3, -3, ninf]
    assert rows(top_lists(bind(inv, Records(followed=followed)), 3, ALL, COUNTS, budget=10)) == [
        [1, 3, 2, 4, 5], [3, 2, 5], []]
    assert rows(top_lists(bind(inv, Records(followed=followed)), 1, ALL, COUNTS, budget=4)) == [[1, 3, 2, 4]]
    # positive 6 is in no followed list: ranked behind every servable item and the -inf items with more count
    assert ranks_from_scores(bind(inv, Records(followed=followed)), 1, np.array([6]), ALL, COUNTS).tolist() == [5]


def test_fit_and_load_every_baseline(cfg):
    cat = catalog()
    ds = "2026-01-15"
    items = pa.table({
        "item_id": [1, 2, 3, 4, 5, 6],
        "pretrained_embedding": [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [-1.0, 0.0], None, [3.0, 4.0]],
        "category_id": [1, 1, 2, 2, 3, 3], "creator_id": [10, 11, 12, 13, 14, 15],
        "topic_ids": [[100], [100, 200], [200], [100], [200], [300]],
        "topic_scores": [[1.0], [0.5, 0.5], [1.0], [1.0], [1.0], [1.0]],
    }, schema=ITEM_FEATURES)
    write_partition(cfg.raw_table("item_features"), ds, items)
    write_partition(cfg.raw_table("topics"), ds, pa.table({"topic_id": [100, 200, 300], "name": ["a", "b", "c"]},
                                                          schema=TOPICS))
    freq = pa.table({"item_id": [1, 2, 3, 4, 5], "count": [5, 3, 4, 3, 1],
                     "prob": [5 / 16, 3 / 16, 4 / 16, 3 / 16, 1 / 16]}, schema=DERIVED_TABLES["item_frequency"])
    write_partition(cfg.table("item_frequency"), ds, freq)
    write_partition(cfg.table("item_neighbors"), ds, neighbors_table())
    write_partition(cfg.table("item_factors"), ds, FACTORS)

    rec = Records(hist_rows=np.array([[1, 3], [2, 0]]), use=np.ones((2, 2), bool), cond=np.array([2, 1]),
                  followed=[np.array([1, 3]), np.array([2])])
    direct = {
        "popularity": Popularity(COUNTS),
        "itemknn-sum": ItemKNN(neighbor_matrix(neighbors_table(), cat), "sum"),
        "itemknn-max": ItemKNN(neighbor_matrix(neighbors_table(), cat), "max"),
        "pretrained-mean": Pretrained(cat, "mean"),
        "pretrained-max": Pretrained(cat, "max"),
        "inverted": InvertedIndex.from_catalog(cat, COUNTS),
        "als": Pretrained(cat, "mean", space=factor_space(FACTORS, cat)),
    }
    for model, variant, name, artifact in [
        ("popularity", None, "popularity", "popularity.parquet"),
        ("itemknn", "sum", "itemknn-sum", "neighbors.parquet"),
        ("itemknn", "max", "itemknn-max", "neighbors.parquet"),
        ("pretrained", "mean", "pretrained-mean", None),
        ("pretrained", "max", "pretrained-max", None),
        ("inverted", None, "inverted", "topic_items.parquet"),
        ("als", None, "als", "factors.parquet"),
    ]:
        out = fit_baseline(cfg, ds, model, variant)
        folder = cfg.run_dir(ds) / "models" / name
        assert out["dir"] == str(folder)
        conf = json.loads((folder / "config.json").read_text())
        assert {k: conf[k] for k in ("model", "variant", "name", "ds", "model_version", "kind")} == {
            "model": model, "variant": variant, "name": name, "ds": ds, "model_version": f"{name}-{ds}",
            "kind": "baseline"}
        files = sorted(p.name for p in folder.iterdir())
        assert files == sorted(["config.json"] + ([artifact] if artifact else [])), name
        loaded = load_baseline(folder, cat)
        assert loaded.name == name and loaded.config == conf
        assert np.array_equal(loaded.score(rec, ALL), direct[name].score(rec, ALL)), name
    assert json.loads((cfg.run_dir(ds) / "models" / "pretrained-mean" / "config.json").read_text())[
        "space"] == "pretrained_embedding"
    import pyarrow.parquet as pq

    pop = pq.read_table(cfg.run_dir(ds) / "models" / "popularity" / "popularity.parquet").to_pylist()
    assert [(r["item_id"], r["count"], r["rank"]) for r in pop] == [(1, 5, 1), (3, 4, 2), (2, 3, 3), (4, 3, 4),
                                                                      (5, 1, 5)]
    nb = pq.read_table(cfg.run_dir(ds) / "models" / "itemknn-sum" / "neighbors.parquet")
    assert nb.equals(neighbors_table())
    # a re-fit replaces the folder atomically and leaves no temporary folder behind
    fit_baseline(cfg, ds, "popularity")
    assert not [p for p in (cfg.run_dir(ds) / "models").iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match="known"):
        fit_baseline(cfg, ds, "itemknn", "mean")
