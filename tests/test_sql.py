"""Analyst access: `mer sql` (DuckDB views in <root>/views.duckdb) and the Spark SQL catalog over the built tables.

Most tests use a tiny root written with mer.base.io.write_partition (no Spark): every answer is known."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mer.base.config import load_config
from mer.base.contract import CR_TRIPLES, ENGAGEMENT_LOG, EVAL_METRICS, QUARANTINE, TRAINING_EXAMPLES
from mer.base.errors import MerError
from mer.base.io import write_partition
from tests.raw_fixture import DS, built_small  # noqa: F401 (fixture)

OLD, NEW = "2026-01-14", "2026-01-15"
T1, T2 = datetime(2026, 1, 13, 10, 0), datetime(2026, 1, 14, 9, 30, 15)


def _cr(n: int, ds: str) -> pa.Table:
    rows = [{"condition_id": 100 + i % 2, "user_id": i, "item_id": 10 + i, "event_ts": T1, "action": "click",
             "request_id": f"r{i}", "event_date": ds} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=CR_TRIPLES)


def write_tiny_root(root):
    """cr_triples with two run partitions (3 rows at OLD, 2 at NEW), one quarantine row, eval_metrics with
    an _eval pseudo row, one training example with markup-like text and a list of timestamps, raw logs."""
    cfg = load_config(root=root)
    write_partition(cfg.table("cr_triples"), OLD, _cr(3, OLD))
    write_partition(cfg.table("cr_triples"), NEW, _cr(2, NEW))
    write_partition(cfg.table("quarantine"), NEW, pa.Table.from_pylist(
        [{"source_table": "engagement_log", "source_ds": NEW, "reason": "null_id", "column": "user_id",
          "row_json": "{}"}], schema=QUARANTINE))
    write_partition(cfg.table("eval_metrics"), NEW, pa.Table.from_pylist(
        [{"model": "cr", "variant": "full", "split": "eval", "metric": "hr@100", "segment": "all", "value": 0.5},
         {"model": "_eval", "variant": "", "split": "eval", "metric": "records", "segment": "all", "value": 7.0}],
        schema=EVAL_METRICS))
    write_partition(cfg.table("training_examples"), NEW, pa.Table.from_pylist(
        [{"event_id": "[abc] visible?", "user_id": 1, "item_id": 2, "event_ts": T2, "action": "save",
          "event_date": NEW, "hist_item_ids": [5, 6], "hist_actions": ["click", "hide"], "hist_ts": [T1, T2],
          "hist_valid": [True, False], "condition_id": None, "segment": "core", "split": "eval"}],
        schema=TRAINING_EXAMPLES))
    write_partition(cfg.raw_table("engagement_log"), NEW, pa.Table.from_pylist(
        [{"event_id": f"e{i}", "event_ts": T2, "user_id": 1, "item_id": i, "action": "click", "request_id": "r",
          "surface": "search"} for i in range(4)], schema=ENGAGEMENT_LOG))
    return cfg


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_root(tmp_path / "var")


def _sql(cfg, *args):
    from mer.app.cli import app

    result = CliRunner().invoke(app, ["sql", *args, "--root", str(cfg.root)])
    assert result.exit_code == 0, result.output
    return result


# ---------------------------------------------------------------- names and analyst views
def test_mer_and_bare_and_raw_names(tiny):
    from mer.app.sql import query

    for name in ("mer.cr_triples", "cr_triples"):
        assert query(tiny, f"SELECT count(*) FROM {name}")[1] == [(5,)]
    assert query(tiny, "SELECT count(*) FROM raw.engagement_log")[1] == [(4,)]
    assert query(tiny, "SELECT count(*) FROM mer.engagement_log_latest")[1] == [(4,)]


def test_latest_view_counts_only_the_newest_partition(tiny):
    from mer.app.sql import query

    assert query(tiny, "SELECT ds, count(*) FROM mer.cr_triples GROUP BY 1 ORDER BY 1")[1] == [
        (datetime.fromisoformat(OLD).date(), 3), (datetime.fromisoformat(NEW).date(), 2)]
    assert query(tiny, "SELECT count(*), min(ds) FROM mer.cr_triples_latest")[1] == [
        (2, datetime.fromisoformat(NEW).date())]


def test_date_columns_are_dates(tiny):
    from mer.app.sql import query

    _, rows = query(tiny, "SELECT typeof(ds), typeof(event_date) FROM mer.cr_triples LIMIT 1")
    assert rows == [("DATE", "DATE")]
    _, rows = query(tiny, "SELECT count(*) FROM cr_triples WHERE ds = DATE '2026-01-15' AND event_date >= ds")
    assert rows == [(2,)]


def test_quarantine_column_is_bad_column_and_eval_pseudo_rows_are_gone(tiny):
    from mer.app.sql import query

    assert query(tiny, "SELECT bad_column, typeof(source_ds) FROM mer.quarantine")[1] == [("user_id", "DATE")]
    assert query(tiny, "SELECT DISTINCT model FROM mer.eval_metrics")[1] == [("cr",)]


def test_unknown_table_is_a_clear_error(tiny):
    from mer.app.sql import query

    with pytest.raises(MerError, match=r"cr_tripels.*known tables.*cr_triples"):
        query(tiny, "SELECT count(*) FROM cr_tripels")


# ---------------------------------------------------------------- printing
def test_table_prints_values_literally(tiny):
    out = _sql(tiny, "SELECT event_id, hist_ts FROM training_examples").stdout
    assert "[abc] visible?" in out  # was rendered as Rich markup: " visible?"
    assert '"2026-01-13 10:00:00"' in out and '"2026-01-14 09:30:15"' in out  # the list was blank


def test_csv_and_json_formats(tiny):
    out = _sql(tiny, "SELECT event_id, hist_ts, condition_id, ds FROM training_examples", "--format", "csv").stdout
    assert out.splitlines() == ["event_id,hist_ts,condition_id,ds",
                                '[abc] visible?,"[""2026-01-13 10:00:00"", ""2026-01-14 09:30:15""]",,2026-01-15']
    out = _sql(tiny, "SELECT event_id, hist_ts, condition_id, ds FROM training_examples ORDER BY 1",
               "--format", "json").stdout
    assert [json.loads(line) for line in out.splitlines()] == [
        {"event_id": "[abc] visible?", "hist_ts": ["2026-01-13 10:00:00", "2026-01-14 09:30:15"],
         "condition_id": None, "ds": "2026-01-15"}]


def test_truncation_is_said(tiny):
    result = _sql(tiny, "SELECT * FROM range(5)", "--max-rows", "3")
    assert "(showing 3 of 5 rows; use --max-rows or --format csv)" in result.stderr
    assert "│ 2 " in result.stdout and "│ 3 " not in result.stdout
    result = _sql(tiny, "SELECT * FROM range(1200)", "--format", "csv")  # csv/json print everything by default
    assert len(result.stdout.splitlines()) == 1201 and "showing" not in result.stderr
    result = _sql(tiny, "SELECT * FROM range(1200)")  # the table format stops at 1000
    assert "(showing 1000 of 1200 rows" in result.stderr


def test_mer_sql_counts_cr_triples_cli(tiny):
    assert "│ 2 " in _sql(tiny, "SELECT count(*) AS n FROM mer.cr_triples_latest").stdout


# ---------------------------------------------------------------- the persistent file
def test_views_file_is_reused_and_refreshed(tiny):
    import duckdb

    from mer.app.sql import open_views, views_file

    con, how = open_views(tiny)
    con.close()
    assert how == "refreshed" and views_file(tiny).is_file()
    con, how = open_views(tiny)  # nothing changed: opened read-only, not rewritten
    con.close()
    assert how == "file"
    # Another client (duckdb CLI, DBeaver) sees the same views.
    other = duckdb.connect(str(views_file(tiny)), read_only=True)
    try:
        assert other.execute("SELECT count(*) FROM mer.cr_triples_latest").fetchall() == [(2,)]
        assert other.execute("SELECT count(*) FROM cr_triples").fetchall() == [(5,)]
    finally:
        other.close()
    # A new partition is seen without touching the file; a new table re-creates the views.
    write_partition(tiny.table("cr_triples"), "2026-01-16", _cr(1, "2026-01-16"))
    con, how = open_views(tiny)
    assert how == "file" and con.execute("SELECT count(*) FROM cr_triples_latest").fetchall() == [(1,)]
    con.close()
    write_partition(tiny.table("item_frequency"), NEW, pa.table({"item_id": [1], "count": [3], "prob": [1.0]}))
    con, how = open_views(tiny)
    assert how == "refreshed" and con.execute("SELECT count FROM mer.item_frequency").fetchall() == [(3,)]
    con.close()


def _hold(path, read_only: bool):
    """Another process holding the views file open (another `mer sql`, the duckdb CLI) until stdin closes."""
    code = textwrap.dedent(f"""
        import sys, duckdb
        con = duckdb.connect({str(path)!r}, read_only={read_only})
        print("ready", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _release(proc):
    proc.stdin.close()
    proc.wait(timeout=60)


def test_second_mer_sql_works_while_another_holds_the_file(tiny):
    from mer.app.sql import open_views, query, views_file

    open_views(tiny)[0].close()
    reader = _hold(views_file(tiny), read_only=True)  # e.g. a long `mer sql` query
    try:
        con, how = open_views(tiny)
        con.close()
        assert how == "file"  # readers share the file
        # Views are stale (a new table) but the file cannot be written: same views in memory.
        write_partition(tiny.table("item_frequency"), NEW, pa.table({"item_id": [1], "count": [3], "prob": [1.0]}))
        con, how = open_views(tiny)
        con.close()
        assert how == "memory"
        assert query(tiny, "SELECT count(*) FROM mer.item_frequency")[1] == [(1,)]
    finally:
        _release(reader)
    writer = _hold(views_file(tiny), read_only=False)  # a writer locks the file even for readers
    try:
        assert query(tiny, "SELECT count(*) FROM mer.cr_triples_latest")[1] == [(2,)]
        assert open_views(tiny)[1] == "memory"
    finally:
        _release(writer)


# ---------------------------------------------------------------- Spark
def test_spark_catalog_registers_every_table(built_small, spark):
    from pyspark.sql.types import DateType

    from mer.stages.spark_jobs.catalog import sync_catalog

    cfg, _ = built_small
    done = sync_catalog(spark, cfg)
    assert done["errors"] == []
    assert {"mer.cr_triples", "mer.cr_triples_latest", "mer.training_examples", "mer.quarantine",
            "raw.engagement_log", "mer.engagement_log"} <= set(done["views"])
    assert spark.sql("SELECT count(*) AS n FROM mer.cr_triples").first()["n"] == 6
    row = spark.sql(f"SELECT count(*) AS n FROM mer.training_examples WHERE ds = DATE'{DS}' AND split = 'eval'").first()
    assert row["n"] == 3
    assert spark.sql("SELECT count(*) AS n FROM raw.engagement_log").first()["n"] == 12
    assert isinstance(spark.table("mer.cr_triples_latest").schema["ds"].dataType, DateType)
    # idempotent: a second sync re-creates nothing
    assert sync_catalog(spark, cfg)["new_tables"] == []
