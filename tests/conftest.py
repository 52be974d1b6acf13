"""Shared fixtures. One Spark session per test run: starting a JVM costs seconds on 2 cores."""
from __future__ import annotations

from pathlib import Path

import pytest

from mer.config import MerConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"
MOVIELENS = SHARED / "datasets" / "movielens-latest-small"


@pytest.fixture
def cfg(tmp_path: Path) -> MerConfig:
    """A config rooted in a fresh temporary folder (never the repo's var/)."""
    return MerConfig(root=tmp_path / "var")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from spark_jobs.session import get_spark

    root = tmp_path_factory.mktemp("spark")
    session = get_spark(MerConfig(root=root), app_name="mer-tests")
    yield session
    session.stop()
