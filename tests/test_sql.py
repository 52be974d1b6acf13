"""Analyst access: `mer sql` (DuckDB) and the Spark SQL catalog answer over the built tables."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mer.base.errors import MerError
from tests.raw_fixture import DS, built_small  # noqa: F401 (fixture)


def test_mer_sql_counts_cr_triples(built_small):
    from mer.app.cli import app

    cfg, summary = built_small
    result = CliRunner().invoke(app, ["sql", "SELECT count(*) AS n FROM cr_triples", "--root", str(cfg.root)])
    assert result.exit_code == 0, result.output
    assert "│ 6 " in result.output and summary["cr_triples"] == 6


def test_sql_names_and_partitions(built_small):
    from mer.app.sql import query

    cfg, _ = built_small
    cols, rows = query(cfg, "SELECT ds, count(*) FROM mer.training_examples GROUP BY ds")
    assert cols[0] == "ds" and rows == [(DS, 9)]
    _, rows = query(cfg, "SELECT count(*) FROM raw.engagement_log WHERE action = 'impression'")
    assert rows == [(2,)]
    _, rows = query(cfg, "SELECT condition_id, count(*) FROM cr_triples GROUP BY 1 ORDER BY 1")
    assert rows == [(100, 4), (200, 2)]


def test_sql_unknown_table_is_a_clear_error(built_small):
    from mer.app.sql import query

    cfg, _ = built_small
    with pytest.raises(MerError, match=r"cr_tripels.*known tables.*cr_triples"):
        query(cfg, "SELECT count(*) FROM cr_tripels")


def test_spark_catalog_registers_every_table(built_small, spark):
    from mer.stages.spark_jobs.catalog import register_tables

    cfg, _ = built_small
    names = register_tables(spark, cfg)
    assert {"mer.cr_triples", "mer.training_examples", "mer.quarantine", "raw.engagement_log",
            "mer.engagement_log"} <= set(names)
    assert spark.sql("SELECT count(*) AS n FROM mer.cr_triples").first()["n"] == 6
    row = spark.sql(f"SELECT count(*) AS n FROM mer.training_examples WHERE ds = '{DS}' AND split = 'eval'").first()
    assert row["n"] == 3
    assert spark.sql("SELECT count(*) AS n FROM raw.engagement_log").first()["n"] == 12
