"""`mer sql "SELECT ..."` and `mer tables`: the produced tables for people.

Views live in a DuckDB file, ``<root>/views.duckdb`` (not ``mer.duckdb``: DuckDB names the catalog
after the file, and a catalog ``mer`` next to the schema ``mer`` makes ``mer.cr_triples``
ambiguous), so ``duckdb var/views.duckdb`` or DBeaver see the same names as ``mer sql``:

- ``mer.<table>`` for every table, the bare ``<table>`` too, and ``raw.<table>`` for raw input;
- ``<table>_latest`` (same schemas): the newest ``ds`` partition only;
- the analyst view of each table (mer.base.contract.analyst_view_sql, shared with Spark SQL):
  DATE-typed date columns, ``column`` renamed ``bad_column``, no pseudo rows.

A view reads ``read_parquet('<table>/ds=*/*.parquet', hive_partitioning = true)``, so partitions
written later are seen without touching the file; the views are re-created when the set of
tables (or a table's columns, or the root's path) changes. DuckDB lets one process write a file,
or many read it: ``mer sql`` opens it read-only when its views are current, writes it only to
refresh them, and when another process holds the lock it answers from an in-memory connection
with the same views.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mer.base.config import MerConfig
from mer.base.contract import (
    DATE_COLUMNS,
    DERIVED_TABLES,
    DESCRIPTIONS,
    RAW_TABLES,
    RENAMED_COLUMNS,
    TABLE_DESCRIPTIONS,
    analyst_view_sql,
)
from mer.base.errors import MerError
from mer.base.io import analyst_tables, list_partitions, list_tables, newest_file_schema, partition_dir

VIEWS_FILE = "views.duckdb"
FORMATS = ("table", "csv", "json")
TABLE_MAX_ROWS = 1000  # default cap of the table format only: csv/json are for piping everything
_BATCH = 10_000


def views_file(cfg: MerConfig) -> Path:
    return Path(cfg.root) / VIEWS_FILE


def _parquet_files(table_dir: Path, ds: str) -> list[Path]:
    return sorted(partition_dir(table_dir, ds).glob("*.parquet"))


def _scan(table_dir: Path) -> str:
    # Absolute path: the file is also opened by the duckdb CLI / DBeaver from any directory.
    glob = str(table_dir.resolve() / "ds=*" / "*.parquet").replace("'", "''")
    return (f"read_parquet('{glob}', hive_partitioning = true, hive_types = {{'ds': VARCHAR}}, "
            "union_by_name = true)")


def _columns(table_dir: Path) -> list[str]:
    """Columns as written (newest partition's footer), so a table outside the contract works too."""
    names = newest_file_schema(table_dir).names
    return names + ([] if "ds" in names else ["ds"])


def view_definitions(cfg: MerConfig) -> dict[str, str]:
    """Qualified view name -> SELECT, for every table under the root (see module doc); the ``mer``
    names also go in the default schema (bare names)."""
    views: dict[str, str] = {}
    for schema, name, path in analyst_tables(cfg.raw_dir, cfg.warehouse_dir):
        columns, source = _columns(path), _scan(path)
        for suffix, latest in (("", False), ("_latest", True)):
            select = analyst_view_sql(name, columns, source, latest=latest)
            for target in (schema, "main") if schema == "mer" else (schema,):
                views[f'{target}."{name}{suffix}"'] = select
    return views


def _stored(con) -> dict[str, str]:
    # Looked up, not tried: a failed statement would abort the refresh transaction.
    found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'mer_meta' "
                        "AND table_name = 'views'").fetchone()[0]
    if not found:  # a new file, or one created by someone else
        return {}
    return dict(con.execute("SELECT name, sql FROM mer_meta.views").fetchall())


def _create(con, views: dict[str, str], old: dict[str, str]) -> None:
    for schema in ("mer", "raw", "mer_meta"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for name in old.keys() - views.keys():  # tables that are gone; other objects in the file are left alone
        con.execute(f"DROP VIEW IF EXISTS {name}")
    for name, select in views.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {select}")
    con.execute("CREATE OR REPLACE TABLE mer_meta.views (name VARCHAR, sql VARCHAR)")
    if views:
        con.executemany("INSERT INTO mer_meta.views VALUES (?, ?)", list(views.items()))


def open_views(cfg: MerConfig):
    """(connection, how) with every view; how is "file" (current views, opened read-only),
    "refreshed" (views re-created, then reopened read-only) or "memory" (the file is locked)."""
    import duckdb

    views, path = view_definitions(cfg), views_file(cfg)
    if Path(cfg.root).is_dir():
        try:
            if path.exists():
                con = duckdb.connect(str(path), read_only=True)
                if _stored(con) == views:
                    return con, "file"
                con.close()
            con = duckdb.connect(str(path))
            try:
                con.execute("BEGIN")
                _create(con, views, _stored(con))
                con.execute("COMMIT")
            finally:
                con.close()
            # Read-only for the query itself: a long query must not hold the writer lock.
            return duckdb.connect(str(path), read_only=True), "refreshed"
        except (duckdb.IOException, duckdb.ConnectionException):
            pass  # another process writes the file (or reads it while ours is stale): same views in memory
    con = duckdb.connect()
    _create(con, views, {})
    return con, "memory"


def connect(cfg: MerConfig):
    """A DuckDB connection with a view per table (see module doc)."""
    return open_views(cfg)[0]


def known_tables(cfg: MerConfig) -> list[str]:
    return sorted({*list_tables(cfg.raw_dir), *list_tables(cfg.warehouse_dir)})


@contextmanager
def _cursor(cfg: MerConfig, statement: str) -> Iterator[tuple[list[str], Any]]:
    """(column names, result) of ``statement``; DuckDB errors (also while fetching) -> one-line MerError."""
    import duckdb

    con = connect(cfg)
    try:
        cur = con.execute(statement)
        yield [d[0] for d in cur.description or []], cur
    except duckdb.CatalogException as err:
        first = str(err).splitlines()[0]
        raise MerError(f"{first}; known tables under {cfg.root}: {', '.join(known_tables(cfg)) or 'none'}") from None
    except duckdb.Error as err:
        raise MerError(f"SQL error: {str(err).splitlines()[0]}") from None
    finally:
        con.close()


def query(cfg: MerConfig, statement: str):
    """Run ``statement``; returns (column names, rows). Unknown tables -> MerError listing the known ones."""
    with _cursor(cfg, statement) as (columns, cur):
        return columns, cur.fetchall()


# ---------------------------------------------------------------- printing values literally
def plain(value: Any, *, strict: bool = False) -> Any:
    """A JSON value for a DuckDB result value: dates/timestamps as ISO text, structs as objects,
    lists as arrays, anything else JSON lacks (Decimal, UUID, interval, blob) as its text.
    ``strict``: NaN/Infinity become null (they are not JSON)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if strict and not math.isfinite(value) else value
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, strict=strict) for v in value]
    return str(value)


def cell(value: Any, null: str = "NULL") -> str:
    """The text of one value: strings as they are, nested values as JSON literals."""
    if value is None:
        return null
    value = plain(value)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def _rows(cur, limit: int | None) -> Iterator[tuple]:
    """Up to ``limit`` rows (None: all), fetched in batches so csv/json stream."""
    left = limit
    while left is None or left > 0:
        batch = cur.fetchmany(_BATCH if left is None else min(_BATCH, left))
        if not batch:
            return
        if left is not None:
            left -= len(batch)
        yield from batch


def _rest(cur) -> int:
    """Rows not fetched yet, counted in Arrow batches (no Python objects per row)."""
    import warnings

    with warnings.catch_warnings():  # "an extra copy of the rows": of the rest only, in Arrow, to count them
        warnings.simplefilter("ignore", UserWarning)
        return sum(b.num_rows for b in cur.to_arrow_reader(100_000))


def run(cfg: MerConfig, statement: str, *, fmt: str = "table", max_rows: int | None = None) -> int:
    """Print the result of ``statement`` to stdout; returns its row count.

    table: a Rich table, values literal (never read as markup); csv: a header and RFC 4180 rows
    (NULL = empty field); json: JSON Lines, one object per row. ``max_rows`` caps the rows
    printed (default 1000 for table, none for csv/json; 0 = no cap); a cut is said on stderr."""
    if fmt not in FORMATS:
        raise MerError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if max_rows is not None and max_rows < 0:
        raise MerError(f"--max-rows must be >= 0, got {max_rows}")
    limit = max_rows if max_rows is not None else (TABLE_MAX_ROWS if fmt == "table" else None)
    limit = limit or None
    with _cursor(cfg, statement) as (columns, cur):
        shown = 0
        if fmt == "table":
            from rich.console import Console
            from rich.table import Table
            from rich.text import Text

            table = Table()
            for c in columns:
                table.add_column(Text(c), overflow="fold")  # wrap, never cut a value short with "…"
            for row in _rows(cur, limit):
                table.add_row(*(Text(cell(v)) for v in row))
                shown += 1
            Console().print(table)
        elif fmt == "csv":
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(columns)
            for row in _rows(cur, limit):
                writer.writerow([cell(v, null="") for v in row])
                shown += 1
        else:
            for row in _rows(cur, limit):
                obj = {c: plain(v, strict=True) for c, v in zip(columns, row)}
                sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
                shown += 1
        total = shown + (_rest(cur) if limit is not None and shown == limit else 0)
    if total > shown:
        print(f"(showing {shown} of {total} rows; use --max-rows or --format csv)", file=sys.stderr)
    return total


# ---------------------------------------------------------------- mer tables
def _contract(name: str):
    return RAW_TABLES.get(name) or DERIVED_TABLES.get(name)


def table_summaries(cfg: MerConfig) -> list[dict[str, Any]]:
    """Every contract table and every table on disk: layer, partitions, newest ds and its row count
    (from the Parquet footers, nothing is scanned)."""
    on_disk = {("raw", n): p for n, p in list_tables(cfg.raw_dir).items()}
    on_disk |= {("warehouse", n): p for n, p in list_tables(cfg.warehouse_dir).items()}
    names = [("raw", n) for n in RAW_TABLES] + [("warehouse", n) for n in DERIVED_TABLES]
    names += [k for k in on_disk if k not in names]
    out = []
    for layer, name in names:
        path = on_disk.get((layer, name))
        parts = [d for d in list_partitions(path) if _parquet_files(path, d)] if path else []
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in _parquet_files(path, parts[-1])) if parts else None
        out.append({"table": name, "layer": layer, "partitions": len(parts), "newest_ds": parts[-1] if parts else None,
                    "rows_newest": rows, "description": TABLE_DESCRIPTIONS.get(name, "")})
    return out


def table_columns(cfg: MerConfig, name: str) -> list[dict[str, str]]:
    """Columns of one table as the SQL views show them: name, type, description."""
    schema = _contract(name)
    if schema is None:
        path = list_tables(cfg.warehouse_dir).get(name) or list_tables(cfg.raw_dir).get(name)
        if path is None:
            known = sorted({*RAW_TABLES, *DERIVED_TABLES, *known_tables(cfg)})
            raise MerError(f"unknown table {name!r}; known tables: {', '.join(known)}")
        schema = newest_file_schema(path)
    cols = []
    for f in schema:
        typ = "date" if f.name in DATE_COLUMNS else str(f.type)
        cols.append({"column": RENAMED_COLUMNS.get(f.name, f.name), "type": typ,
                     "description": DESCRIPTIONS.get(name, {}).get(f.name, "")})
    if "ds" not in schema.names:
        cols.append({"column": "ds", "type": "date", "description": "the partition: the run's (or raw table's) day"})
    return cols


def print_tables(cfg: MerConfig, name: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    summaries = table_summaries(cfg)
    if name is None:
        # The SQL name with its description under it: fits 80 columns (the numbers never wrap).
        table = Table(title=Text(f"tables under {cfg.root}"))
        table.add_column("table (SQL name)", overflow="fold", ratio=1)
        for header in ("partitions", "newest ds", "rows"):
            table.add_column(header, no_wrap=True, justify="right" if header != "newest ds" else "left")
        for s in summaries:
            title = Text(f"{'raw' if s['layer'] == 'raw' else 'mer'}.{s['table']}", style="bold")
            title.append(f"\n{s['description']}", style="dim")
            table.add_row(title, *(Text(cell(s[k], null="–")) for k in ("partitions", "newest_ds", "rows_newest")))
        console.print(table)
        console.print(Text("rows: of the newest partition (Parquet footers). `mer tables <name>`: its columns; "
                           "`mer sql`: query them (also <table>_latest: the newest ds only)."))
        return
    name = name.split(".", 1)[1] if name.startswith(("mer.", "raw.", "main.")) else name  # the SQL name works too
    cols = table_columns(cfg, name)
    for s in (s for s in summaries if s["table"] == name):
        where = "not written yet" if not s["partitions"] else (
            f"{s['partitions']} partition{'' if s['partitions'] == 1 else 's'}, newest ds={s['newest_ds']} with {s['rows_newest']} rows")
        console.print(Text(f"{s['layer']}/{name}: {where}. {s['description']}"))
    table = Table()
    table.add_column("column", no_wrap=True)
    table.add_column("type", overflow="fold")
    table.add_column("description", overflow="fold")
    for c in cols:
        table.add_row(Text(c["column"]), Text(c["type"]), Text(c["description"]))
    console.print(table)
