"""State that one ds writes never changes what another ds decided or reads (issue 11, items 7 and 8).

- bless: one verdict record per ds; "last blessed" = the newest blessed ds strictly before, so a re-run
  gives the same bytes and a backfill of an older day leaves newer days' records alone.
- generate_if_absent: writes only the missing raw days; an existing raw partition is never replaced.
- report: uploaded outside the published version, so nothing lands in a version after its manifest.
"""
from __future__ import annotations

import hashlib
import json
from datetime import date

import pytest

from mer.base.contract import LOG_TABLES, RAW_TABLES
from mer.base.errors import MerError
from mer.base.io import list_partitions, partition_dir, read_partition
from mer.stages.model import bless
from tests.bless_fixture import write_val_metrics

D1, D2, D3 = "2026-01-10", "2026-01-12", "2026-01-14"


# ---------------------------------------------------------------- bless
def test_bless_rerun_of_a_ds_gives_the_same_verdict_and_bytes(cfg):
    write_val_metrics(cfg, D1, 0.50)
    assert bless.run(cfg, D1)["blessed"] is True
    write_val_metrics(cfg, D2, 0.495)  # within bless_tolerance of D1: blessed
    first = bless.run(cfg, D2)
    content = bless.record_path(cfg, D2).read_bytes()
    # the old global registry made D2 its own "last blessed" on a re-run (and stamped the clock)
    second = bless.run(cfg, D2)
    assert first == second and first["blessed"] is True
    assert (first["last_blessed_ds"], first["last_blessed"]) == (D1, 0.50)
    assert bless.record_path(cfg, D2).read_bytes() == content
    assert not (cfg.artifacts_dir / "blessed.json").exists()


def test_backfill_of_an_older_ds_changes_nothing_for_newer_ones(cfg):
    write_val_metrics(cfg, D2, 0.40)
    d2 = bless.run(cfg, D2)
    assert d2["blessed"] is True and d2["last_blessed"] is None
    d2_bytes = bless.record_path(cfg, D2).read_bytes()

    write_val_metrics(cfg, D1, 0.90)  # backfill an older day with a much better model
    d1 = bless.run(cfg, D1)
    assert d1["blessed"] is True and d1["last_blessed"] is None  # D2 is newer: not D1's predecessor
    # D2's record (its verdict and its last_blessed) is untouched; the old global registry's "current"
    # became D1's 0.90, so the next day compared against the backfill instead of D2
    assert bless.record_path(cfg, D2).read_bytes() == d2_bytes
    assert bless.last_blessed(cfg, D3, d2["metric"])["ds"] == D2


def test_later_ds_compares_with_the_newest_blessed_day_before_it(cfg):
    write_val_metrics(cfg, D1, 0.50)
    write_val_metrics(cfg, D2, 0.60)
    write_val_metrics(cfg, D3, 0.59)
    assert bless.run(cfg, D2)["blessed"] is True
    assert bless.run(cfg, D1)["blessed"] is True  # backfilled after D2
    d3 = bless.run(cfg, D3)
    assert (d3["last_blessed_ds"], d3["last_blessed"], d3["blessed"]) == (D2, 0.60, True)
    # a day that was not blessed is not "last blessed": D3 fails the margin, D4 still compares with D2
    cfg.eval = cfg.eval.model_copy(update={"bless_margin": 10.0})
    assert bless.run(cfg, D3)["blessed"] is False
    cfg.eval = cfg.eval.model_copy(update={"bless_margin": 0.0})
    write_val_metrics(cfg, "2026-01-15", 0.55)
    d4 = bless.run(cfg, "2026-01-15")
    assert (d4["last_blessed_ds"], d4["blessed"]) == (D2, False)
    assert "regresses more than 2.0% vs last blessed 0.6000" in d4["reason"]


def test_bless_record_has_no_wall_clock_and_a_bad_record_is_named(cfg):
    write_val_metrics(cfg, D1, 0.50)
    bless.run(cfg, D1)
    rec = json.loads(bless.record_path(cfg, D1).read_text())
    assert not {"at", "time", "created_at", "timestamp"} & set(rec)
    bless.record_path(cfg, D1).write_text("{not json")
    write_val_metrics(cfg, D2, 0.50)
    with pytest.raises(MerError, match=r"bless record .*ds=2026-01-10/bless.json: unreadable"):
        bless.run(cfg, D2)


# ---------------------------------------------------------------- generate_if_absent
def _small(cfg, train_days: int = 6):
    cfg.generate = cfg.generate.model_copy(update={"n_users": 200, "n_items": 600, "n_topics": 4,
                                                   "subinterests_per_topic": 4})
    cfg.build = cfg.build.model_copy(update={"train_days": train_days})
    return cfg


def _raw_files(cfg) -> dict[str, str]:
    """relative path -> sha256 of every raw file."""
    return {p.relative_to(cfg.raw_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(cfg.raw_dir.rglob("*")) if p.is_file()}


def test_generate_if_absent_writes_only_missing_days_and_never_replaces_a_partition(cfg):
    from mer.app.pipeline import generate_missing, missing_raw

    cfg = _small(cfg)
    first = generate_missing(cfg, "2026-01-13")
    assert first["generated"] is True and missing_raw(cfg, "2026-01-13") == []
    before = _raw_files(cfg)
    rows = {d: read_partition(cfg.raw_table("engagement_log"), d).num_rows
            for d in list_partitions(cfg.raw_table("engagement_log"))}
    assert list(rows) == [f"2026-01-{d:02d}" for d in range(7, 14)]

    second = generate_missing(cfg, "2026-01-15")
    after = _raw_files(cfg)
    # every existing file byte-identical (the old DAG task regenerated and replaced the whole window)
    assert {k: after[k] for k in before} == before
    assert {read_partition(cfg.raw_table("engagement_log"), d).num_rows for d in rows} == set(rows.values())
    assert sorted(second["written"]) == sorted(f"{t}/ds={d}" for t in RAW_TABLES for d in ("2026-01-14", "2026-01-15"))
    assert missing_raw(cfg, "2026-01-15") == []
    assert generate_missing(cfg, "2026-01-15") == {"generated": False, "missing": 0}
    assert _raw_files(cfg) == after


def test_a_generated_day_does_not_depend_on_the_window_end(tmp_path):
    from mer.base.config import MerConfig
    from mer.stages.datagen.synthetic import generate

    tables = {}
    for end, days in (("2026-01-15", 5), ("2026-01-13", 2)):
        cfg = _small(MerConfig(root=tmp_path / end))
        cfg.generate = cfg.generate.model_copy(update={"end_ds": date.fromisoformat(end), "days": days})
        generate(cfg)
        tables[end] = {t: read_partition(cfg.raw_table(t), "2026-01-12") for t in LOG_TABLES}
    for t in LOG_TABLES:
        assert tables["2026-01-15"][t].equals(tables["2026-01-13"][t]), t


def test_generate_only_missing_fills_a_half_written_day(cfg):
    """One log table of a day present (a crash between the two writes): only the other is written."""
    from mer.stages.datagen.synthetic import generate

    cfg = _small(cfg)
    cfg.generate = cfg.generate.model_copy(update={"end_ds": date(2026, 1, 15), "days": 1})
    generate(cfg)
    src = partition_dir(cfg.raw_table("source_interest_log"), "2026-01-15")
    kept = _raw_files(cfg)
    for p in src.iterdir():
        p.unlink()
    src.rmdir()
    out = generate(cfg, only_missing=True)
    assert out["written"] == ["source_interest_log/ds=2026-01-15"]
    assert _raw_files(cfg) == kept


# ---------------------------------------------------------------- a published version is final at its manifest
def test_after_publish_and_report_the_version_holds_exactly_its_manifest(run_cfg):
    from mer.app.pipeline import run_stage
    from mer.app.report import render
    from mer.stages.index import publish
    from mer.stages.index.storage import Store

    cfg, ds = run_cfg, "2026-01-15"
    assert run_stage(cfg, ds, "publish", publish.run, "run-1")["status"] == "published"
    store = Store(cfg)
    vkey = store.key(ds, "run-1")
    at_manifest = store.list(vkey)
    uploaded = run_stage(cfg, ds, "report", render.run)["uploaded"]

    listing = store.list(vkey)
    assert listing == at_manifest  # the report task wrote nothing into the version
    manifest = store.get_json(f"{vkey}/{publish.MANIFEST}")
    assert set(listing) == {f"{vkey}/{rel}" for rel in manifest["files"]} | {f"{vkey}/{publish.MANIFEST}"}
    for rel, meta in manifest["files"].items():
        assert hashlib.sha256(store.get_bytes(f"{vkey}/{rel}")).hexdigest() == meta["sha256"], rel
    newest = max(o["last_modified"] for o in listing.values())
    assert listing[f"{vkey}/{publish.MANIFEST}"]["last_modified"] == newest

    key = store.key("reports", ds, "run-1", "report.html")
    assert uploaded == store.url(key)
    assert store.get_bytes(key) == (cfg.run_dir(ds) / "report.html").read_bytes()
    # reports/ is no version: rollback and retention see only <ds>/<run_id>/manifest.json
    assert [(v["ds"], v["run_id"]) for v in publish.list_versions(store)] == [(ds, "run-1")]
