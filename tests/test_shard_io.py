"""Shard-local I/O (issue 11): item_embeddings bucketed by shard, a shard build reads only its bucket,
the recall gate streams shards, and the index is tuned on validation-day user embeddings (real FAISS)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mer.base.errors import ContractError
from mer.base.io import partition_dir, read_partition, write_partition
from mer.stages.index import build, layout, recall
from mer.stages.index.queries import recall_queries, tuning_queries
from mer.stages.index.search import TopK
from mer.stages.index.shards import assign_shards, bucket_paths, load_bucket
from tests import item_tower_fixture as fx

DS = "2026-01-15"


@pytest.fixture
def cfg(cfg):
    cfg.index = cfg.index.model_copy(update=dict(serving_module="tests.item_tower_fixture"))
    return cfg


def _set(cfg, **kw):
    cfg.index = cfg.index.model_copy(update=kw)


# ---------------------------------------------------------------- the layout
def test_partition_is_bucketed_and_still_one_table(cfg):
    _set(cfg, shards=3)
    data = fx.write_item_embeddings(cfg, DS, n=900, dim=16)
    ids = data["dcm"][0]
    part = partition_dir(cfg.table("item_embeddings"), DS)
    for s in range(3):
        got = pq.read_table(bucket_paths(part, s, 3)).column("item_id").to_numpy()
        assert set(got) == set(ids[assign_shards(ids, 3) == s])  # each bucket file holds exactly its shard
    # The partition reads as the whole table for every other reader (quality gate, Spark, DuckDB).
    assert read_partition(cfg.table("item_embeddings"), DS).num_rows == 2 * 900


def test_build_of_one_shard_reads_only_its_bucket(cfg):
    _set(cfg, shards=3, index_key="Flat", recall_k=10, recall_queries=40, build_workers=1)
    data = fx.write_item_embeddings(cfg, DS, n=1500, dim=16)
    part = partition_dir(cfg.table("item_embeddings"), DS)
    # Every other bucket's files become unreadable: a build that opened them would fail.
    for s in (0, 2):
        for f in bucket_paths(part, s, 3):
            f.write_bytes(b"not parquet")
    out = build.run(cfg, DS, shard=1)

    ids = data["dcm"][0]
    bucket = ids[assign_shards(ids, 3) == 1]
    meta = out["dcm"]["built"]["shard-00001"]
    assert meta["n"] == len(bucket)  # the rows it loaded are its bucket, nothing else
    stored = np.load(layout.model_index_dir(cfg, DS, "dcm") / meta["ids_file"])
    assert np.array_equal(np.sort(stored), np.sort(bucket))


def test_build_under_another_shard_count_is_refused(cfg):
    _set(cfg, shards=2)
    fx.write_item_embeddings(cfg, DS, n=300, dim=16)
    _set(cfg, shards=3, index_key="Flat")
    with pytest.raises(ContractError, match=r"item_embeddings: partition ds=2026-01-15 is bucketed for \[2\] shards, "
                                            r"index.shards=3; re-run `mer infer --ds 2026-01-15`"):
        build.run(cfg, DS, shard=0)


def test_unbucketed_partition_is_refused(cfg):
    fx.write_item_embeddings(cfg, DS, n=300, dim=16)
    table = read_partition(cfg.table("item_embeddings"), DS)
    write_partition(cfg.table("item_embeddings"), DS, table)  # part-00000.parquet: not bucketed
    with pytest.raises(ContractError, match=r"bucketed for no shards, index.shards=2"):
        load_bucket(cfg, DS, "dcm-2026-01-15-fx", 0, 2)


# ---------------------------------------------------------------- streamed exact top-K
def test_streamed_exact_topk_equals_all_in_memory():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    ids = rng.choice(10**9, 3000, replace=False).astype(np.int64)
    q = rng.normal(size=(50, 16)).astype(np.float32)
    k = 25
    # Known answer, without FAISS: brute-force inner products over all vectors at once.
    order = np.argsort(-(q @ x.T), axis=1)[:, :k]
    want_ids, want_scores = ids[order], np.take_along_axis(q @ x.T, order, 1)

    top = TopK(len(q), k)
    shard = assign_shards(ids, 4)
    for s in range(4):  # one bucket at a time, as the recall gate reads them
        top.add(*build.exact_topk(x[shard == s], ids[shard == s], q, k))
    scores, got = top.result()
    assert np.array_equal(got, want_ids)
    assert np.allclose(scores, want_scores, atol=1e-4)
    # A bucket smaller than k pads with id -1 / score -inf, which never displaces a real neighbour.
    small = TopK(len(q), k)
    small.add(*build.exact_topk(x[:5], ids[:5], q, k))
    s_small, i_small = small.result()
    assert (i_small[:, 5:] == -1).all() and np.isneginf(s_small[:, 5:]).all()


def test_recall_gate_streams_shards_and_checks_each_bucket(cfg):
    _set(cfg, shards=3, index_key="Flat", recall_k=10, recall_queries=40, build_workers=1)
    fx.write_item_embeddings(cfg, DS, n=1200, dim=16)
    build.run(cfg, DS)
    rep = recall.run(cfg, DS)["models"]["dcm"]
    # Flat shards are exact: every shard and the merged top-k must equal exact search.
    assert rep["merged"] == 1.0 and all(s["recall"] == 1.0 for s in rep["shards"].values())
    assert sum(s["n"] for s in rep["shards"].values()) == 1200

    # A shard whose ids do not match its bucket is named.
    folder = layout.model_index_dir(cfg, DS, "dcm")
    ids_file = layout.shard_paths(folder, 2)["ids"]
    np.save(ids_file, np.load(ids_file)[:-1])
    with pytest.raises(ContractError, match=r"index dcm/shard-00002: shard item ids \(\d+\) do not match its bucket"):
        recall.run(cfg, DS)


# ---------------------------------------------------------------- tuning on the gate's kind of query
def _write_splits(cfg, val_users, eval_users):
    """The two columns of training_examples the query selection reads."""
    users = list(val_users) + list(eval_users)
    splits = ["val"] * len(val_users) + ["eval"] * len(eval_users)
    write_partition(cfg.table("training_examples"), DS, pa.table({"user_id": pa.array(users, pa.int64()), "split": splits}))


def test_index_is_tuned_on_validation_user_embeddings_and_passes_its_gate(cfg):
    _set(cfg, shards=2, index_key="IVF16,Flat", recall_k=20, recall_queries=300, build_workers=1)
    fx.write_item_embeddings(cfg, DS, n=3000, dim=16)
    val_users, eval_users = range(0, 60), range(1000, 1060)
    _write_splits(cfg, val_users, eval_users)

    out = build.run(cfg, DS)
    info = json.loads((layout.model_index_dir(cfg, DS, "dcm") / "index.json").read_text())
    assert info["tuning"]["query_source"] == "user_embeddings:val"
    assert info["tuning"]["queries"] == 60 * fx.K["dcm"]  # every val user's K embeddings
    assert all(m["tune_queries"] + m["heldout_queries"] == 60 * fx.K["dcm"] for m in out["dcm"]["built"].values())

    # Known answer: the tuning queries are the val users' validation-day embeddings, none of an eval user's.
    version = info["model_version"]
    q, _ = tuning_queries(cfg, DS, "dcm", version, 300, seed=cfg.train.seed)
    val_emb = np.concatenate([r["embeddings"] for r in fx.user_embeddings(cfg, DS, "dcm", list(val_users), split="val").values()])
    assert np.allclose(np.sort(q, axis=0), np.sort(val_emb / np.linalg.norm(val_emb, axis=1, keepdims=True), axis=0), atol=1e-6)
    gate_q, source = recall_queries(cfg, DS, "dcm", version, 300, seed=cfg.train.seed + 1)
    assert source == "user_embeddings:eval"
    assert np.abs(q @ gate_q.T).max() < 1 - 1e-4  # no query shared with the gate

    rep = recall.run(cfg, DS)
    assert rep["passed"], rep["failures"]
    assert rep["models"]["dcm"]["query_source"] == "user_embeddings:eval"


def test_tuning_falls_back_to_items_only_without_user_queries(cfg):
    _set(cfg, shards=2, index_key="Flat", recall_k=10, recall_queries=40, build_workers=1)
    fx.write_item_embeddings(cfg, DS, n=600, dim=16)
    _write_splits(cfg, [], range(1000, 1010))  # no val users that day
    out = build.run(cfg, DS)
    info = json.loads((layout.model_index_dir(cfg, DS, "dcm") / "index.json").read_text())
    assert info["tuning"]["query_source"] == "items(no val user embeddings)"
    assert info["tuning"]["queries"] == 40
    assert out["dcm"]["built"]["shard-00000"]["recall_tuning"] == 1.0
