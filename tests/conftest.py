"""Shared fixtures. One Spark session per test run: starting a JVM costs seconds on 2 cores."""
from __future__ import annotations

from pathlib import Path

import pytest

from mer.base.config import MerConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"
MOVIELENS = SHARED / "datasets" / "movielens-latest-small"


@pytest.fixture
def cfg(tmp_path: Path) -> MerConfig:
    """A config rooted in a fresh temporary folder (never the repo's var/)."""
    return MerConfig(root=tmp_path / "var")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from mer.stages.spark_jobs.session import get_spark

    root = tmp_path_factory.mktemp("spark")
    session = get_spark(MerConfig(root=root), app_name="mer-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible HTTP server (moto server mode) on 127.0.0.1 for the whole run."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """Fake credentials and the local endpoint in the environment, as an Airflow connection would export them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_endpoint


@pytest.fixture
def towers_env(cfg, monkeypatch):
    """Serve the small seeded item tower of tests/item_tower_fixture.py instead of a trained model:
    in the test's ``cfg`` and, for configs loaded later (CLI, subprocesses), in the environment."""
    cfg.index.serving_module = "tests.item_tower_fixture"
    monkeypatch.setenv("MER_INDEX__SERVING_MODULE", "tests.item_tower_fixture")


@pytest.fixture
def run_cfg(cfg, s3_env, towers_env):
    """Index shards + recall report for 2026-01-15, ready to publish to the local S3 endpoint."""
    from tests import item_tower_fixture as fx

    return fx.prepared_run(cfg, "2026-01-15")


def pytest_collection_modifyitems(config, items):
    """Every test that gets a Spark session (directly or through a fixture such as built_small) carries the
    ``spark`` marker, so ``-m "not spark"`` really leaves the JVM out; tests that start Spark in a child
    process are marked in their own files."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("spark"):
            item.add_marker(pytest.mark.spark)
    # The long end-to-end files first: under `make test`'s two workers (pytest-xdist, one file at a time,
    # in this order with --no-loadscope-reorder) they then start at once instead of ending the run alone.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
