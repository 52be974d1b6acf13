"""Analyst access from Spark SQL: every raw and warehouse table, registered in a catalog.

``sync_catalog(spark, cfg)`` makes any session's catalog match the data root, idempotently:

* storage tables: one external partitioned Parquet table per table folder (LOCATION, so dropping a
  registration never deletes data), ``mer_files.<table>`` for warehouse tables and ``raw_files.<table>``
  for raw input; partitions are synced from the ``ds=`` folders;
* what people query, the analyst views of mer.base.contract (DATE columns, renamed reserved words,
  no pseudo rows): ``mer.<table>`` and ``mer.<table>_latest`` (newest ds only) for every table
  (raw ones when the name is free, as in ``mer sql``), ``raw.<table>`` / ``raw.<table>_latest``.

Which catalog: the persistent Hive metastore of ``mer serve-sql`` (mer/app/sql_server.py; embedded
Derby under the data root, single-JVM). While that server runs it is the only process that may open
Derby, so it writes ``<root>/serve-sql.json`` and ``register_tables`` (called by the Spark jobs when
they finish) syncs THROUGH it with a Spark Connect client. With no server running the jobs leave the
metastore alone (opening Derby costs a JVM-side Hive start-up per job, and would fail on the lock of a
server of another process): the server syncs everything when it starts, and ``mer serve-sql
--register-only`` syncs on demand. A registration failure never fails a job: it becomes a warning in
the job summary, since the data itself is written and committed.
"""
from __future__ import annotations

import socket
from pathlib import Path

from mer.base.config import MerConfig
from mer.base.contract import analyst_view_sql
from mer.base.io import analyst_tables, list_partitions, newest_file_schema, partition_dir, read_json

SERVER_FILE = "serve-sql.json"  # under the data root while `mer serve-sql` serves it
STORAGE_DB = {"mer": "mer_files", "raw": "raw_files"}


def server_file(cfg: MerConfig) -> Path:
    return cfg.root / SERVER_FILE


def running_server(cfg: MerConfig) -> dict | None:
    """The ``mer serve-sql`` serving this root (its serve-sql.json), if its Connect port answers.

    A file left behind by a killed server points at a closed port and reads as no server."""
    try:
        info = read_json(server_file(cfg))
        with socket.create_connection((info["host"], int(info["connect_port"])), timeout=1):
            return info
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _columns(spark, path: Path) -> list[tuple[str, str]]:
    """(name, Spark type) of the newest partition's files (read from a footer, no Spark job), plus ``ds``."""
    from mer.stages.spark_jobs.warehouse import spark_type

    schema = newest_file_schema(path)
    try:
        cols = [(f.name, spark_type(f.type).simpleString()) for f in schema if f.name != "ds"]
    except TypeError:  # a type the contract never uses: let Spark say what it is
        newest = partition_dir(path, list_partitions(path)[-1])
        cols = [(f.name, f.dataType.simpleString()) for f in spark.read.parquet(str(newest)).schema.fields
                if f.name != "ds"]
    return cols + [("ds", "string")]


def _existing_columns(spark, qualified: str) -> list[tuple[str, str]] | None:
    if not spark.catalog.tableExists(qualified):
        return None
    return [(f.name, f.dataType.simpleString()) for f in spark.table(qualified).schema.fields]


def sync_catalog(spark, cfg: MerConfig) -> dict:
    """Register every table folder of ``cfg.root`` in ``spark``'s catalog (any session: the Hive one of
    the server, a Spark Connect client of it, or a plain in-memory one). Idempotent; a table whose
    columns changed is re-created (external, so only its registration goes). Returns the views, the
    tables (re)created and one error line per table that could not be registered (the others are)."""
    for db in ("mer", "raw", *STORAGE_DB.values()):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    views: list[str] = []
    new_tables: list[str] = []
    errors: list[str] = []
    storage_done: dict[Path, tuple[str, list[str]]] = {}  # a raw table is both raw.<t> and mer.<t>
    for db, name, path in analyst_tables(cfg.raw_dir, cfg.warehouse_dir):
        try:
            if path not in storage_done:
                storage = f"{STORAGE_DB[db]}.{name}"
                cols = _columns(spark, path)
                if _existing_columns(spark, storage) != cols:
                    location = str(path).replace("\\", "\\\\").replace("'", "\\'")
                    spark.sql(f"DROP TABLE IF EXISTS {storage}")
                    ddl = ", ".join(f"`{c}` {t}" for c, t in cols)
                    spark.sql(f"CREATE TABLE {storage} ({ddl}) USING parquet PARTITIONED BY (ds) LOCATION '{location}'")
                    new_tables.append(storage)
                # adds the new ds= folders and drops the deleted ones (retention), from one listing
                spark.sql(f"MSCK REPAIR TABLE {storage} SYNC PARTITIONS")
                storage_done[path] = (storage, [c for c, _ in cols])
            storage, columns = storage_done[path]
            for suffix, latest in (("", False), ("_latest", True)):
                view = f"{db}.{name}{suffix}"
                body = analyst_view_sql(name, columns, storage, quote="`", latest=latest)
                spark.sql(f"CREATE OR REPLACE VIEW {view} AS {body}")
                views.append(view)
        except Exception as err:  # noqa: BLE001 - one unreadable folder must not keep every other table out
            errors.append(f"{db}.{name} ({path}): {_first_line(err)}")
    return {"views": views, "new_tables": new_tables, "errors": errors}


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def register_tables(spark, cfg: MerConfig) -> str:
    """Called by the Spark jobs when they finish: sync the running SQL server's metastore, if any.

    ``spark`` (the job's session, in-memory catalog) is not used for the metastore: its catalog dies
    with the job. Returns one line for the job summary; never raises (the job's data is committed)."""
    server = running_server(cfg)
    if server is None:
        return f"no `mer serve-sql` serves {cfg.root}; it registers every table when it starts"
    try:
        done = sync_through_server(cfg, server)
    except Exception as err:  # noqa: BLE001 - any client/server failure is a warning, never a failed job
        return f"warning: tables not registered in the SQL server at {server['connect']}: {_first_line(err)}"
    line = f"registered in {server['connect']}: {len(done['views'])} views, {len(done['new_tables'])} new tables"
    if done["errors"]:
        line = f"warning: {line}; not registered: {'; '.join(done['errors'])}"
    return line


def sync_through_server(cfg: MerConfig, server: dict) -> dict:
    """``sync_catalog`` over a Spark Connect client of the running server (it alone holds Derby)."""
    # The Connect builder, not SparkSession.builder.remote(): the latter exports SPARK_CONNECT_MODE_ENABLED,
    # which would turn every later classic session of this process (the job's, the tests') into a client.
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    client = ConnectSession.builder.remote(server["connect"]).create()
    try:
        return sync_catalog(client, cfg)
    finally:
        client.stop()


def analyst_session(cfg: MerConfig | None = None):
    """A session that sees every table: ``analyst_session().sql("SELECT ... FROM mer.cr_triples")``.

    A Spark Connect client of the running ``mer serve-sql`` when there is one (nothing to register);
    otherwise a local session that registers every table in its in-memory catalog first."""
    from mer.base.config import load_config
    from mer.stages.spark_jobs.session import get_spark

    cfg = cfg or load_config()
    server = running_server(cfg)
    if server is not None:
        from pyspark.sql.connect.session import SparkSession as ConnectSession

        return ConnectSession.builder.remote(server["connect"]).create()
    spark = get_spark(cfg, "mer-analyst")
    sync_catalog(spark, cfg)
    return spark
