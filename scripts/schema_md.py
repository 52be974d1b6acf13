"""Print the README's table-schema section from mer/base/contract.py (the single source of truth).

    .venv/bin/python scripts/schema_md.py   # paste between the schema markers in README.md
"""
from __future__ import annotations

import pyarrow as pa

from mer.base.contract import DERIVED_TABLES, RAW_TABLES


def table_md(name: str, schema: pa.Schema) -> str:
    cols = ", ".join(f"`{f.name}` {f.type}" for f in schema)
    return f"| `{name}` | {cols} |"


def schema_markdown() -> str:
    lines = ["| raw table (`<root>/raw/<table>/ds=…`) | columns |", "|---|---|"]
    lines += [table_md(n, s) for n, s in RAW_TABLES.items()]
    lines += ["", "| derived table (`<root>/warehouse/<table>/ds=…`) | columns |", "|---|---|"]
    lines += [table_md(n, s) for n, s in DERIVED_TABLES.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(schema_markdown())
