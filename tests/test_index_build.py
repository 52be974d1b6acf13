"""Index sizing rules, shard layout, shard build + tuning, and the recall gate (real FAISS)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mer.base.errors import GateError, MerError
from mer.stages.index import build, layout, recall, sizing
from mer.stages.index.search import load_model_shards, search_shards
from mer.stages.index.shards import assign_shards, stable_hash
from tests import item_tower_fixture as fx

DS = "2026-01-15"
pytestmark = pytest.mark.usefixtures("towers_env")


# ---------------------------------------------------------------- sizing rules
def test_auto_picks_flat_for_small_shards():
    assert sizing.auto_index_key(5_000, 64, 512) == "Flat"


def test_auto_picks_ivf_flat_when_codes_fit():
    n = 500_000
    assert sizing.nb_clusters(n) == int(4 * np.sqrt(n))
    assert sizing.auto_index_key(n, 64, 512) == f"IVF{int(4 * np.sqrt(n))},Flat"


def test_auto_picks_pq_when_flat_codes_exceed_budget():
    # 1M x 64 float codes are 264 MB with ids; 64 MB forces compression: 1M * (m + 8) <= 64 MiB -> m = 32.
    key = sizing.auto_index_key(1_000_000, 64, 64)
    assert key == "IVF4000,PQ32"
    assert sizing.auto_index_key(1_000_000, 64, 512, prefer_hnsw=True) == "HNSW32,Flat"


def test_nlist_capped_by_training_points_and_budget_too_small_is_clear():
    assert sizing.nb_clusters(25_000) == 25_000 // 39 or sizing.nb_clusters(25_000) == int(4 * np.sqrt(25_000))
    assert sizing.nb_clusters(100) == 2
    with pytest.raises(MerError, match="memory_budget_mb"):
        sizing.auto_index_key(10_000_000, 64, 1)


# ---------------------------------------------------------------- shard layout
def test_stable_hash_is_splitmix64():
    # splitmix64 reference: first output for state 0 is 0xE220A8397B1DCDAF.
    assert int(stable_hash(np.array([0]))[0]) == 0xE220A8397B1DCDAF
    ids = np.arange(10_000)
    a = assign_shards(ids, 4)
    assert np.array_equal(a, assign_shards(ids.copy(), 4))
    counts = np.bincount(a, minlength=4)
    assert counts.min() > 2_300 and counts.max() < 2_700


# ---------------------------------------------------------------- build + recall gate
def _set(cfg, **kw):
    cfg.index = cfg.index.model_copy(update=kw)


def test_build_all_shards_ids_round_trip_and_merged_recall(cfg):
    _set(cfg, shards=2, index_key="IVF16,Flat", recall_k=20, recall_queries=200, build_workers=2)
    data = fx.write_item_embeddings(cfg, DS, n=3000, dim=16)
    out = build.run(cfg, DS)
    assert set(out) == {"dcm", "cr"}
    folder = layout.model_index_dir(cfg, DS, "dcm")
    info, shards = load_model_shards(folder)
    assert info["n_items"] == 3000 and info["metric"] == "inner_product" and info["dim"] == 16
    assert [sh.meta["key"] for sh in shards] == ["IVF16,Flat", "IVF16,Flat"]
    assert all(sh.meta["params"]["nprobe"] >= 1 and sh.meta["target_met"] for sh in shards)

    ids, vec = data["dcm"]
    stored = np.sort(np.concatenate([np.load(folder / sh.meta["ids_file"]) for sh in shards]))
    assert np.array_equal(stored, np.sort(ids))
    # Each item found by its own vector returns its own id (ids kept with the vectors, not positions).
    _, got = search_shards(shards, vec[:50], 1)
    assert (got[:, 0] == ids[:50]).mean() >= 0.95

    rep = recall.run(cfg, DS)
    assert rep["passed"] and json.loads(layout.recall_path(cfg, DS).read_text())["passed"]
    dcm = rep["models"]["dcm"]
    assert set(dcm["shards"]) == {"shard-00000", "shard-00001"}
    assert dcm["query_source"].startswith("user_embeddings")

    # Merged shards recall equals one index over all items within tolerance.
    single = cfg.model_copy(deep=True)
    single.root = cfg.root.parent / "single"
    _set(single, shards=1, index_key="IVF16,Flat", recall_k=20, recall_queries=200, build_workers=1)
    fx.write_item_embeddings(single, DS, n=3000, dim=16)
    build.run(single, DS)
    one = recall.run(single, DS)["models"]["dcm"]["merged"]
    assert abs(dcm["merged"] - one) <= 0.03


def test_auto_flat_for_tiny_and_pq_under_small_budget(cfg):
    _set(cfg, shards=2, index_key="auto", recall_k=10, recall_queries=50, build_workers=1)
    fx.write_item_embeddings(cfg, DS, n=2000, dim=16)
    out = build.run(cfg, DS, shard=0)
    assert out["dcm"]["built"]["shard-00000"]["key"] == "Flat"
    assert out["dcm"]["built"]["shard-00000"]["recall_heldout"] == 1.0
    assert not (layout.model_index_dir(cfg, DS, "dcm") / "shard-00001.faiss").exists()

    _set(cfg, memory_budget_mb=0.05)  # 25 KB per shard: ~1000 x (16*4 + 8) B float codes do not fit
    out = build.run(cfg, DS, shard=1)  # one shard: PQ codebook training is the slow part
    key = out["dcm"]["built"]["shard-00001"]["key"]
    assert key.startswith("IVF") and ",PQ" in key


def test_recall_gate_fails_naming_shard(cfg):
    _set(cfg, shards=2, index_key="IVF8,PQ2", recall_k=20, recall_queries=60, build_workers=1, recall_target=0.99)
    fx.write_item_embeddings(cfg, DS, n=2000, dim=16)
    build.run(cfg, DS)
    with pytest.raises(GateError, match=r"dcm/shard-0000[01]: recall@20=0\.\d+ < 0\.99"):
        recall.run(cfg, DS)
    assert json.loads(layout.recall_path(cfg, DS).read_text())["passed"] is False


def test_build_one_shard_out_of_range_and_missing_inference(cfg):
    with pytest.raises(MerError, match="mer infer"):
        build.run(cfg, DS)
    _set(cfg, shards=2)
    fx.write_item_embeddings(cfg, DS, n=200, dim=16)
    with pytest.raises(MerError, match="shard 5 is outside 0..1"):
        build.run(cfg, DS, shard=5)
