"""Print the README's table-schema section from mer/base/contract.py (the single source of truth).

    .venv/bin/python scripts/schema_md.py   # paste between the schema markers in README.md

Per table: what it holds, then each column's Parquet type and meaning (contract.DESCRIPTIONS), with
what the SQL views (`mer sql`, Spark SQL) change: DATE-typed date columns, renamed reserved words.
"""
from __future__ import annotations

import pyarrow as pa

from mer.base.contract import (
    DATE_COLUMNS,
    DERIVED_TABLES,
    DESCRIPTIONS,
    RAW_TABLES,
    RENAMED_COLUMNS,
    TABLE_DESCRIPTIONS,
)


def _md(text: str) -> str:
    return text.replace("|", "\\|")  # a literal pipe would split the table cell


def table_md(name: str, schema: pa.Schema) -> list[str]:
    lines = [f"**`{name}`**: {_md(TABLE_DESCRIPTIONS[name])}", "", "| column | type | description |", "|---|---|---|"]
    for f in schema:
        col = f"`{f.name}`" + (f" (SQL: `{RENAMED_COLUMNS[f.name]}`)" if f.name in RENAMED_COLUMNS else "")
        typ = f"`{f.type}`" + (" (SQL: `DATE`)" if f.name in DATE_COLUMNS else "")
        lines.append(f"| {col} | {typ} | {_md(DESCRIPTIONS[name][f.name])} |")
    return lines + [""]


def schema_markdown() -> str:
    lines = ["### Raw input: `<root>/raw/<table>/ds=…/` (SQL: `raw.<table>`)", ""]
    for n, s in RAW_TABLES.items():
        lines += table_md(n, s)
    lines += ["### Derived: `<root>/warehouse/<table>/ds=…/` (SQL: `mer.<table>`, `<table>_latest`)", ""]
    for n, s in DERIVED_TABLES.items():
        lines += table_md(n, s)
    lines.append("Every table also has `ds` (the partition; SQL: `DATE`).")
    return "\n".join(lines)


if __name__ == "__main__":
    print(schema_markdown())
