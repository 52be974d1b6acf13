"""Stage 1: bad rows land in quarantine with the right reasons; drift and thresholds fail with clear messages."""
from __future__ import annotations

import json

import pytest

from mer.base.errors import ContractError, DataQualityError
from mer.base.io import read_partition, write_partition
from tests.raw_fixture import (
    DS,
    EVENTS,
    SOURCE_INTEREST,
    engagement_table,
    small_cfg,
    write_raw,
)

BAD_EVENTS = [
    ("e02", "2026-01-13", "10:01", 1, 1, "click", "r1"),  # exact duplicate of e02
    ("e13", "2026-01-13", "10:05", None, 1, "click", "r1"),  # null user
    ("e14", "2026-01-14", "10:05", None, 2, "save", "r3"),  # null user
    ("e15", "2026-01-14", "10:06", 1, 2, "like", "r3"),  # unknown action
    ("e16", "2026-01-14", "23:59", 1, 999, "click", "r3"),  # unknown item
]
BAD_SOURCE_INTEREST = [
    ("2026-01-14", "r3", 4, "followed_topic", 100),  # duplicate (request_id, item_id)
    ("2026-01-15", "r6", 2, "followed_topic", 999),  # unknown topic
]


def _dirty(cfg):
    write_raw(cfg, events=EVENTS + BAD_EVENTS, source_interest=SOURCE_INTEREST + BAD_SOURCE_INTEREST)
    # an event logged in the 01-13 partition but stamped the day before
    day = "2026-01-13"
    rows = [e for e in EVENTS + BAD_EVENTS if e[1] == day] + [("e17", "2026-01-12", "23:00", 2, 3, "click", "r2")]
    table = engagement_table(rows)
    write_partition(cfg.raw_table("engagement_log"), day, table)


def test_pure_check_on_a_tiny_frame(spark):
    from pyspark.sql import functions as F

    from mer.stages.spark_jobs.validate_raw import check_engagement

    rows = [e for e in EVENTS if e[1] == "2026-01-13"] + BAD_EVENTS[:2]
    events = spark.createDataFrame(engagement_table(rows).to_pandas()).withColumn("event_date", F.lit("2026-01-13"))
    items = spark.createDataFrame([(i,) for i in range(1, 7)], "item_id long")
    good, bad = check_engagement(events, items, ["impression", "click", "save", "hide"])
    assert sorted(r["event_id"] for r in good.collect()) == ["e01", "e02", "e03", "e04", "e05"]
    assert sorted((r["reason"], r["column"]) for r in bad.collect()) == [
        ("duplicate_event_id", "event_id"), ("null_id", "user_id")]


def test_bad_rows_go_to_quarantine_with_reasons(cfg, spark):
    from mer.stages.spark_jobs.validate_raw import run

    cfg = small_cfg(cfg, max_bad_fraction=0.5)
    _dirty(cfg)
    summary = run(cfg, DS)

    eng = summary["tables"]["engagement_log"]
    assert (eng["rows"], eng["clean"], eng["bad"]) == (18, 12, 6)
    assert {k: (v["column"], v["count"]) for k, v in eng["reasons"].items()} == {
        "duplicate_event_id": ("event_id", 1),
        "null_id": ("user_id", 2),
        "unknown_action": ("action", 1),
        "unknown_item": ("item_id", 1),
        "ts_outside_ds": ("event_ts", 1),
    }
    si = summary["tables"]["source_interest_log"]
    assert {k: (v["column"], v["count"]) for k, v in si["reasons"].items()} == {
        "duplicate_key": ("request_id", 1), "unknown_topic": ("source_interest_id", 1)}
    assert summary["passed"]

    q = read_partition(cfg.table("quarantine"), DS).to_pylist()
    assert len(q) == 8
    bad_item = next(r for r in q if r["reason"] == "unknown_item")
    assert (bad_item["source_table"], bad_item["source_ds"]) == ("engagement_log", "2026-01-14")
    assert json.loads(bad_item["row_json"])["item_id"] == 999
    assert json.loads(next(r for r in q if r["reason"] == "ts_outside_ds")["row_json"])["event_id"] == "e17"

    clean = read_partition(cfg.table("clean_engagement_log"), DS).to_pylist()
    assert sorted(r["event_id"] for r in clean) == sorted(e[0] for e in EVENTS)  # first e02 kept, copy dropped
    assert {r["event_date"] for r in clean} == {"2026-01-13", "2026-01-14", "2026-01-15"}
    report = json.loads((cfg.quality_dir / f"ds={DS}" / "validation.json").read_text())
    assert report["tables"]["engagement_log"]["bad"] == 6


def test_too_many_bad_rows_fails_after_quarantine(cfg, spark):
    from mer.stages.spark_jobs.validate_raw import run

    cfg = small_cfg(cfg, max_bad_fraction=0.05)
    _dirty(cfg)
    with pytest.raises(DataQualityError) as err:
        run(cfg, DS)
    msg = str(err.value)
    assert "table engagement_log: 6 of 18 rows quarantined" in msg
    assert "null_id in column 'user_id' (2 rows)" in msg
    assert "0.3333" in msg
    assert "table source_interest_log" in msg
    assert read_partition(cfg.table("quarantine"), DS).num_rows == 8  # nothing lost
    assert not json.loads((cfg.quality_dir / f"ds={DS}" / "validation.json").read_text())["passed"]


# Schema drift (renamed / missing / retyped column) is in tests/test_faults_data.py.
def test_missing_partition_is_a_contract_error(cfg, spark):
    import shutil

    from mer.stages.spark_jobs.validate_raw import run

    cfg = small_cfg(cfg)
    write_raw(cfg)
    shutil.rmtree(cfg.raw_table("source_interest_log") / "ds=2026-01-14")
    with pytest.raises(ContractError, match=r"table source_interest_log: partition ds=2026-01-14 is missing.*mer generate"):
        run(cfg, DS)
    # Every missing day is named at once (not one per re-run).
    shutil.rmtree(cfg.raw_table("source_interest_log") / f"ds={DS}")
    with pytest.raises(ContractError, match=rf"table source_interest_log: 2 partitions are \(2026-01-14, {DS}\) missing"):
        run(cfg, DS)
