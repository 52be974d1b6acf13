"""Tables documented where people look: the contract's descriptions and `mer tables`."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mer.base.contract import DERIVED_TABLES, DESCRIPTIONS, RAW_TABLES, TABLE_DESCRIPTIONS
from tests.test_sql import NEW, OLD, tiny  # noqa: F401 (fixture)


@pytest.mark.parametrize("table", [*RAW_TABLES, *DERIVED_TABLES])
def test_every_contract_column_has_a_description(table):
    schema = {**RAW_TABLES, **DERIVED_TABLES}[table]
    assert TABLE_DESCRIPTIONS.get(table, "").strip()
    described = DESCRIPTIONS.get(table, {})
    assert [c for c in schema.names if not described.get(c, "").strip()] == []
    assert set(described) <= set(schema.names)  # no description of a column that is not there


def _tables(cfg, *args):
    from mer.app.cli import app

    result = CliRunner().invoke(app, ["tables", *args, "--root", str(cfg.root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_mer_tables_lists_partitions_and_newest_row_count(tiny):
    from mer.app.sql import table_summaries

    by_name = {s["table"]: s for s in table_summaries(tiny)}
    assert by_name["cr_triples"] | {"description": ""} == {
        "table": "cr_triples", "layer": "warehouse", "partitions": 2, "newest_ds": NEW, "rows_newest": 2,
        "description": ""}
    assert by_name["engagement_log"]["layer"] == "raw" and by_name["engagement_log"]["rows_newest"] == 4
    assert by_name["tune_trials"]["partitions"] == 0  # in the contract, not written yet: listed anyway
    row = next(line for line in _tables(tiny).splitlines() if "mer.cr_triples" in line)
    assert [c.strip() for c in row.split("│")[1:-1]] == ["mer.cr_triples", "2", NEW, "2"]
    assert OLD not in _tables(tiny)


def test_mer_tables_one_table_shows_columns_types_and_meanings(tiny):
    out = _tables(tiny, "quarantine")
    assert "warehouse/quarantine: 1 partition, newest ds=2026-01-15 with 1 rows" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "date" in lines["source_ds"] and "bad_column" in lines  # as the SQL views show them
    assert "reserved word" in lines["bad_column"]
    assert "the whole rejected row as JSON" in lines["row_json"]
    assert "the followed topic (source_interest_id)" in _tables(tiny, "mer.cr_triples")


def test_mer_tables_unknown_name_is_one_line(tiny):
    from mer.app.cli import app

    result = CliRunner().invoke(app, ["tables", "cr_tripels", "--root", str(tiny.root)])
    assert result.exit_code != 0
    assert "unknown table 'cr_tripels'; known tables:" in str(result.exception) and "cr_triples" in str(result.exception)
