"""bench/bench_quality.py's data sets: `synthetic-sparse` is the generator with the sparse, content-driven preset."""
from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_quality.py"


def _counts(root: Path) -> tuple[int, int, float]:
    items = pads.dataset(root / "raw" / "item_features", partitioning="hive").to_table(
        filter=pc.field("ds") == "2026-01-15", columns=["item_id"])
    users = pads.dataset(root / "ground_truth" / "users.parquet").to_table().to_pandas()
    return items.num_rows, len(users), float((users["segment"] == "core").mean())


def test_synthetic_sparse_is_the_generator_with_the_sparse_preset(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))  # as tests/test_bench_setting.py imports its bench
    import bench_quality as bench

    bench.prepare("synthetic", tmp_path / "default")
    bench.prepare("synthetic-sparse", tmp_path / "sparse")
    n_items, n_users, core = _counts(tmp_path / "default")
    assert (n_items, n_users) == (6000, 1500) and 0.25 < core < 0.35
    n_items, n_users, core = _counts(tmp_path / "sparse")
    assert (n_items, n_users) == (bench.SPARSE["n_items"], bench.SPARSE["n_users"]) == (12000, 4000)
    assert 0.07 < core < 0.13  # core_user_fraction 0.1: most users engage a few times
