"""`mer serve-sql`: Spark Connect and Thrift JDBC clients query the persistent metastore of a built root;
the Spark jobs register through the running server; a restarted server knows the tables already."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import date

import pytest

from mer.base.config import MerConfig
from mer.stages.spark_jobs import catalog
from tests.raw_fixture import DS, built_small  # noqa: F401 (fixture)

NEXT_DS = "2026-01-16"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(root, cport: int, tport: int, log):
    env = dict(os.environ)
    for var in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE"):
        env.pop(var, None)
    # C1 JIT and the serial GC halve the JVM start-up on a loaded 2-core machine; a smaller heap suffices.
    env["PYSPARK_SUBMIT_ARGS"] = '--driver-java-options "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC" pyspark-shell'
    env["MER_SPARK__DRIVER_MEMORY"] = "1g"
    cmd = [sys.executable, "-m", "mer.app.cli", "serve-sql", "--root", str(root),
           "--connect-port", str(cport), "--thrift-port", str(tport)]
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready = re.search(r"^READY .*$", log.read_text(), re.MULTILINE)
        if ready:
            return proc, ready.group(0)
        if proc.poll() is not None:
            pytest.fail(f"mer serve-sql exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"mer serve-sql not ready:\n{log.read_text()[-3000:]}")


def _stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def _hive_rows(port: int, statement: str):
    from pyhive import hive

    with hive.connect(host="127.0.0.1", port=port, username="analyst") as conn:
        cur = conn.cursor()
        cur.execute(statement)
        return cur.fetchall(), cur.description


def test_register_tables_without_server_leaves_the_metastore_alone(tmp_path):
    cfg = MerConfig(root=tmp_path)
    assert catalog.register_tables(None, cfg).startswith(f"no `mer serve-sql` serves {tmp_path}")
    # a serve-sql.json left by a killed server points at a closed port: still no server
    catalog.server_file(cfg).write_text(f'{{"host": "127.0.0.1", "connect_port": {_free_port()}, "connect": "x"}}')
    assert catalog.running_server(cfg) is None


@pytest.mark.spark
@pytest.mark.slow  # a Spark Connect server and a Thrift JDBC server, each its own JVM: ~80 s
def test_serve_sql_connect_and_jdbc_over_persistent_metastore(built_small, tmp_path):
    pytest.importorskip("pyhive")
    from pyspark.sql.connect.session import SparkSession as ConnectSession
    from pyspark.sql.types import DateType

    built, _ = built_small
    cfg = MerConfig(root=tmp_path / "var")
    for sub in ("raw", "warehouse"):
        shutil.copytree(built.root / sub, cfg.root / sub)
    cport, tport = _free_port(), _free_port()

    proc, ready = _start(cfg.root, cport, tport, tmp_path / "serve1.log")
    try:
        assert "new_tables=0" not in ready  # first start: every table folder registered
        assert catalog.running_server(cfg)["connect"] == f"sc://127.0.0.1:{cport}"
        # Derby admits one JVM: a second server on the root is refused at once, naming the first
        second = subprocess.run([sys.executable, "-m", "mer.app.cli", "serve-sql", "--root", str(cfg.root),
                                 "--connect-port", str(_free_port()), "--thrift-port", str(_free_port())],
                                capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 2 and f"already serves {cfg.root} at sc://127.0.0.1:{cport}" in second.stderr
        # a job that writes a new day registers it through the server (the only process holding Derby)
        shutil.copytree(cfg.table("cr_triples") / f"ds={DS}", cfg.table("cr_triples") / f"ds={NEXT_DS}")
        assert catalog.register_tables(None, cfg).startswith(f"registered in sc://127.0.0.1:{cport}")
        # an unreadable table folder is named in a warning; it keeps no other table out and fails no job
        broken = cfg.table("broken_table") / f"ds={DS}"
        broken.mkdir(parents=True)
        (broken / "part-00000.parquet").write_bytes(b"not parquet")
        line = catalog.register_tables(None, cfg)
        assert line.startswith(f"warning: registered in sc://127.0.0.1:{cport}") and "mer.broken_table (" in line

        client = ConnectSession.builder.remote(f"sc://127.0.0.1:{cport}").create()
        try:
            assert client.sql("SELECT count(*) AS n FROM mer.cr_triples").first()["n"] == 12
            latest = client.sql("SELECT ds, count(*) AS n FROM mer.cr_triples_latest GROUP BY ds")
            assert isinstance(latest.schema["ds"].dataType, DateType)
            assert [tuple(r) for r in latest.collect()] == [(date.fromisoformat(NEXT_DS), 6)]
            assert client.sql("SELECT count(*) AS n FROM raw.engagement_log").first()["n"] == 12
        finally:
            client.stop()

        rows, _ = _hive_rows(tport, "SELECT count(*) FROM mer.cr_triples")
        assert rows == [(12,)]
        rows, description = _hive_rows(tport, "SELECT ds FROM mer.cr_triples_latest LIMIT 1")
        assert rows == [(NEXT_DS,)] and description[0][1] == "DATE_TYPE"
    finally:
        _stop(proc)
    assert not catalog.server_file(cfg).exists()

    # a new server process on the same root: the metastore already holds every table
    proc, ready = _start(cfg.root, cport, tport, tmp_path / "serve2.log")
    try:
        assert "new_tables=0 errors=1" in ready  # known tables kept; the broken folder still named
        rows, _ = _hive_rows(tport, "SELECT count(*) FROM mer.cr_triples")
        assert rows == [(12,)]
    finally:
        _stop(proc)
