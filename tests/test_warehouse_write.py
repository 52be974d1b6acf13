"""Warehouse partition writes detect an empty result from the written content, not from file times."""
from __future__ import annotations

import os
import time

import pyarrow.parquet as pq
import pytest

DS = "2026-01-15"


def _age(path, seconds: float) -> None:
    """Shift every file's mtime, as a writer or a storage server with a skewed clock would."""
    t = time.time() + seconds
    for f in path.iterdir():
        os.utime(f, (t, t))


@pytest.mark.spark
def test_write_table_ignores_file_times(spark, cfg):
    from mer.stages.spark_jobs.warehouse import write_table

    df = spark.createDataFrame([(1, "a"), (2, "b")], "id long, v string")
    path = write_table(df, cfg, "scratch", DS)
    assert sorted(pq.read_table(path).column("id").to_pylist()) == [1, 2]

    # The previous run's files look newer than the run (a clock an hour ahead): an empty re-run
    # must still replace them with an empty, schema-only partition.
    _age(path, 3600)
    write_table(df.limit(0), cfg, "scratch", DS)
    empty = pq.read_table(path)
    assert empty.num_rows == 0 and empty.column_names == ["id", "v"]

    # Files older than the run (a clock behind) and a non-empty re-run: exactly the new rows.
    _age(path, -3600)
    write_table(spark.createDataFrame([(3, "c")], "id long, v string"), cfg, "scratch", DS)
    assert pq.read_table(path).column("id").to_pylist() == [3]
    # No staging folder or Spark marker left behind.
    assert [p.name for p in cfg.table("scratch").iterdir()] == [f"ds={DS}"]
    assert not any(p.name.startswith("_") for p in path.iterdir())
