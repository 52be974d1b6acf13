"""The demo's local S3 endpoint: real boto3 over HTTP to 127.0.0.1, env restored afterwards,
and the bucket mirrored to disk so a later demo run sees what an earlier one published."""
from __future__ import annotations

import os

import boto3

from mer.app.demo import airflow_env, failure_message
from mer.app.local_s3 import local_s3
from mer.app.pipeline import record_stage


def test_endpoint_env_is_scoped_and_bucket_survives_restarts(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    mirror = tmp_path / "s3" / "mer-mirror-test"
    with local_s3("mer-mirror-test", mirror=mirror) as endpoint:
        assert endpoint.startswith("http://127.0.0.1:")
        assert os.environ["AWS_ENDPOINT_URL"] == endpoint
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.put_object(Bucket="mer-mirror-test", Key="mer/index/2026-01-15/r1/manifest.json", Body=b"{}")
        s3.put_object(Bucket="mer-mirror-test", Key="mer/index/LATEST", Body=b'{"run_id": "r1"}')
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert (mirror / "mer" / "index" / "LATEST").read_bytes() == b'{"run_id": "r1"}'
    # moto keeps one in-memory backend per process: empty the bucket so the reload is what we see
    with local_s3("mer-mirror-test") as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        for obj in s3.list_objects_v2(Bucket="mer-mirror-test").get("Contents", []):
            s3.delete_object(Bucket="mer-mirror-test", Key=obj["Key"])
    with local_s3("mer-mirror-test", mirror=mirror) as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="mer-mirror-test")["Contents"])
    assert keys == ["mer/index/2026-01-15/r1/manifest.json", "mer/index/LATEST"]


def test_airflow_home_is_under_the_data_root(cfg):
    env = airflow_env(cfg)
    assert env["AIRFLOW_HOME"] == str(cfg.root / "airflow_home")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///" + str(cfg.root))
    assert env["MER_ROOT"] == str(cfg.root)


def test_failed_run_message_names_tasks_and_their_errors(cfg):
    record_stage(cfg, "2026-01-15", "gate_raw", {"status": "failed", "error": "table engagement_log: column action: 7% bad > 5%"})
    msg = failure_message(cfg, "2026-01-15", {"gate_raw": "failed", "training_data": "upstream_failed", "__run__": "failed"})
    assert "failed tasks: gate_raw" in msg
    assert "gate_raw: table engagement_log: column action: 7% bad > 5%" in msg
