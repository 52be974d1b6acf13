"""`mer sql "SELECT ..."`: DuckDB over every table the pipeline has written.

Each table folder with at least one ``ds=`` partition becomes a view over
``read_parquet(..., hive_partitioning=true)`` (``ds`` stays a string), under three names:
``cr_triples`` (warehouse tables; raw tables too when the name is free), ``mer.cr_triples``
(every table) and ``raw.engagement_log`` (raw tables). Queries cover all partitions: filter
on ``ds`` for one run.
"""
from __future__ import annotations

from mer.base.config import MerConfig
from mer.base.errors import MerError
from mer.base.io import list_tables


def connect(cfg: MerConfig):
    """An in-memory DuckDB connection with a view per table (see module doc)."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE SCHEMA IF NOT EXISTS mer")
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    raw, warehouse = list_tables(cfg.raw_dir), list_tables(cfg.warehouse_dir)
    views = [("raw", n, p) for n, p in raw.items()] + [("mer", n, p) for n, p in {**raw, **warehouse}.items()]
    views += [("main", n, p) for n, p in {**raw, **warehouse}.items()]
    for schema, name, path in views:
        glob = str(path / "ds=*" / "*.parquet").replace("'", "''")
        con.execute(
            f'CREATE OR REPLACE VIEW {schema}."{name}" AS SELECT * FROM read_parquet('
            f"'{glob}', hive_partitioning = true, hive_types = {{'ds': VARCHAR}}, union_by_name = true)"
        )
    return con


def known_tables(cfg: MerConfig) -> list[str]:
    return sorted({*list_tables(cfg.raw_dir), *list_tables(cfg.warehouse_dir)})


def query(cfg: MerConfig, statement: str):
    """Run ``statement``; returns (column names, rows). Unknown tables -> MerError listing the known ones."""
    import duckdb

    con = connect(cfg)
    try:
        rel = con.execute(statement)
        return [d[0] for d in rel.description or []], rel.fetchall()
    except duckdb.CatalogException as err:
        first = str(err).splitlines()[0]
        raise MerError(f"{first}; known tables under {cfg.root}: {', '.join(known_tables(cfg)) or 'none'}") from None
    except duckdb.Error as err:
        raise MerError(f"SQL error: {str(err).splitlines()[0]}") from None
    finally:
        con.close()


def run(cfg: MerConfig, statement: str, *, max_rows: int = 1000) -> list[tuple]:
    """Print the result as a table (first ``max_rows`` rows) and return the rows."""
    from rich.console import Console
    from rich.table import Table

    columns, rows = query(cfg, statement)
    table = Table(show_lines=False)
    for c in columns:
        table.add_column(c)
    for row in rows[:max_rows]:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    console = Console()
    console.print(table)
    if len(rows) > max_rows:
        console.print(f"({len(rows)} rows, first {max_rows} shown)")
    return rows
