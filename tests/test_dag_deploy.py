"""The docker deployment files: compose validates (when a docker client with compose exists),
secrets only come from the environment, and the publisher's S3 policy is least-privilege."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from mer.base.config import REPO_ROOT, MerConfig

DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yaml"


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="no docker client with the compose plugin")
def test_compose_config_validates():
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(DOCKER / ".env.example"), "config", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_compose_has_the_airflow_3_services_and_no_literal_secrets():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    for name in ("postgres", "minio", "minio-init", "airflow-init", "airflow-apiserver", "airflow-scheduler",
                 "airflow-dag-processor", "airflow-triggerer", "spark-master", "spark-worker"):
        assert name in services, name
    assert services["spark-master"]["profiles"] == ["spark"]
    secret = re.compile(r"(PASSWORD|SECRET|FERNET|ACCESS_KEY)", re.I)
    for name, svc in services.items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if secret.search(key) or "postgresql" in str(value):
                assert "${" in str(value), f"{name}: {key} must come from the environment, not the file"


def test_env_example_has_placeholders_only():
    text = (DOCKER / ".env.example").read_text()
    for line in text.splitlines():
        if re.match(r"^[A-Z_]*(PASSWORD|SECRET|FERNET)[A-Z_]*=", line):
            assert "CHANGE-ME" in line, line
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def test_publisher_policy_is_limited_to_its_prefix():
    cfg = MerConfig()
    policy = json.loads((DOCKER / "iam-policy.json").read_text())
    actions, resources = set(), set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        actions |= set(st["Action"])
        resources |= set(st["Resource"])
        if "s3:ListBucket" in st["Action"]:
            assert st["Condition"]["StringLike"]["s3:prefix"] == [cfg.publish.prefix, f"{cfg.publish.prefix}/*"]
    assert not any("*" in a for a in actions)  # no s3:* wildcards
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= actions
    assert resources == {f"arn:aws:s3:::{cfg.publish.bucket}", f"arn:aws:s3:::{cfg.publish.bucket}/{cfg.publish.prefix}/*"}


def test_readme_table_schemas_match_the_contract():
    import sys

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from schema_md import schema_markdown
    finally:
        sys.path.pop(0)
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("<!-- schema:begin -->\n", 1)[1].split("\n<!-- schema:end -->", 1)[0]
    assert section == schema_markdown(), "README schemas are stale: paste the output of scripts/schema_md.py"
