"""Reader client against a real publish on moto's S3 server: verify, load shards, served merge."""
from __future__ import annotations

import numpy as np
import pytest

from mer.base.errors import MerError, StorageError
from mer.stages.index import merge, publish
from mer.stages.index.reader import PublishedIndex, query_user
from mer.stages.index.search import load_model_shards, search_shards
from mer.stages.index.storage import Store
from tests import item_tower_fixture as fx

DS = "2026-01-15"
pytestmark = pytest.mark.usefixtures("towers_env")


@pytest.fixture
def published(cfg, s3_env):
    fx.prepared_run(cfg, DS)
    publish.run(cfg, DS, "r1")
    return cfg


# ---------------------------------------------------------------- pure served merge
def test_split_budget_is_proportional_and_exact():
    assert merge.split_budget([0.5, 0.3, 0.2], 10) == [5, 3, 2]
    assert merge.split_budget([1, 1, 1], 10) == [4, 3, 3]
    assert sum(merge.split_budget([0.7, 0.2, 0.1], 7)) == 7


def test_round_robin_dedups_and_respects_budgets():
    lists = [[1, 2, 3, 4], [2, 5, 6, 7], [1, 8, 9]]
    assert merge.round_robin(lists, [2, 1, 1], 4) == [(1, 0), (2, 1), (8, 2), (3, 0)]
    # Budgets exhausted early by duplicates: the rest is filled round-robin.
    assert [i for i, _ in merge.round_robin([[1, 2], [1, 2], [3]], [1, 1, 1], 3)] == [1, 2, 3]


def test_embedding_weights_importance_vs_equal():
    w = merge.embedding_weights(["dcm", "dcm", "cr", "cr"], [0.75, 0.25, 1, 1], [False, False, True, True])
    assert np.allclose(w, [0.375, 0.125, 0.25, 0.25])


# ---------------------------------------------------------------- against the server
def test_reader_verifies_loads_and_answers_like_local_index(published, capsys):
    cfg = published
    idx = PublishedIndex(cfg)  # follows LATEST
    assert idx.version == f"{DS}/r1"
    # Same answers as the locally built shards.
    _, local = load_model_shards(cfg.run_dir(DS) / "index" / "dcm")
    q = fx.clustered_vectors(5, 16, seed=99)
    assert np.array_equal(idx.search("dcm", q, 10)[1], search_shards(local, q, 10)[1])

    cands = query_user(cfg, 3, k=12)
    assert len(cands) == 12 and len({c.item_id for c in cands}) == 12
    assert {c.model for c in cands} == {"dcm", "cr"}
    assert all(c.topic_id is not None for c in cands if c.model == "cr")
    # Each candidate is among its embedding's own top-k from the index.
    for c in cands:
        vec = next(e[2] for e in idx.user_embeddings(3) if e[0] == c.model and e[1] == c.emb_index)
        assert c.item_id in idx.search(c.model, vec, 12)[1][0]
    printed = capsys.readouterr().out
    assert f"user 3: 12 candidates from {DS}/r1" in printed and str(cands[0].item_id) in printed

    assert PublishedIndex(cfg, DS).version == f"{DS}/r1"
    with pytest.raises(MerError, match="user 999 has no embeddings"):
        idx.user_candidates(999, 5)


# A corrupted shard at download is in tests/test_faults_publish.py.


def test_reader_refuses_half_written_version(published, monkeypatch):
    cfg = published
    store = Store(cfg)
    store.client.put_object(Bucket=store.bucket, Key=store.key(DS, "half", "index/dcm/shard-00000.faiss"), Body=b"x")
    with pytest.raises(StorageError, match="has no manifest.json"):
        PublishedIndex(cfg, f"{DS}/half")
    with pytest.raises(MerError, match="invalid run id"):
        PublishedIndex(cfg, f"{DS}/../x")
