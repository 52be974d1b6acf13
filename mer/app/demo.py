"""``mer demo`` / ``make demo``: the whole DAG, for real, on one machine.

Generates synthetic logs when absent, starts a local S3 endpoint (moto on 127.0.0.1, bucket
mirrored under ``<root>/s3``), points Airflow at ``<root>/airflow_home`` (SQLite), migrates
its metadata DB and runs ``mer_daily`` for ``ds`` through ``dag.test()``: the scheduler's
dependency, trigger-rule, mapping and short-circuit logic with the tasks run in this process.

The terminal gets one line per task and a summary; everything the run prints (Airflow, Great
Expectations, the Spark JVM) goes to ``<root>/logs/demo-<ds>.log``, and each task's share of it
is also written where Airflow keeps task logs, so ``make ui`` shows the demo's task logs.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, TextIO

from mer.app.local_s3 import local_s3, patched_env
from mer.app.pipeline import read_stages
from mer.base.config import REPO_ROOT, MerConfig
from mer.base.errors import MerError, validate_ds

DAG_ID = "mer_daily"


def airflow_env(cfg: MerConfig) -> dict[str, str]:
    """Environment that makes Airflow use a project-local home, SQLite and this repo's dags/."""
    home = cfg.root / "airflow_home"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "MER_ROOT": str(cfg.root),
    }


def demo_log_path(cfg: MerConfig, ds: str) -> Path:
    return cfg.root / "logs" / f"demo-{ds}.log"


def migrate_db() -> None:
    """``airflow db migrate`` (creates or upgrades the metadata DB; a no-op when current)."""
    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise MerError(f"airflow db migrate failed (AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')}):\n{proc.stderr[-2000:]}")


@contextmanager
def captured_output(log_path: Path) -> Iterator[TextIO]:
    """Send file descriptors 1 and 2 to ``log_path`` and yield a stream to the terminal.

    At the descriptor level, not ``sys.stdout``: Airflow's and GX's loggers hold their own stream
    objects, and the Spark JVM (started inside a task) writes its progress bars to the fd it inherits.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    console = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield console
    finally:
        # py4j logs "Closing down clientserver connection" from its atexit hook, after this has ended.
        logging.getLogger("py4j").setLevel(logging.WARNING)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)
        console.close()


def task_label(task_id: str, map_index: int | None, rendered: str | None = None) -> str:
    """``train_simple_baselines[two_tower]``: a mapped task by its map_index_template name, else its index."""
    if map_index is None or map_index < 0:
        return task_id
    return f"{task_id}[{rendered or map_index}]"


class TaskProgress:
    """An Airflow listener (the task-instance hooks of Airflow's plugin API), called in this process
    because ``dag.test()`` runs tasks in-process.

    For each task that runs: one terminal line (name, state, seconds), and the part of the captured
    output written while it ran copied to the task's log file under Airflow's ``base_log_folder``
    (named by ``log_filename_template``), which is where the api-server looks for a finished task's log.
    """

    def __init__(self, console: TextIO | None, log_path: Path | None):
        from airflow.configuration import conf

        self.console = console
        self.log_path = log_path
        self.log_folder = Path(conf.get("logging", "base_log_folder"))
        self.template = conf.get("logging", "log_filename_template")
        self._started: dict[tuple, tuple[int, float]] = {}

    def _offset(self) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        return self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0

    @staticmethod
    def _key(ti: Any) -> tuple:
        return ti.run_id, ti.task_id, ti.map_index, ti.try_number

    def running(self, ti: Any) -> None:
        self._started[self._key(ti)] = (self._offset(), time.monotonic())

    def finished(self, ti: Any, state: str, error: object = None) -> None:
        start, t0 = self._started.pop(self._key(ti), (None, time.monotonic()))
        seconds = time.monotonic() - t0
        if self.console is not None:
            label = task_label(ti.task_id, ti.map_index, getattr(ti, "rendered_map_index", None))
            why = f"  {str(error).strip().splitlines()[0][:160]}" if error and str(error).strip() else ""
            self.console.write(f"  {label:<44} {state:<13} {seconds:7.1f} s{why}\n")
        if self.log_path is not None and start is not None:
            self._write_task_log(ti, start)

    def _write_task_log(self, ti: Any, start: int) -> None:
        import jinja2

        end = self._offset()
        with open(self.log_path, "rb") as f:
            f.seek(start)
            text = f.read(end - start).decode("utf-8", errors="replace")
        rel = jinja2.Template(self.template).render(ti=ti, try_number=ti.try_number)
        path = self.log_folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(record) + "\n" for record in log_records(text)))


# A line of Airflow's console log renderer: "2026-01-15T10:00:00.123456Z [info     ] message ..."
_CONSOLE_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\S+Z) \[(\w+)\s*\] (.*)$")


def log_records(text: str) -> Iterator[dict[str, str]]:
    """Captured console text -> the JSON lines Airflow writes for a task log (timestamp, level, event),
    so the UI shows levels and times in their columns; other lines (Spark, tracebacks) are events as they are."""
    for line in text.split("\n"):  # not splitlines(): it splits at \r too
        line = line.rsplit("\r", 1)[-1]  # progress bars redraw with \r: keep what the line finally showed
        m = _CONSOLE_LINE.match(line)
        if m:
            yield {"timestamp": m[1], "level": m[2], "event": m[3].rstrip()}
        elif line.strip():
            yield {"event": line}


def _listener(progress: TaskProgress) -> Any:
    """The hook implementations, as an object pluggy registers (built here: importing Airflow at module
    import would read its config before :func:`run` has pointed AIRFLOW_HOME at the data root)."""
    from airflow.listeners import hookimpl

    class Listener:
        @hookimpl
        def on_task_instance_running(self, previous_state, task_instance):
            progress.running(task_instance)

        @hookimpl
        def on_task_instance_success(self, previous_state, task_instance):
            progress.finished(task_instance, "success")

        @hookimpl
        def on_task_instance_skipped(self, previous_state, task_instance):
            progress.finished(task_instance, "skipped")

        @hookimpl
        def on_task_instance_failed(self, previous_state, task_instance, error):
            # called for a try that will be retried too: say which
            progress.finished(task_instance, _state(task_instance.state or "failed"), error)

    return Listener()


def _state(value: Any) -> str:
    return str(value.value if hasattr(value, "value") else value)


def run_dag(
    ds: str,
    run_conf: dict[str, Any] | None = None,
    mark_success_pattern: str | None = None,
    console: TextIO | None = None,
    log_path: Path | None = None,
) -> dict[str, str]:
    """One ``dag.test()`` run of mer_daily for ``ds``; returns the state of every task (map index kept).

    ``mark_success_pattern``: task ids matching it are marked successful without running
    (Airflow's own switch, used to test the wiring alone). ``console``: where a line per finished
    task goes; ``log_path``: the file fds 1/2 are captured to (see :func:`captured_output`), whose
    slices become the tasks' Airflow log files.
    """
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.listener import get_listener_manager

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise MerError(f"the DAG folder has import errors: {bag.import_errors}")
    dag = bag.get_dag(DAG_ID)
    logical = datetime.fromisoformat(ds).replace(tzinfo=timezone.utc)
    listener = _listener(TaskProgress(console, log_path))
    manager = get_listener_manager()
    manager.add_listener(listener)
    try:
        dr = dag.test(logical_date=logical, run_conf=run_conf or {}, mark_success_pattern=mark_success_pattern)
    finally:
        manager.pm.unregister(listener)
    _start_run_at_first_task(dr)
    states = {}
    for ti in dr.get_task_instances():
        name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}.{ti.map_index}"
        states[name] = _state(ti.state)
    states["__run__"] = _state(dr.state)
    states["__run_id__"] = dr.run_id
    return states


def _start_run_at_first_task(dr: Any) -> None:
    """``dag.test()`` records the run as started at its logical date (apache/airflow#66127), so the UI
    shows a demo run lasting days; the run started when its first task did."""
    from sqlalchemy import func, select, update

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        first = session.scalar(
            select(func.min(TaskInstance.start_date)).where(TaskInstance.dag_id == dr.dag_id, TaskInstance.run_id == dr.run_id)
        )
        if first is not None:
            session.execute(update(DagRun).where(DagRun.id == dr.id).values(start_date=first))


def failure_message(cfg: MerConfig, ds: str, states: dict[str, str], log_path: Path | None = None) -> str:
    failed = [t for t, s in states.items() if s == "failed"]
    records = read_stages(cfg, ds)
    lines = [f"DAG {DAG_ID} run for ds={ds} failed; failed tasks: {', '.join(failed) or 'none recorded'}"]
    for t in failed:
        err = (records.get(t) or {}).get("error")
        if err:
            lines.append(f"  {t}: {err}")
    if log_path is not None:
        lines.append(f"full log: {log_path}")
    lines.append(f"task logs: {os.environ.get('AIRFLOW__LOGGING__BASE_LOG_FOLDER')} (or `make ui`)")
    return "\n".join(lines)


def run(cfg: MerConfig, ds: str, run_conf: dict[str, Any] | None = None) -> dict[str, Any]:
    validate_ds(ds)
    env = airflow_env(cfg)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    conf = {"generate_if_absent": True, **(run_conf or {})}
    log_path = demo_log_path(cfg, ds)
    started = time.monotonic()
    with patched_env(env), captured_output(log_path) as console:
        console.write(f"mer demo: DAG {DAG_ID} for ds={ds} (full log: {log_path})\n")
        migrate_db()
        with local_s3(cfg.publish.bucket, mirror=cfg.root / "s3" / cfg.publish.bucket) as endpoint:
            states = run_dag(ds, conf, console=console, log_path=log_path)
    if states["__run__"] != "success":
        raise MerError(failure_message(cfg, ds, states, log_path))
    records = read_stages(cfg, ds)
    bless = (records.get("bless") or {}).get("summary") or {}
    publish = records.get("publish") or {}
    report = cfg.run_dir(ds) / "report.html"
    summary = {
        "ds": ds,
        "run_id": states["__run_id__"],
        "seconds": round(time.monotonic() - started, 1),
        "blessed": bless.get("blessed"),
        "bless_reason": bless.get("reason"),
        "bless": bless,
        "published": publish.get("status") == "success",
        "publish": publish.get("summary"),
        "report": str(report) if report.exists() else None,
        "tables": str(cfg.warehouse_dir),
        "s3_endpoint_was": endpoint,
        "s3_mirror": str(cfg.root / "s3" / cfg.publish.bucket / cfg.publish.prefix.strip("/")),
        "airflow_home": env["AIRFLOW_HOME"],
        "log": str(log_path),
        "tasks": {t: s for t, s in states.items() if not t.startswith("__")},
        "sample_user": sample_user(cfg, ds),
    }
    with open(log_path, "a") as f:  # the machine-readable summary, for whoever reads the log later
        f.write("@@summary " + json.dumps(summary, default=str) + "\n")
    print(summary_text(summary, cfg))
    return summary


def sample_user(cfg: MerConfig, ds: str) -> int | None:
    """A user the published index can answer for (the first of the DCM user export), so the suggested
    `mer query` works on whatever data the demo ran on; None when nothing was exported."""
    import pyarrow.parquet as pq

    from mer.stages.index.layout import users_export_path

    path = users_export_path(cfg, ds, "dcm")
    if not path.exists():
        return None
    users = pq.read_table(path, columns=["user_id"]).column("user_id")
    return int(users[0].as_py()) if len(users) else None


def summary_text(s: dict[str, Any], cfg: MerConfig) -> str:
    """What a person reads after ``make demo``: the verdict, where things are, what to try next."""
    tasks = s["tasks"]
    counts: dict[str, int] = {}
    for state in tasks.values():
        counts[state] = counts.get(state, 0) + 1
    not_run = sorted(t for t, st in tasks.items() if st != "success")
    b = s.get("bless") or {}
    if b:
        verdict = (f"{b.get('model')} {'blessed' if b.get('blessed') else 'NOT blessed'} on {b.get('metric')} "
                   f"({b.get('split', 'val')}): {b.get('reason')}")
    else:
        verdict = "no bless decision recorded"
    pub = s.get("publish") or {}
    published = (f"{pub.get('version')} ({pub.get('status')}) under {s['s3_mirror']}" if s["published"]
                 else f"nothing new (LATEST unchanged) under {s['s3_mirror']}")
    root = "" if cfg.root.resolve() == (REPO_ROOT / "var").resolve() else f" --root {cfg.root}"
    lines = [
        "",
        (f"MER demo ds={s['ds']}: run {s['run_id']} succeeded in {s['seconds']:.0f} s "
         f"({', '.join(f'{n} {st}' for st, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))})"),
        f"  verdict:   {verdict}",
        f"  report:    {s['report']}",
        f"  tables:    {s['tables']}",
        f"  published: {published}",
        f"  full log:  {s['log']}  (task logs also in the Airflow UI)",
    ]
    if not_run:
        lines.append(f"  not run:   {', '.join(f'{t} ({tasks[t]})' for t in not_run)}")
    lines += [
        "next:",
        "  make ui                 # Airflow UI on http://127.0.0.1:8080: this run, its task logs, backfills",
        f"  .venv/bin/mer tables{root}    # every table: partitions, rows, what it holds",
        f"  .venv/bin/mer sql \"SELECT segment, count(*) FROM mer.training_examples_latest GROUP BY 1\"{root}",
    ]
    if s.get("sample_user") is not None:
        lines.append(f"  .venv/bin/mer query --user {s['sample_user']}{root}    # a user's candidates from the published index")
    return "\n".join(lines)
