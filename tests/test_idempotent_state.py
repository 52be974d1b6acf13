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

import boto3
import pyarrow as pa
import pytest

from mer.base.contract import EVAL_METRICS, LOG_TABLES, RAW_TABLES
from mer.base.errors import MerError
from mer.base.io import list_partitions, partition_dir, read_partition, write_partition
from mer.stages.model import bless

D1, D2, D3 = "2026-01-10", "2026-01-12", "2026-01-14"


def _metrics(cfg, ds: str, candidate: float, baseline: float = 0.20) -> None:
    metric = f"hr@{cfg.eval.ks[0]}"
    rows = [(cfg.eval.candidate_model, "", "val", metric, "all", candidate),
            (cfg.eval.baseline_model, "", "val", metric, "all", baseline)]
    write_partition(cfg.table("eval_metrics"), ds,
                    pa.Table.from_pylist([dict(zip(EVAL_METRICS.names, r)) for r in rows], schema=EVAL_METRICS))


# ---------------------------------------------------------------- bless
def test_bless_rerun_of_a_ds_gives_the_same_verdict_and_bytes(cfg):
    _metrics(cfg, D1, 0.50)
    assert bless.run(cfg, D1)["blessed"] is True
    _metrics(cfg, D2, 0.495)  # within bless_tolerance of D1: blessed
    first = bless.run(cfg, D2)
    content = bless.record_path(cfg, D2).read_bytes()
    # the old global registry made D2 its own "last blessed" on a re-run (and stamped the clock)
    second = bless.run(cfg, D2)
    assert first == second and first["blessed"] is True
    assert (first["last_blessed_ds"], first["last_blessed"]) == (D1, 0.50)
    assert bless.record_path(cfg, D2).read_bytes() == content
    assert not (cfg.artifacts_dir / "blessed.json").exists()


def test_backfill_of_an_older_ds_changes_nothing_for_newer_ones(cfg):
    _metrics(cfg, D2, 0.40)
    d2 = bless.run(cfg, D2)
    assert d2["blessed"] is True and d2["last_blessed"] is None
    d2_bytes = bless.record_path(cfg, D2).read_bytes()

    _metrics(cfg, D1, 0.90)  # backfill an older day with a much better model
    d1 = bless.run(cfg, D1)
    assert d1["blessed"] is True and d1["last_blessed"] is None  # D2 is newer: not D1's predecessor
    # D2's record (its verdict and its last_blessed) is untouched; the old global registry's "current"
    # became D1's 0.90, so the next day compared against the backfill instead of D2
    assert bless.record_path(cfg, D2).read_bytes() == d2_bytes
    assert bless.last_blessed(cfg, D3, d2["metric"])["ds"] == D2


def test_later_ds_compares_with_the_newest_blessed_day_before_it(cfg):
    _metrics(cfg, D1, 0.50)
    _metrics(cfg, D2, 0.60)
    _metrics(cfg, D3, 0.59)
    assert bless.run(cfg, D2)["blessed"] is True
    assert bless.run(cfg, D1)["blessed"] is True  # backfilled after D2
    d3 = bless.run(cfg, D3)
    assert (d3["last_blessed_ds"], d3["last_blessed"], d3["blessed"]) == (D2, 0.60, True)
    # a day that was not blessed is not "last blessed": D3 fails the margin, D4 still compares with D2
    cfg.eval = cfg.eval.model_copy(update={"bless_margin": 10.0})
    assert bless.run(cfg, D3)["blessed"] is False
    cfg.eval = cfg.eval.model_copy(update={"bless_margin": 0.0})
    _metrics(cfg, "2026-01-15", 0.55)
    d4 = bless.run(cfg, "2026-01-15")
    assert (d4["last_blessed_ds"], d4["blessed"]) == (D2, False)
    assert "regresses more than 2.0% vs last blessed 0.6000" in d4["reason"]


def test_bless_record_has_no_wall_clock_and_a_bad_record_is_named(cfg):
    _metrics(cfg, D1, 0.50)
    bless.run(cfg, D1)
    rec = json.loads(bless.record_path(cfg, D1).read_text())
    assert not {"at", "time", "created_at", "timestamp"} & set(rec)
    bless.record_path(cfg, D1).write_text("{not json")
    _metrics(cfg, D2, 0.50)
    with pytest.raises(MerError, match=r"bless record .*ds=2026-01-10/bless.json: unreadable"):
        bless.run(cfg, D2)
