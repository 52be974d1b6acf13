"""`mer serve-sql`: analyst SQL over the persistent Hive metastore, Spark Connect + Thrift JDBC in ONE JVM.

One classic SparkSession with the metastore (embedded Derby under the data root, see
session.hive_defaults) and the Spark Connect plugin (notebooks:
``SparkSession.builder.remote("sc://127.0.0.1:15002")``), plus the Thrift JDBC/ODBC server started on
the same SQLContext (beeline, DBeaver, PyHive: ``jdbc:hive2://127.0.0.1:10000``). Everything ships in
the pyspark wheel. Derby allows one JVM, so this process is the only one touching the metastore while it
runs: it writes ``<root>/serve-sql.json`` and the Spark jobs register their tables through its Connect
port (catalog.register_tables). On start it syncs every table folder (catalog.sync_catalog), which is
also how tables written without Spark (eval_metrics, tune_trials, raw input) appear.

No authentication: both endpoints bind 127.0.0.1 by default; anyone on the host can query.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

from mer.base.config import MerConfig
from mer.base.errors import MerError
from mer.base.io import write_json_atomic
from mer.stages.spark_jobs import catalog

# A parent that used SparkSession.builder.remote() exports these; inherited, they turn the classic builder
# below into a Connect client (CONNECT_URL_NOT_SET) instead of the server.
CONNECT_CLIENT_ENV = ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE", "SPARK_API_MODE")


def _port_busy(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def _hive_session(cfg: MerConfig, extra: dict[str, str] | None = None):
    from mer.stages.spark_jobs.session import get_spark

    for var in CONNECT_CLIENT_ENV:
        os.environ.pop(var, None)
    return get_spark(cfg, "mer-serve-sql", hive=True, extra={"spark.api.mode": "classic", **(extra or {})})


def register_only(cfg: MerConfig) -> dict:
    """`mer serve-sql --register-only`: sync the metastore now and exit; through the server when one runs
    (it holds Derby), otherwise by opening the embedded metastore in this process."""
    server = catalog.running_server(cfg)
    if server is not None:
        done = catalog.sync_through_server(cfg, server)
        return {"via": server["connect"], "views": len(done["views"]), "new_tables": done["new_tables"],
                "errors": done["errors"]}
    spark = _hive_session(cfg)
    try:
        done = catalog.sync_catalog(spark, cfg)
    finally:
        spark.stop()
    return {"via": str(cfg.root / "metastore_db"), "views": len(done["views"]), "new_tables": done["new_tables"],
            "errors": done["errors"]}


def serve(cfg: MerConfig, host: str = "127.0.0.1", connect_port: int = 15002, thrift_port: int = 10000) -> None:
    """Start both endpoints, print one READY line, serve until SIGTERM/SIGINT, then stop cleanly."""
    t0 = time.perf_counter()
    running = catalog.running_server(cfg)
    if running is not None:
        raise MerError(f"a SQL server already serves {cfg.root} at {running['connect']} (pid {running.get('pid')}); "
                       "the embedded metastore allows one process")
    for what, port in (("Spark Connect", connect_port), ("Thrift JDBC", thrift_port)):
        if _port_busy(host, port):
            raise MerError(f"{what} port {host}:{port} is already in use; pick another with "
                           f"--{'connect' if what == 'Spark Connect' else 'thrift'}-port")
    cfg.root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SPARK_LOCAL_IP", host)
    spark = _hive_session(cfg, {
        "spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
        "spark.ui.showConsoleProgress": "false",  # a progress bar per client query would fill the log
        "spark.connect.grpc.binding.address": host,
        "spark.connect.grpc.binding.port": str(connect_port),
        "spark.hadoop.hive.server2.thrift.bind.host": host,
        "spark.hadoop.hive.server2.thrift.port": str(thrift_port),
    })
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    info_file = catalog.server_file(cfg)
    try:
        done = catalog.sync_catalog(spark, cfg)
        for error in done["errors"]:
            print(f"warning: not registered: {error}", flush=True)
        jvm = spark.sparkContext._jvm
        jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithContext(spark._jsparkSession.sqlContext())
        info = {
            "pid": os.getpid(), "host": host, "connect_port": connect_port, "thrift_port": thrift_port,
            "connect": f"sc://{host}:{connect_port}", "jdbc": f"jdbc:hive2://{host}:{thrift_port}",
        }
        write_json_atomic(info_file, info)
        print(f"READY connect={info['connect']} jdbc={info['jdbc']} root={cfg.root} "
              f"views={len(done['views'])} new_tables={len(done['new_tables'])} errors={len(done['errors'])} "
              f"in {time.perf_counter() - t0:.1f}s", flush=True)
        stop.wait()
    finally:
        info_file.unlink(missing_ok=True)
        # stops the Connect plugin and the Thrift server (a SparkContext listener) and releases Derby
        spark.stop()
    print("stopped", flush=True)
