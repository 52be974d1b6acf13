"""Fault injection, data side: one test per fault (issue #6).

Each test injects one fault into otherwise good input, asserts the stage fails with a
``MerError`` whose message names the cause (table, ds, column, count, file...), that bad rows
are quarantined and counted where rows are bad, and that a re-run after the fault is removed
succeeds. Publishing faults are in tests/test_faults_publish.py.

    null ids                         test_fault_null_ids
    duplicate events                 test_fault_duplicate_events
    schema drift (renamed/missing/retyped column)  test_fault_schema_drift[...]
    empty partition                  test_fault_empty_partition
    late-arriving partition          test_fault_late_arriving_partition
    corrupt Parquet file             test_fault_corrupt_parquet_file
    NaN embeddings from the item tower  test_fault_nan_item_embeddings
    source-interest join rate collapse  test_fault_join_rate_collapse
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from mer.base.errors import ContractError, DataQualityError, MerError
from mer.base.io import read_partition, write_partition
from tests import item_tower_fixture as fx
from tests.raw_fixture import (  # noqa: F401 (built_small is a fixture)
    DS,
    EVENTS,
    SOURCE_INTEREST,
    built_small,
    engagement_table,
    small_cfg,
    write_raw,
    write_snapshots,
)

REPO = Path(__file__).resolve().parents[1]


def _quarantine(cfg, ds=DS) -> list[dict]:
    return read_partition(cfg.table("quarantine"), ds).to_pylist()


def _validation(cfg, ds=DS) -> dict:
    return json.loads((cfg.quality_dir / f"ds={ds}" / "validation.json").read_text())


def _rerun_clean_passes(cfg) -> dict:
    """The fault removed (the raw input re-landed clean): validation passes with nothing quarantined."""
    from mer.stages.spark_jobs.validate_raw import run

    write_raw(cfg)
    summary = run(cfg, DS)
    assert summary["passed"]
    assert summary["tables"]["engagement_log"]["bad"] == 0 and summary["tables"]["source_interest_log"]["bad"] == 0
    assert _quarantine(cfg) == []
    return summary


# ---------------------------------------------------------------- bad rows
@pytest.mark.spark
def test_fault_null_ids(cfg, spark):
    from mer.stages.spark_jobs.validate_raw import run

    cfg = small_cfg(cfg)  # max_bad_fraction 0.05
    nulls = [
        ("n1", "2026-01-14", "10:00", None, 1, "click", "r3"),  # null user_id
        ("n2", "2026-01-14", "10:01", None, 2, "save", "r3"),  # null user_id
        ("n3", "2026-01-14", "10:02", 1, None, "click", "r3"),  # null item_id
    ]
    write_raw(cfg, events=EVENTS + nulls)
    with pytest.raises(DataQualityError) as err:
        run(cfg, DS)
    msg = str(err.value)
    assert "table engagement_log: 3 of 15 rows quarantined" in msg
    assert "max_bad_fraction 0.05" in msg
    assert "mostly null_id in columns 'user_id' (2), 'item_id' (1) (3 rows)" in msg
    # Quarantined, each with its reason and column, and counted (every column's rows).
    q = _quarantine(cfg)
    assert sorted((r["reason"], r["column"], json.loads(r["row_json"])["event_id"]) for r in q) == [
        ("null_id", "item_id", "n3"), ("null_id", "user_id", "n1"), ("null_id", "user_id", "n2")]
    eng = _validation(cfg)["tables"]["engagement_log"]
    assert (eng["rows"], eng["clean"], eng["bad"]) == (15, 12, 3)
    assert eng["reasons"]["null_id"]["count"] == 3
    assert eng["reasons"]["null_id"]["columns"] == {"user_id": 2, "item_id": 1}
    assert not _validation(cfg)["passed"]

    _rerun_clean_passes(cfg)


@pytest.mark.spark
def test_fault_duplicate_events(cfg, spark):
    from mer.stages.spark_jobs.validate_raw import run

    cfg = small_cfg(cfg)
    dup_events = [EVENTS[1], EVENTS[5]]  # e02 and e06 logged twice
    dup_si = [SOURCE_INTEREST[4]]  # (r3, item 4) twice: the join key must be unique
    write_raw(cfg, events=EVENTS + dup_events, source_interest=SOURCE_INTEREST + dup_si)
    with pytest.raises(DataQualityError) as err:
        run(cfg, DS)
    msg = str(err.value)
    assert "table engagement_log: 2 of 14 rows quarantined" in msg
    assert "mostly duplicate_event_id in column 'event_id' (2 rows)" in msg
    assert "table source_interest_log: 1 of 11 rows quarantined" in msg
    assert "duplicate_key in column 'request_id' (1 rows)" in msg
    q = _quarantine(cfg)
    assert sorted((r["source_table"], r["reason"]) for r in q) == [
        ("engagement_log", "duplicate_event_id"), ("engagement_log", "duplicate_event_id"),
        ("source_interest_log", "duplicate_key")]
    # The first copy stays clean: nothing is lost, nothing is doubled.
    clean = read_partition(cfg.table("clean_engagement_log"), DS)["event_id"].to_pylist()
    assert sorted(clean) == sorted(e[0] for e in EVENTS)

    _rerun_clean_passes(cfg)


# ---------------------------------------------------------------- contract faults (before Spark reads)
def _renamed(t: pa.Table) -> pa.Table:
    return t.rename_columns(["uid" if c == "user_id" else c for c in t.column_names])


def _missing(t: pa.Table) -> pa.Table:
    return t.drop_columns(["surface"])


def _retyped(t: pa.Table) -> pa.Table:
    i = t.schema.get_field_index("item_id")
    return t.set_column(i, "item_id", t["item_id"].cast(pa.string()))


DRIFT = {
    "renamed": (_renamed, r"table engagement_log ds=2026-01-14: column 'user_id' \(int64\) is missing; "
                          r"unexpected column\(s\) \['uid'\] \(renamed\?\)"),
    "missing": (_missing, r"table engagement_log ds=2026-01-14: column 'surface' \(string\) is missing$"),
    "retyped": (_retyped, r"table engagement_log ds=2026-01-14: column 'item_id' has type string, contract says int64"),
}


@pytest.mark.spark
@pytest.mark.parametrize("kind", sorted(DRIFT))
def test_fault_schema_drift(cfg, spark, kind):
    from mer.stages.spark_jobs.validate_raw import run

    cfg = small_cfg(cfg)
    write_raw(cfg)
    day = "2026-01-14"
    drift, expected = DRIFT[kind]
    write_partition(cfg.raw_table("engagement_log"), day, drift(read_partition(cfg.raw_table("engagement_log"), day)))
    with pytest.raises(ContractError, match=expected):
        run(cfg, DS)
    assert not cfg.table("clean_engagement_log").exists()  # failed before writing anything

    _rerun_clean_passes(cfg)


@pytest.mark.spark
def test_fault_empty_partition(cfg, spark):
    from mer.stages.spark_jobs.validate_raw import run

    cfg = small_cfg(cfg)
    write_raw(cfg)
    # The eval day's engagement log landed, but empty (an upstream outage, not a quiet day).
    write_partition(cfg.raw_table("engagement_log"), DS, engagement_table([]))
    with pytest.raises(ContractError, match=r"eval-day partition\(s\) with 0 rows: engagement_log/ds=2026-01-15; re-land"):
        run(cfg, DS)
    assert not cfg.table("clean_engagement_log").exists()

    _rerun_clean_passes(cfg)


@pytest.mark.spark
def test_fault_corrupt_parquet_file(cfg, spark):
    from mer.stages.spark_jobs.validate_raw import run

    cfg = small_cfg(cfg)
    write_raw(cfg)
    part = next((cfg.raw_table("engagement_log") / "ds=2026-01-13").glob("*.parquet"))
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])  # truncated mid-upload: no footer
    with pytest.raises(ContractError, match=rf"table engagement_log ds=2026-01-13: file {part.name} is not a readable Parquet file"):
        run(cfg, DS)
    # The same check guards every raw read (snapshots too).
    snap = next((cfg.raw_table("item_features") / "ds=2026-01-12").glob("*.parquet"))
    snap.write_bytes(b"PAR1 not really parquet")
    from mer.stages.spark_jobs.warehouse import snapshot_partition

    with pytest.raises(ContractError, match=rf"table item_features ds=2026-01-12: file {snap.name} is not a readable"):
        snapshot_partition(cfg, "item_features", DS)

    _rerun_clean_passes(cfg)


# ---------------------------------------------------------------- late data: the raw sensor


def test_fault_late_arriving_partition(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MER_"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "afh"), MER_ROOT=str(tmp_path / "var"), MER_BUILD__TRAIN_DAYS="2",
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "tests.programs.sensor_timeout"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    assert len(lines) == 2, proc.stdout[-2000:] + proc.stderr[-4000:]
    name, is_mer, pokes, msg = (p.strip() for p in lines[0][3:].split("|"))
    assert name == "RawInputTimeout" and is_mer == "True"
    assert int(pokes) >= 3  # it waited, re-checking, before giving up
    assert msg.startswith("raw input for ds=2026-01-15 still missing after")
    assert msg.startswith("raw input for ds=2026-01-15 still missing after 0.5s: ")
    for missing in ("engagement_log/ds=2026-01-13", "engagement_log/ds=2026-01-15", "source_interest_log/ds=2026-01-14",
                    "item_features/ds<=2026-01-15"):
        assert missing in msg
    assert msg.endswith("(+1 more)")  # 9 missing: 3 days x 2 logs + 3 snapshots, the list stays short
    assert lines[1].startswith("@@ landed after")
    assert int(lines[1].split()[3]) >= 2


# ---------------------------------------------------------------- NaN embeddings from the item tower
@pytest.mark.spark
def test_fault_nan_item_embeddings(cfg, spark, monkeypatch):
    from mer.stages.spark_jobs.item_inference import run

    fx.make_models(cfg, DS)
    cfg.train = cfg.train.model_copy(update={"embed_dim": 16})
    fx.write_item_features(cfg, DS, n=120)
    cfg.index.serving_module = "tests.nan_tower_fixture"
    with pytest.raises(DataQualityError) as err:
        run(cfg, DS)
    msg = str(err.value)
    assert f"quality gate 'embeddings' failed for ds={DS}" in msg
    assert "item_embeddings: expect_column_values_to_be_in_set (column emb_finite) observed {'unexpected_count': " in msg
    assert "[embeddings with NaN/inf values]" in msg
    gate = json.loads((cfg.quality_dir / f"ds={DS}" / "embeddings.json").read_text())
    assert gate["success"] is False
    # Nothing downstream can publish it: the recall gate never ran.
    assert not (cfg.run_dir(DS) / "index" / "recall.json").exists()

    cfg.index.serving_module = "tests.item_tower_fixture"  # the tower fixed
    out = run(cfg, DS)
    assert out["quality"]["success"] and out["rows"] == {"dcm": 120, "cr": 120}


# ---------------------------------------------------------------- join rate collapse
@pytest.mark.spark
def test_fault_join_rate_collapse(built_small, cfg):
    """request_id stops matching between the logs: no positive finds its source-interest row."""
    from mer.stages.quality.gates import run

    good = read_partition(built_small[0].table("training_examples"), DS)
    i = good.schema.get_field_index("condition_id")
    write_snapshots(cfg)
    write_partition(cfg.table("training_examples"), DS, good.set_column(i, "condition_id", pa.nulls(len(good), pa.int64())))
    with pytest.raises(DataQualityError) as err:
        run(cfg, DS, "training")
    msg = str(err.value)
    assert "expect_column_mean_to_be_between (column has_condition) observed 0.0" in msg
    assert "join rate of positive engagements to source_interest_log" in msg
    b = cfg.build
    assert f"expected build.join_rate_min={b.join_rate_min} <= value <= build.join_rate_max={b.join_rate_max}" in msg
    assert isinstance(err.value, MerError)

    write_partition(cfg.table("training_examples"), DS, good)  # the join restored
    assert run(cfg, DS, "training")["success"]
