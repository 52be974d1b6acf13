"""Publish to a real S3-compatible HTTP server (moto server mode on 127.0.0.1) with boto3."""
from __future__ import annotations

import numpy as np
import pytest

from mer.base.errors import GateError, MerError, StorageError
from mer.stages.index import publish
from mer.stages.index.publish import MANIFEST, list_versions, read_latest
from mer.stages.index.storage import Store, s3_checksum_matches, sha256_file
from tests import item_tower_fixture as fx

DS = "2026-01-15"
pytestmark = pytest.mark.usefixtures("towers_env")


def test_publish_layout_manifest_last_and_idempotent(run_cfg):
    cfg = run_cfg
    store = Store(cfg)
    calls = []
    store.client.meta.events.register("before-call.s3.*", lambda model, **kw: calls.append(model.name))
    out = publish.run(cfg, DS, "r1", store=store)
    assert out["status"] == "published" and out["uploaded"] == out["files"]

    vkey = store.key(DS, "r1")
    keys = set(store.list(vkey))
    for model in ("dcm", "cr"):
        for s in ("shard-00000", "shard-00001"):
            assert {f"{vkey}/index/{model}/{s}.faiss", f"{vkey}/index/{model}/{s}.ids.npy"} <= keys
        assert f"{vkey}/users/{model}.parquet" in keys and f"{vkey}/models/{model}/config.json" in keys
    assert f"{vkey}/index/recall.json" in keys and f"{vkey}/metrics/item_inference.json" in keys
    # Data before manifest, manifest before LATEST.
    puts = [c for c in calls if c in ("PutObject", "CreateMultipartUpload")]
    assert len(puts) == out["files"] + 2
    m = store.get_json(f"{vkey}/{MANIFEST}")
    assert m["models"]["dcm"]["dim"] == 16 and m["metric"] == "inner_product"
    assert [s["name"] for s in m["models"]["dcm"]["shards"]] == ["shard-00000", "shard-00001"]
    assert sum(s["n"] for s in m["models"]["dcm"]["shards"]) == 600
    assert m["models"]["cr"]["n_users"] == 20 * 2  # 20 users x K=2 explicit embeddings
    local = cfg.run_dir(DS) / "index" / "dcm" / "shard-00000.faiss"
    assert m["files"]["index/dcm/shard-00000.faiss"]["sha256"] == sha256_file(local)
    assert read_latest(store) == {"ds": DS, "run_id": "r1", "manifest": f"{vkey}/{MANIFEST}", "previous": None}

    calls.clear()
    again = publish.run(cfg, DS, "r1", store=store)
    assert again["status"] == "unchanged"
    assert not [c for c in calls if c.startswith("Put") or "Multipart" in c]


# Faults (killed mid-upload, S3 5xx / throttling, missing credentials) are in tests/test_faults_publish.py.


def test_retention_and_rollback(run_cfg):
    cfg = run_cfg
    cfg.publish = cfg.publish.model_copy(update={"retention": 2})
    for rid in ("r1", "r2", "r3"):
        publish.run(cfg, DS, rid)
    store = Store(cfg)
    assert [v["run_id"] for v in list_versions(store)] == ["r2", "r3"]
    assert store.list(store.key(DS, "r1")) == {}

    out = publish.rollback(cfg)
    assert out["to"] == f"{DS}/r2" and read_latest(store)["run_id"] == "r2"
    with pytest.raises(MerError, match="no verified version older than 2026-01-15/r2"):
        publish.rollback(cfg)
    # Re-running the rolled-back run points LATEST at it again without re-uploading.
    assert publish.run(cfg, DS, "r3")["status"] == "pointer_updated"


def test_backfilling_an_older_ds_publishes_it_but_leaves_latest_on_the_newest_date(run_cfg):
    cfg = fx.prepared_run(run_cfg, "2026-01-14", bucket=run_cfg.publish.bucket)
    publish.run(cfg, DS, "daily")
    out = publish.run(cfg, "2026-01-14", "backfill")
    store = Store(cfg)
    assert out["status"] == "published_behind_latest" and out["latest"] == f"{DS}/daily"
    assert read_latest(store)["ds"] == DS and read_latest(store)["run_id"] == "daily"
    assert {(v["ds"], v["run_id"]) for v in list_versions(store)} == {(DS, "daily"), ("2026-01-14", "backfill")}
    assert publish.run(cfg, "2026-01-14", "backfill")["status"] == "published_behind_latest"  # re-run: still behind
    assert read_latest(store)["run_id"] == "daily"


def test_rollback_skips_a_corrupted_version(run_cfg):
    cfg = run_cfg
    for rid in ("a", "b", "c"):
        publish.run(cfg, DS, rid)
    store = Store(cfg)
    store.client.put_object(Bucket=store.bucket, Key=store.key(DS, "b", "index/dcm/shard-00000.faiss"), Body=b"corrupt")
    assert publish.rollback(cfg)["to"] == f"{DS}/a"


def test_refuses_bad_ids_failed_gate_and_keys_outside_prefix(run_cfg):
    cfg = run_cfg
    with pytest.raises(MerError, match="invalid run id"):
        publish.run(cfg, DS, "../evil")
    with pytest.raises(MerError, match="invalid ds"):
        publish.run(cfg, "2026-13-01", "r")
    with pytest.raises(StorageError, match="outside prefix"):
        Store(cfg).key("..", "other")
    with pytest.raises(StorageError, match="refusing to delete"):
        Store(cfg).delete_prefix("mer")
    recall_file = cfg.run_dir(DS) / "index" / "recall.json"
    recall_file.write_text(recall_file.read_text().replace('"passed": true', '"passed": false'))
    with pytest.raises(GateError, match="recall gate did not pass"):
        publish.run(cfg, DS, "r1")


def test_multipart_upload_keeps_sha256(cfg, s3_env, tmp_path):
    cfg.publish = cfg.publish.model_copy(update={"bucket": "mer-multipart", "multipart_threshold_mb": 5})
    store = Store(cfg)
    store.ensure_bucket()
    big = tmp_path / "big.bin"
    big.write_bytes(np.random.default_rng(0).bytes(11 * 2**20))
    sha = sha256_file(big)
    store.upload_file(big, store.key("x", "big.bin"), sha)
    head = store.head(store.key("x", "big.bin"))
    assert head["ContentLength"] == 11 * 2**20 and head["Metadata"]["sha256"] == sha
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 1 MiB parts
    # S3's checksum of a multipart object is over its parts, not the file: verification must not
    # compare it with the file's SHA-256 (it did, and refused every shard over the threshold).
    assert s3_checksum_matches(head, sha) is None
    publish.verify_version(store, store.key("x"), {"files": {"big.bin": {"size": 11 * 2**20, "sha256": sha}}})
    with pytest.raises(StorageError, match="sha256 does not match"):
        publish.verify_version(store, store.key("x"), {"files": {"big.bin": {"size": 11 * 2**20, "sha256": "0" * 64}}})
    out = tmp_path / "back.bin"
    store.download_file(store.key("x", "big.bin"), out)
    assert sha256_file(out) == sha
