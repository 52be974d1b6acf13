"""bench/make_interactions_only.py: the interactions-only robustness root (no pretrained embeddings, topics,
follows or source interests) keeps every engagement and passes validation."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pds
import pytest

from mer.base.config import MerConfig
from mer.base.io import read_partition
from tests.raw_fixture import DS, small_cfg, write_raw

ROOT = Path(__file__).resolve().parents[1]


def _table(root: Path, name: str):
    return pds.dataset(root / "raw" / name, partitioning="hive").to_table()


@pytest.mark.spark
def test_interactions_only_root_keeps_engagements_and_validates(spark, tmp_path):
    from mer.stages.spark_jobs import validate_raw

    src = small_cfg(MerConfig(root=tmp_path / "src"))
    write_raw(src)
    dst = tmp_path / "dst"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "make_interactions_only.py"), str(src.root), str(dst)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _table(dst, "engagement_log").equals(_table(src.root, "engagement_log"))
    items = _table(dst, "item_features")
    assert items.column("pretrained_embedding").null_count == items.num_rows > 0
    assert all(len(x) == 0 for x in items.column("topic_ids").to_pylist())
    assert set(items.column("category_id").to_pylist()) == {0}
    assert _table(dst, "user_follows").num_rows == 0
    si = _table(dst, "source_interest_log")
    assert si.num_rows == _table(src.root, "source_interest_log").num_rows
    assert set(si.column("retriever").to_pylist()) == {"popular"} and si.column("source_interest_id").null_count == si.num_rows
    again = subprocess.run([sys.executable, str(ROOT / "bench" / "make_interactions_only.py"), str(src.root), str(dst)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "exists" in again.stderr  # never overwrites a root

    cfg = small_cfg(MerConfig(root=dst))
    validate_raw.run(cfg, DS)
    clean = read_partition(cfg.table("clean_engagement_log"), DS)
    assert clean.num_rows > 0
