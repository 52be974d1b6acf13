"""A backfill over 2 dates through REAL Airflow components: ``airflow backfill create`` against a
running scheduler (LocalExecutor), dag-processor and execution API server, on a temporary
AIRFLOW_HOME (SQLite), publishing to a local S3 endpoint (``python -m mer.app.local_s3``).

Unlike tests/test_demo_e2e.py (``dag.test()`` in one process), every task here runs the way it
does in production: parsed from the serialized DAG, launched by the executor in its own process,
talking to the API server, with its params coming from the backfill's ``--dag-run-conf``.
Checks: the dry run lists exactly the 2 logical dates, the 2 backfill runs succeed, each date has
its warehouse partitions, and 2 versions are published with LATEST naming the newest. Two dates, not
more: a run through the scheduler takes ~3 min here (each task its own process, each Spark task its own
JVM), and a third date would test nothing the second does not.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mer.base.config import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.spark]  # the DAG runs the Spark stages

DATES = ("2026-01-14", "2026-01-15")
BUCKET = "mer-backfill"
PREFIX = "mer/index"
# Generous: a busy machine must not fail it (the whole test took ~15 min at load average ~23 on 2 cores).
TIMEOUT_S = float(os.environ.get("MER_TEST_BACKFILL_TIMEOUT_S", 15 * 60))
AIRFLOW = [sys.executable, "-m", "airflow"]

# Tiny but real (as in test_demo_e2e): 6 days of logs end on the last date, 3 train days + 1 eval
# day, so each date finds its whole window.
TINY = {
    "MER_GENERATE__END_DS": DATES[-1],
    "MER_GENERATE__DAYS": "6",
    "MER_GENERATE__N_USERS": "120",
    "MER_GENERATE__N_ITEMS": "300",
    "MER_GENERATE__N_TOPICS": "6",
    "MER_BUILD__TRAIN_DAYS": "3",
    "MER_BUILD__EVAL_CORPUS_SIZE": "200",
    "MER_BUILD__HISTORY_LEN": "10",
    "MER_TRAIN__EPOCHS": "1",
    "MER_TRAIN__MIN_STEPS": "0",  # else ~200 steps (up to 8 epochs) per tower whatever the epochs
    "MER_TRAIN__EARLY_STOP_RECORDS": "100",
    "MER_TRAIN__HIDDEN_DIM": "32",
    "MER_TRAIN__EMBED_DIM": "16",
    "MER_TRAIN__BATCH_SIZE": "128",
    "MER_EVAL__KS": "[10,50]",
    "MER_EVAL__SERVE_BUDGET": "50",
    "MER_EVAL__MAX_EVAL_RECORDS": "200",
    "MER_INDEX__RECALL_K": "10",
    "MER_INDEX__RECALL_QUERIES": "50",
    "MER_INDEX__RECALL_TARGET": "0.9",
    "MER_PUBLISH__BUCKET": BUCKET,
    "MER_PUBLISH__PREFIX": PREFIX,
    "MER_DAG__RETRY_DELAY_S": "2",
    "MER_DAG__RAW_WAIT_TIMEOUT_S": "120",
}
# The backfill's run conf: no extra baselines, one shard, and always blessed (tiny data need not
# beat the baseline) so that every run publishes.
RUN_CONF = {"extra_baselines": [], "shards": 1, "bless_margin": -1.0, "bless_tolerance": 1.0}
TERMINAL = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{what} not listening on {port} after {timeout:.0f}s:\n{tail(log)}")


def tail(path: Path, n: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as err:
        return f"({path}: {err})"


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) from Linux /proc; empty elsewhere."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        table[int(stat.parent.name)] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below ``pid``, as (pid, start time): a reused pid is not the same process."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(child)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append((child, table[child][1]))
            todo.append(child)
    return out


class Stack:
    """The Airflow components and the S3 endpoint as subprocesses, each in its own process group."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs, self.procs = env, logs, {}

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, env=self.env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        out.close()
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail(self.logs / f'{name}.log')}")

    def stop(self, name: str, grace: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        # Task processes start their own sessions (the task supervisor calls setsid): collect them
        # before the scheduler goes, they would be orphans afterwards.
        family = descendants(proc.pid)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)  # the whole group: executor workers, JVMs, ...
            except ProcessLookupError:
                pass
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        alive = _proc_table()
        for pid, start in family:  # whatever of its family is left (own process groups included)
            if alive.get(pid, (0, None))[1] != start:
                continue
            try:
                pgid = os.getpgid(pid)
                if pgid != os.getpgid(0):
                    os.killpg(pgid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop_all(self) -> None:
        for name in ("scheduler", "dag-processor", "api-server", "s3"):
            self.stop(name)


def airflow(env: dict[str, str], *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*AIRFLOW, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"airflow {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def query(db: Path, sql: str, *params) -> list[tuple]:
    """Read the metadata DB directly: much cheaper than one airflow CLI process per poll."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def task_logs(home: Path, run_id: str, task_id: str) -> str:
    files = sorted((home / "logs" / "dag_id=mer_daily" / f"run_id={run_id}").glob(f"task_id={task_id}/**/*.log"))
    return "\n".join(f"--- {f.relative_to(home)}\n{tail(f, 5000)}" for f in files) or "(no log file)"


def failure_report(home: Path, db: Path, logs: Path) -> str:
    lines = []
    for run_id, task_id, map_index, state in query(
        db, "SELECT run_id, task_id, map_index, state FROM task_instance "
            "WHERE state NOT IN ('success', 'skipped', 'removed') ORDER BY run_id, start_date, task_id"
    ):
        lines.append(f"== {run_id} {task_id}[{map_index}] {state}")
        if state in ("failed", "up_for_retry"):
            lines.append(task_logs(home, run_id, task_id))
    lines.append("== scheduler log (tail)\n" + tail(logs / "scheduler.log", 3000))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backfill")
    root, home, logs = tmp / "var", tmp / "airflow_home", tmp / "proc_logs"
    for d in (root, home, logs):
        d.mkdir()
    db = home / "airflow.db"
    api_port, s3_port, log_port = free_port(), free_port(), free_port()
    endpoint = f"http://127.0.0.1:{s3_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MER_", "AWS_"))}
    env.update(
        TINY,
        MER_ROOT=str(root),
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",  # 2 cores; SQLite copes with the few writers this makes
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{db}",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(log_port),  # not 8793: other Airflows may run here
        # Only the backfill's runs: no scheduled run for "yesterday" once the DAG is unpaused.
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="600",  # parsed once is enough here
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="mer-local",  # throwaway values the local endpoint accepts
        AWS_SECRET_ACCESS_KEY="mer-local-secret",
        AWS_DEFAULT_REGION="us-east-1",
    )
    started = time.monotonic()
    gen = subprocess.run(
        [sys.executable, "-m", "mer.app.cli", "generate"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert gen.returncode == 0, gen.stderr[-3000:]
    airflow(env, "db", "migrate")

    stack = Stack(env, logs)
    try:
        s3 = stack.start("s3", [sys.executable, "-m", "mer.app.local_s3", "--port", str(s3_port)])
        api = stack.start("api-server", [*AIRFLOW, "api-server", "--apps", "execution", "-H", "127.0.0.1",
                                         "-p", str(api_port)])
        stack.start("dag-processor", [*AIRFLOW, "dag-processor"])
        stack.start("scheduler", [*AIRFLOW, "scheduler"])
        wait_port(s3_port, s3, "local S3", logs / "s3.log")
        wait_port(api_port, api, "api-server", logs / "api-server.log")

        # The dag-processor serializes the DAG; the backfill is planned from the serialized DAG.
        deadline = time.monotonic() + 180
        while not query(db, "SELECT 1 FROM serialized_dag WHERE dag_id = 'mer_daily'"):
            stack.check_alive()
            assert time.monotonic() < deadline, "dag-processor did not serialize mer_daily:\n" + tail(logs / "dag-processor.log")
            time.sleep(2)
        errors = query(db, "SELECT filename, stacktrace FROM import_error")
        assert not errors, errors
        airflow(env, "dags", "unpause", "mer_daily")

        window = ["--dag-id", "mer_daily", "--from-date", DATES[0], "--to-date", DATES[-1]]
        dry = airflow(env, "backfill", "create", *window, "--dry-run")
        planned = sorted(ln.split("|")[1].strip()[:10] for ln in dry.stdout.splitlines() if ln.startswith("| 20"))
        assert planned == list(DATES), dry.stdout

        create = ["backfill", "create", *window, "--max-active-runs", "1", "--dag-run-conf", json.dumps(RUN_CONF)]
        for attempt in range(3):  # SQLite: the CLI's insert can meet a busy scheduler ("database is locked")
            proc = airflow(env, *create, check=False)
            if proc.returncode == 0 or query(db, "SELECT 1 FROM backfill WHERE dag_id = 'mer_daily'"):
                break
            time.sleep(3)
        assert query(db, "SELECT 1 FROM backfill WHERE dag_id = 'mer_daily'"), proc.stderr[-3000:]

        deadline = time.monotonic() + TIMEOUT_S
        while True:
            runs = query(db, "SELECT run_id, logical_date, state FROM dag_run WHERE dag_id = 'mer_daily' "
                             "AND run_type = 'backfill' ORDER BY logical_date")
            if len(runs) == len(DATES) and all(state in TERMINAL for _, _, state in runs):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"backfill not done after {TIMEOUT_S:.0f}s: {runs}\n" + failure_report(home, db, logs))
            stack.check_alive()
            time.sleep(5)
        seconds = time.monotonic() - started
        print(f"\nbackfill of {len(DATES)} dates through the scheduler: {seconds:.0f}s (setup included)")

        out = airflow(env, "dags", "list-runs", "mer_daily", "-o", "json").stdout
        listed = json.loads([ln for ln in out.splitlines() if ln.startswith("[")][-1])
        failures = failure_report(home, db, logs) if any(s != "success" for *_, s in runs) else ""

        import boto3

        s3c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="mer-local", aws_secret_access_key="mer-local-secret")
        keys = [o["Key"] for page in s3c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])]
        latest = json.loads(s3c.get_object(Bucket=BUCKET, Key=f"{PREFIX}/LATEST")["Body"].read()) \
            if f"{PREFIX}/LATEST" in keys else None
    finally:
        stack.stop_all()
    return {"runs": runs, "listed": listed, "failures": failures, "root": root, "keys": keys, "latest": latest,
            "seconds": seconds}


def test_backfill_runs_all_succeed(backfilled):
    runs = backfilled["runs"]
    assert [r[1][:10] for r in runs] == list(DATES)
    assert all(state == "success" for *_, state in runs), f"{runs}\n{backfilled['failures']}"
    # The CLI sees the same runs (run ids carry the end of the data interval; ds is the logical date).
    listed = {r["logical_date"][:10]: r["state"] for r in backfilled["listed"]}
    assert listed == {d: "success" for d in DATES}


def test_each_date_has_its_partitions(backfilled):
    wh = backfilled["root"] / "warehouse"
    for table in ("training_examples", "item_embeddings", "clean_engagement_log"):
        parts = sorted(p.name for p in (wh / table).glob("ds=*") if any(p.rglob("*.parquet")))
        assert parts == [f"ds={d}" for d in DATES], (table, parts)


def test_each_date_published_latest_names_the_newest(backfilled):
    keys, latest = backfilled["keys"], backfilled["latest"]
    manifests = sorted(k for k in keys if k.startswith(f"{PREFIX}/") and k.endswith("/manifest.json"))
    versions = {tuple(k[len(PREFIX) + 1:].split("/")[:2]) for k in manifests}
    assert sorted(ds for ds, _ in versions) == list(DATES), manifests
    run_ids = {r[0] for r in backfilled["runs"]}
    assert {run_id for _, run_id in versions} == run_ids
    assert latest is not None, keys
    assert (latest["ds"], latest["run_id"]) in versions
    # Runs went oldest first, one at a time (--max-active-runs 1): the last publish is the newest date.
    assert latest["ds"] == DATES[-1]
    assert latest["manifest"] in manifests
