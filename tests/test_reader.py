"""Reader client against a real publish on moto's S3 server: verify, load shards, served merge."""
from __future__ import annotations

import numpy as np
import pytest

from mer.base.errors import MerError, StorageError
from mer.stages.index import publish
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


# The served merge itself (known answers, evaluation == reader): tests/test_merge.py.


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
