"""The Spark stages on a real standalone cluster (master + one worker on 127.0.0.1), submitted the way
README "Running on a Spark cluster" says: ``spark-submit --master spark://... --py-files mer_code.zip
mer/app/spark_submit.py <job> --ds D``. Their output must equal what local mode writes from the same raw input.

The pip-installed Spark ships no ``sbin/start-master.sh``, so master and worker are started with
``bin/spark-class`` (what those scripts run) as child processes, and stopped in a finalizer.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mer.base.config import REPO_ROOT

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # a master, a worker and three Spark applications: ~2.5 min

D = "2026-01-15"
TINY = {
    "MER_GENERATE__END_DS": D,
    "MER_GENERATE__DAYS": "5",
    "MER_GENERATE__N_USERS": "120",
    "MER_GENERATE__N_ITEMS": "300",
    "MER_GENERATE__N_TOPICS": "6",
    "MER_BUILD__TRAIN_DAYS": "4",
    "MER_BUILD__EVAL_CORPUS_SIZE": "200",
    "MER_BUILD__HISTORY_LEN": "10",
    "MER_SPARK__SHUFFLE_PARTITIONS": "2",
}
JOBS = ("validate_raw", "training_data")
# Derived table -> the columns that identify a row (for a sort that does not depend on partitioning).
COMPARED = {
    "clean_engagement_log": ("event_id",),
    "cr_triples": ("condition_id", "user_id", "item_id", "event_ts", "request_id"),
    "training_examples": ("event_id",),
    "item_frequency": ("item_id",),
    "eval_corpus": ("item_id",),
    "item_neighbors": ("item_id", "neighbor_id"),
}


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(root: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MER_", "PYSPARK_SUBMIT", "SPARK_"))}
    env.update(TINY)
    env.update({
        "MER_ROOT": str(root),
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(tmp / "logs"),
        "SPARK_PID_DIR": str(tmp / "pids"),
        "SPARK_WORKER_DIR": str(tmp / "work"),
        # Executors' Python workers must be this interpreter (pyarrow, torch), not the first python3 on PATH.
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": "",  # the code reaches executors through --py-files only
    })
    return env


def alive_workers(webui: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json", timeout=2) as resp:
            return int(json.load(resp).get("aliveworkers", 0))
    except (OSError, ValueError):
        return -1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone master and one worker (1 core, 1g) on 127.0.0.1; yields (master URL, env, tmp)."""
    tmp = tmp_path_factory.mktemp("spark_cluster")
    root = tmp / "cluster_root"
    env = base_env(root, tmp)
    for d in ("logs", "pids", "work"):
        (tmp / d).mkdir()
    port, webui, wport, wui = free_port(), free_port(), free_port(), free_port()
    spark_class = str(spark_home() / "bin" / "spark-class")
    procs: list[subprocess.Popen] = []

    def launch(name: str, args: list[str]) -> subprocess.Popen:
        log = open(tmp / "logs" / f"{name}.out", "wb")
        proc = subprocess.Popen([spark_class, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc

    def stop() -> None:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the JVM's own process group (start_new_session)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    try:
        launch("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                          "--webui-port", str(webui)])
        master = f"spark://127.0.0.1:{port}"
        launch("worker", ["org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--port",
                          str(wport), "--webui-port", str(wui), "--cores", "1", "--memory", "1g",
                          "--work-dir", str(tmp / "work")])
        deadline = time.time() + 60
        while alive_workers(webui) < 1:
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                logs = "\n".join((tmp / "logs" / f"{n}.out").read_text(errors="replace")[-2000:]
                                 for n in ("master", "worker"))
                pytest.fail(f"standalone cluster did not come up (worker not registered):\n{logs}")
            time.sleep(0.5)
        yield master, env, tmp, webui
    finally:
        stop()


def table_digest(path: Path, keys: tuple[str, ...]) -> tuple[int, str]:
    """(rows, sha256 of the rows sorted by ``keys``, every column, in column-name order)."""
    import pyarrow.dataset as pads

    table = pads.dataset(str(path), format="parquet").to_table()
    table = table.select(sorted(table.column_names)).sort_by([(k, "ascending") for k in keys])
    h = hashlib.sha256()
    for row in table.to_pylist():
        h.update(json.dumps(row, default=str, sort_keys=True).encode())
    return table.num_rows, h.hexdigest()


def test_spark_jobs_on_standalone_cluster_match_local_mode(cluster, tmp_path):
    master, env, tmp, webui = cluster
    local_root, cluster_root = tmp_path / "local_root", Path(env["MER_ROOT"])

    # Same raw input for both: generated once (seeded), copied.
    gen = subprocess.run([sys.executable, "-m", "mer.app.cli", "generate"], env={**env, "MER_ROOT": str(local_root)},
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr[-3000:]
    shutil.copytree(local_root / "raw", cluster_root / "raw")

    # Local mode: both jobs in one process (one JVM), through the same entry point.
    local = subprocess.run(
        [sys.executable, "-m", "tests.programs.spark_jobs_in_one_process", D, *JOBS],
        env={**env, "MER_ROOT": str(local_root), "MER_SPARK__MASTER": "local[1]"}, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=180)
    assert local.returncode == 0, local.stderr[-3000:]

    # Cluster mode, exactly as README "Running on a Spark cluster" describes.
    from mer.app.spark_submit import package_code

    code_zip = package_code(tmp / "dist")
    submit = str(spark_home() / "bin" / "spark-submit")
    for job in JOBS:
        proc = subprocess.run(
            [submit, "--master", master, "--py-files", str(code_zip),
             "--conf", "spark.executor.memory=768m", "--conf", "spark.ui.enabled=false",
             str(REPO_ROOT / "mer" / "app" / "spark_submit.py"), job, "--ds", D],
            env=env, cwd=tmp, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, f"{job} on {master} failed:\n{proc.stderr[-4000:]}"
        summary = json.loads(proc.stdout[proc.stdout.index("{"):])
        assert summary, job

    # The jobs really ran on the cluster: the master lists them as completed applications.
    with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json", timeout=5) as resp:
        state = json.load(resp)
    apps = state.get("completedapps", []) + state.get("activeapps", [])
    assert len(apps) >= len(JOBS), f"the master saw {len(apps)} applications: {apps}"
    assert all(a.get("cores", 1) <= 1 for a in apps)
    assert any((tmp / "work").rglob("stderr")), "no executor ran on the worker"

    for table, keys in COMPARED.items():
        local_part = local_root / "warehouse" / table / f"ds={D}"
        cluster_part = cluster_root / "warehouse" / table / f"ds={D}"
        assert cluster_part.is_dir(), f"{table}: no ds={D} partition written by the cluster run"
        n_local, h_local = table_digest(local_part, keys)
        n_cluster, h_cluster = table_digest(cluster_part, keys)
        assert n_local > 0, table
        assert (n_cluster, h_cluster) == (n_local, h_local), f"{table}: cluster != local"
