"""item_factors (implicit ALS, Spark MLlib) and the towers' id embeddings that start from it."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from mer.base.contract import DERIVED_TABLES, ITEM_FACTORS
from mer.base.io import read_partition
from mer.stages.model.train import init_id_embeddings, row_conditions
from mer.stages.model.tower_spec import TowerSpec
from tests.raw_fixture import DS, built_small  # noqa: F401 (fixture)
from tests.test_baselines import catalog as baseline_catalog
from tests.test_baselines import examples_frame

# Two communities that never meet: users 1-4 engage items 1-3, users 5-8 items 4-6. Item 9 appears only on the
# validation day and item 10 only on the eval day: neither may get a factor (the factors are a train-split fit).
COMMUNITIES = [(u, i, m, "train") for u in (1, 2, 3, 4) for m, i in enumerate((1, 2, 3))]
COMMUNITIES += [(u, i, m, "train") for u in (5, 6, 7, 8) for m, i in enumerate((4, 5, 6))]
COMMUNITIES += [(1, 9, 10, "val"), (5, 10, 10, "eval")]


def _factors(spark, log, **kw):
    from mer.stages.spark_jobs.item_factors import item_factors

    args = dict(rank=4, reg=0.1, alpha=10.0, max_iter=10, seed=13) | kw
    rows = item_factors(examples_frame(spark, log), **args).toArrow()
    return {r["item_id"]: np.asarray(r["factors"], dtype=np.float64) for r in rows.to_pylist()}, rows


def _cos(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.spark
def test_als_factors_put_co_engaged_items_together(spark):
    f, table = _factors(spark, COMMUNITIES)
    assert table.schema.names == ITEM_FACTORS.names
    assert set(f) == {1, 2, 3, 4, 5, 6}  # no factor for the val-only (9) or eval-only (10) item
    assert all(len(v) == 4 for v in f.values())
    within = [_cos(f[a], f[b]) for a, b in ((1, 2), (1, 3), (2, 3), (4, 5), (4, 6), (5, 6))]
    across = [_cos(f[a], f[b]) for a in (1, 2, 3) for b in (4, 5, 6)]
    assert min(within) > 0.9, within
    assert max(across) < min(within) - 0.5, (within, across)
    again, _ = _factors(spark, COMMUNITIES)  # seeded: the same rows give the same factors
    assert all(np.allclose(f[i], again[i]) for i in f)


@pytest.mark.spark
def test_als_without_train_rows_writes_no_factors(spark):
    f, table = _factors(spark, [(1, 1, 0, "val"), (2, 1, 1, "eval")])
    assert f == {} and table.num_rows == 0


@pytest.mark.spark
def test_build_writes_item_factors_for_every_train_item(built_small):
    cfg, summary = built_small
    table = read_partition(cfg.table("item_factors"), DS)
    assert table.schema.names == DERIVED_TABLES["item_factors"].names
    assert summary["item_factors"] == table.num_rows
    ex = read_partition(cfg.table("training_examples"), DS, columns=["item_id", "split"]).to_pylist()
    assert set(table.column("item_id").to_pylist()) == {r["item_id"] for r in ex if r["split"] == "train"}
    assert {len(v) for v in table.column("factors").to_pylist()} == {cfg.build.als_rank}


def test_id_embeddings_start_from_factors_at_the_random_init_scale():
    torch.manual_seed(0)
    weight = torch.randn(4, 2) * 0.1  # row 0 = outside the vocabulary; rows 1..3 = vocab ids 10, 20, 30
    before = weight.clone()
    vocab = np.array([10, 20, 30])
    factors = (np.array([20, 30, 40]), np.array([[3.0, 4.0, 9.0], [0.0, 1.0, 9.0], [1.0, 1.0, 1.0]], np.float32))
    assert init_id_embeddings(weight, vocab, factors) == 2
    # width 2: the factors are cut to [3, 4] and [0, 1] (norms 5 and 1, mean 3); target mean norm 0.1 * sqrt(2)
    s = 0.1 * math.sqrt(2) / 3
    assert weight[2].tolist() == pytest.approx([3 * s, 4 * s])
    assert weight[3].tolist() == pytest.approx([0.0, s])
    assert torch.equal(weight[:2], before[:2])  # id 10 has no factor: its random row stays; row 0 untouched
    assert init_id_embeddings(weight, vocab, None) == 0


def test_cr_source_keeps_logged_conditions_and_samples_the_rest():
    # test_baselines' catalog: item 1 has topic 100 only, item 3 topic 200 only, item 6 topic 300 only.
    catalog = baseline_catalog()
    table = pa.table({"item_id": [1, 3, 6], "condition_id": pa.array([None, 300, None], pa.int64())})
    rng = np.random.default_rng(0)
    assert row_conditions(TowerSpec(condition="logged_or_item"), table, catalog, rng).tolist() == [100, 300, 300]
    assert row_conditions(TowerSpec(condition="item"), table, catalog, rng).tolist() == [100, 200, 300]
    assert row_conditions(TowerSpec(condition="logged"), table, catalog, rng) is None  # the logged ones, as read
    assert row_conditions(TowerSpec(), table, catalog, rng) is None


def test_cr_source_draws_item_topics_only_for_rows_without_a_logged_condition():
    # Drawing a topic for every row and then keeping the logged one wasted a draw per logged row (and tied the
    # draws of the unlogged rows to how many logged rows came before them).
    catalog = baseline_catalog()
    logged = pa.table({"item_id": [1, 3, 6], "condition_id": pa.array([200, 300, 100], pa.int64())})
    rng = np.random.default_rng(0)
    assert row_conditions(TowerSpec(condition="logged_or_item"), logged, catalog, rng).tolist() == [200, 300, 100]
    assert rng.random() == np.random.default_rng(0).random()  # no draw was taken
    mixed = pa.table({"item_id": [1, 3, 6], "condition_id": pa.array([200, None, 100], pa.int64())})
    rng = np.random.default_rng(0)
    assert row_conditions(TowerSpec(condition="logged_or_item"), mixed, catalog, rng).tolist() == [200, 200, 100]
    fresh = np.random.default_rng(0)
    fresh.random()  # exactly one draw: the unlogged row's
    assert rng.random() == fresh.random()
