"""The least-privilege policies against an endpoint that enforces IAM (moto server with authentication on).

moto's server checks every request's access key and evaluates the caller's policies (Action and
Resource) once ``INITIAL_NO_AUTH_ACTION_COUNT`` unauthenticated actions are spent; we spend them on
an admin user. It does not evaluate Condition blocks, so the ``s3:prefix`` limit on listing is
checked statically in tests/test_security.py; here the point is that every call the publisher and
the reader make is one the policies grant, and that calls outside them are refused.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from mer.base.errors import StorageError
from mer.stages.index import publish
from mer.stages.index.publish import MANIFEST, read_latest
from mer.stages.index.reader import PublishedIndex
from mer.stages.index.storage import Store
from tests import item_tower_fixture as fx

REPO = Path(__file__).resolve().parents[1]
DS = "2026-01-15"
BUCKET = "mer-artifacts"  # as in docker/iam-policy*.json and PublishConfig
ADMIN = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def _client(service: str, endpoint: str, key: str = "bootstrap", secret: str = "bootstrap"):
    conf = Config(retries={"mode": "standard", "max_attempts": 1}, s3={"addressing_style": "path"})
    return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                 region_name="us-east-1").client(service, endpoint_url=endpoint, config=conf)


def _user(iam, name: str, policy: dict) -> tuple[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="module")
def iam_endpoint(tmp_path_factory):
    """A moto server in its own process (auth settings are process-wide) that enforces IAM after 3 actions."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}, stdout=log, stderr=log)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("moto server did not start")
        iam = _client("iam", endpoint)
        admin = _user(iam, "admin", ADMIN)  # the 3 unauthenticated actions; enforced from here on
        iam = _client("iam", endpoint, *admin)
        s3 = _client("s3", endpoint, *admin)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="other/secret.txt", Body=b"not yours")
        keys = {
            "publisher": _user(iam, "publisher", json.loads((REPO / "docker" / "iam-policy.json").read_text())),
            "reader": _user(iam, "reader", json.loads((REPO / "docker" / "iam-policy-reader.json").read_text())),
        }
        yield endpoint, keys, s3
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _as(monkeypatch, endpoint: str, key: tuple[str, str]) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.mark.usefixtures("towers_env")
def test_publish_and_read_with_the_policies_credentials(cfg, iam_endpoint, monkeypatch, tmp_path):
    endpoint, keys, admin_s3 = iam_endpoint
    cfg = fx.prepared_run(cfg, DS)
    # The bucket and prefix the policy files name (the config's defaults), not the per-test bucket.
    defaults = type(cfg.publish)()
    cfg.publish = cfg.publish.model_copy(update={"retention": 1, "bucket": defaults.bucket, "prefix": defaults.prefix})

    # The publisher: bucket check, uploads, manifest, LATEST, retention deletes, all under its policy.
    _as(monkeypatch, endpoint, keys["publisher"])
    first = publish.run(cfg, DS, "r1")
    second = publish.run(cfg, DS, "r2")
    assert first["status"] == second["status"] == "published"
    assert second["deleted_versions"] == [f"{DS}/r1"]  # retention really deleted under the policy
    store = Store(cfg)
    assert store.list(store.key(DS, "r1")) == {}
    assert read_latest(store)["run_id"] == "r2"
    # Outside the policy: another prefix, and bucket administration.
    for denied in (lambda: store.client.put_object(Bucket=store.bucket, Key="other/x", Body=b"x"),
                   lambda: store.client.get_object(Bucket=store.bucket, Key="other/secret.txt"),
                   lambda: store.client.delete_object(Bucket=store.bucket, Key="other/secret.txt"),
                   lambda: store.client.delete_bucket(Bucket=store.bucket),
                   lambda: store.client.create_bucket(Bucket="another-bucket")):
        with pytest.raises(ClientError) as err:
            denied()
        assert err.value.response["Error"]["Code"] == "AccessDenied"

    # The reader: LATEST, manifest, verified downloads and a query, read-only.
    _as(monkeypatch, endpoint, keys["reader"])
    reader = PublishedIndex(cfg, cache_dir=tmp_path / "cache")
    assert reader.version == f"{DS}/r2"
    user = int(reader.users("dcm").column("user_id")[0].as_py())
    assert reader.user_candidates(user, 5)
    rstore = Store(cfg)
    assert rstore.get_json(rstore.key("no-such-key")) is None  # a missing key reads as missing, not an error
    vkey = rstore.key(DS, "r2")
    for denied in (lambda: rstore.client.put_object(Bucket=rstore.bucket, Key=f"{vkey}/x", Body=b"x"),
                   lambda: rstore.client.delete_object(Bucket=rstore.bucket, Key=f"{vkey}/{MANIFEST}")):
        with pytest.raises(ClientError) as err:
            denied()
        assert err.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(StorageError, match="AccessDenied"):
        publish.run(cfg, DS, "r3")  # the reader's keys cannot publish
    assert admin_s3.get_object(Bucket=BUCKET, Key="other/secret.txt")["Body"].read() == b"not yours"
