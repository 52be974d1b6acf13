"""Fault injection, model/index/publish side: one test per fault (issue #6).

Against a real S3-compatible HTTP server (moto server mode on 127.0.0.1) with boto3. Each test
asserts the failure names its cause, that nothing is half-published (LATEST unchanged, no
manifest.json for the broken version) and that a re-run after the fault is removed succeeds.
Data faults are in tests/test_faults_data.py.

    model regression vs the last blessed   test_fault_model_regression_vs_last_blessed
    recall regression of a shard           test_fault_shard_recall_regression
    S3 5xx and throttling                  test_fault_s3_5xx_and_throttling_are_retried
    process killed during upload           test_fault_killed_during_upload
    corrupted shard at download            test_fault_corrupted_shard_at_download
    missing credentials                    test_fault_missing_credentials
"""
from __future__ import annotations

import json

import pytest

from mer.base.errors import GateError, StorageError
from mer.stages.index import build, layout, publish, recall
from mer.stages.index.publish import LATEST, MANIFEST, list_versions, read_latest
from mer.stages.index.reader import PublishedIndex
from mer.stages.index.storage import Store
from tests.bless_fixture import write_val_metrics

DS = "2026-01-15"
pytestmark = pytest.mark.usefixtures("towers_env")


def _assert_not_published(store, run_id, latest_before):
    assert read_latest(store) == latest_before
    assert store.get_json(store.key(DS, run_id, MANIFEST)) is None
    assert run_id not in [v["run_id"] for v in list_versions(store)]


# ---------------------------------------------------------------- model regression


def test_fault_model_regression_vs_last_blessed(cfg):
    """The candidate still beats the baseline but fell > bless_tolerance below the last blessed model:
    not blessed (the DAG short-circuits inference..publish, LATEST stays); the older day's record is untouched."""
    from mer.stages.model import bless

    write_val_metrics(cfg, "2026-01-14", 0.5, 0.2)
    assert bless.run(cfg, "2026-01-14")["blessed"] is True
    previous = bless.record_path(cfg, "2026-01-14")
    before = previous.read_bytes()

    write_val_metrics(cfg, DS, 0.30, 0.20)
    out = bless.run(cfg, DS)
    assert out["blessed"] is False
    assert out["reason"] == (f"candidate 0.3000 regresses more than {cfg.eval.bless_tolerance:.1%} "
                             "vs last blessed 0.5000")
    assert (out["candidate"], out["baseline"], out["last_blessed"], out["last_blessed_ds"]) == (0.30, 0.20, 0.5, "2026-01-14")
    assert json.loads(bless.record_path(cfg, DS).read_text())["blessed"] is False
    assert previous.read_bytes() == before

    write_val_metrics(cfg, DS, 0.55, 0.20)  # a fixed model
    out = bless.run(cfg, DS)
    assert out["blessed"] is True
    assert json.loads(bless.record_path(cfg, DS).read_text())["candidate"] == 0.55
    assert previous.read_bytes() == before


# ---------------------------------------------------------------- recall regression of one shard
def test_fault_shard_recall_regression(run_cfg):
    cfg = run_cfg
    publish.run(cfg, DS, "good")
    store = Store(cfg)
    before = read_latest(store)

    # Shard 1 rebuilt with a far too lossy index (2 x 4-bit PQ codes): its recall collapses.
    cfg.index = cfg.index.model_copy(update={"index_key": "IVF4,PQ2x4"})
    build.run(cfg, DS, shard=1)
    with pytest.raises(GateError) as err:
        recall.run(cfg, DS)
    msg = str(err.value)
    assert f"recall gate failed for ds={DS}" in msg
    assert "dcm/shard-00001: recall@10=" in msg and "< 0.95 (IVF4,PQ2x4" in msg
    assert "shard-00000" not in msg  # the healthy shard is not blamed
    report = json.loads(layout.recall_path(cfg, DS).read_text())
    assert report["passed"] is False and report["models"]["dcm"]["shards"]["shard-00000"]["recall"] >= 0.95

    with pytest.raises(GateError, match=r"publish ds=2026-01-15: recall gate did not pass \(cr/shard-00001: recall@10="):
        publish.run(cfg, DS, "second")
    _assert_not_published(store, "second", before)
    assert store.list(store.key(DS, "second")) == {}  # not one object uploaded

    cfg.index = cfg.index.model_copy(update={"index_key": "Flat"})  # the shard rebuilt right
    build.run(cfg, DS, shard=1)
    assert recall.run(cfg, DS)["passed"]
    assert publish.run(cfg, DS, "second")["status"] == "published"
    assert read_latest(store)["run_id"] == "second"


# ---------------------------------------------------------------- S3 5xx and throttling
def test_fault_s3_5xx_and_throttling_are_retried(run_cfg):
    cfg = run_cfg
    cfg.publish = cfg.publish.model_copy(update={"max_attempts": 4})
    from botocore.awsrequest import AWSResponse

    class Raw:
        def __init__(self, body):
            self.body = body

        def stream(self, **_):
            yield self.body

    # Two failures (503 then SlowDown) on each of the first three distinct requests: max_attempts=4 absorbs them.
    failures = {"per_url": {}, "seen": 0, "always": False}

    def flaky(request, **_):
        tries = failures["per_url"]
        if failures["always"] or (request.url in tries or len(tries) < 3) and tries.get(request.url, 0) < 2:
            tries[request.url] = tries.get(request.url, 0) + 1
            failures["seen"] += 1
            code = b"SlowDown" if tries[request.url] % 2 == 0 else b"ServiceUnavailable"
            return AWSResponse(request.url, 503, {}, Raw(b"<Error><Code>" + code + b"</Code><Message>x</Message></Error>"))
        return None

    store = Store(cfg)
    store.client.meta.events.register("before-send.s3.*", flaky)
    out = publish.run(cfg, DS, "flaky", store=store)
    assert out["status"] == "published" and failures["seen"] == 6
    publish.verify_version(store, store.key(DS, "flaky"), store.get_json(store.key(DS, "flaky", MANIFEST)))

    # Past max_attempts the failure surfaces as a clear StorageError naming the object, LATEST unchanged.
    before = read_latest(store)
    failures["always"] = True
    with pytest.raises(StorageError, match=r"object storage: put s3://mer-.*/mer/index/LATEST failed: (SlowDown|ServiceUnavailable)"):
        store.put_json(store.key(LATEST), {"x": 1})
    failures["always"] = False
    assert read_latest(store) == before


# ---------------------------------------------------------------- killed mid-upload


def test_fault_killed_during_upload(run_cfg):
    """A publisher process SIGKILLed after its 4th upload: LATEST unchanged, no manifest, the reader
    refuses the half version; the re-run completes it, skipping the 4 intact files."""
    import os
    import signal
    import subprocess
    import sys

    from mer.base.config import REPO_ROOT

    cfg = run_cfg
    publish.run(cfg, DS, "good")
    store = Store(cfg)
    before = read_latest(store)

    proc = subprocess.run([sys.executable, "-m", "tests.programs.killed_publish", cfg.model_dump_json(), DS, "second"],
                          cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    _assert_not_published(store, "second", before)
    assert len(store.list(store.key(DS, "second"))) == 4
    assert [v["run_id"] for v in list_versions(store)] == ["good"]
    with pytest.raises(StorageError, match="has no manifest.json"):  # a reader refuses the half-written version
        PublishedIndex(cfg, f"{DS}/second")

    done = publish.run(cfg, DS, "second")
    assert done["status"] == "published" and done["resumed_skipped"] == 4
    assert done["uploaded"] == done["files"] - 4
    assert read_latest(store)["run_id"] == "second" and read_latest(store)["previous"] == f"{DS}/good"


# ---------------------------------------------------------------- corrupted shard at download
def test_fault_corrupted_shard_at_download(run_cfg, tmp_path):
    cfg = run_cfg
    publish.run(cfg, DS, "r1")
    store = Store(cfg)
    key = store.key(DS, "r1", "index/cr/shard-00001.faiss")
    good = store.get_bytes(key)
    store.client.put_object(Bucket=store.bucket, Key=key, Body=b"not an index")
    cache = tmp_path / "fresh"
    with pytest.raises(StorageError, match=r"checksum mismatch for index/cr/shard-00001\.faiss in version 2026-01-15/r1"):
        PublishedIndex(cfg, cache_dir=cache)
    assert not list(cache.rglob("shard-00001.faiss*"))  # the bad bytes were not kept, let alone loaded

    store.client.put_object(Bucket=store.bucket, Key=key, Body=good)  # the object repaired
    assert PublishedIndex(cfg, cache_dir=cache).version == f"{DS}/r1"


# ---------------------------------------------------------------- missing credentials
def test_fault_missing_credentials(run_cfg, monkeypatch, tmp_path):
    cfg = run_cfg
    saved = {v: __import__("os").environ[v] for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match="object storage: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        publish.run(cfg, DS, "r1")

    for var, value in saved.items():
        monkeypatch.setenv(var, value)
    out = publish.run(cfg, DS, "r1")  # the failed run left nothing behind: everything is uploaded now
    assert out["status"] == "published" and out["resumed_skipped"] == 0 and out["uploaded"] == out["files"]
    assert read_latest(Store(cfg))["run_id"] == "r1"
