"""``mer demo`` / ``make demo``: the whole DAG, for real, on one machine.

Generates synthetic logs when absent, starts a local S3 endpoint (moto on 127.0.0.1, bucket
mirrored under ``<root>/s3``), points Airflow at ``<root>/airflow_home`` (SQLite), migrates
its metadata DB and runs ``mer_daily`` for ``ds`` through ``dag.test()``: the scheduler's
dependency, trigger-rule, mapping and short-circuit logic with the tasks run in this process.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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


def migrate_db() -> None:
    """``airflow db migrate`` (creates or upgrades the metadata DB; a no-op when current)."""
    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise MerError(f"airflow db migrate failed (AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')}):\n{proc.stderr[-2000:]}")


def run_dag(ds: str, run_conf: dict[str, Any] | None = None, mark_success_pattern: str | None = None) -> dict[str, str]:
    """One ``dag.test()`` run of mer_daily for ``ds``; returns the state of every task (map index kept).

    ``mark_success_pattern``: task ids matching it are marked successful without running
    (Airflow's own switch, used to test the wiring alone).
    """
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise MerError(f"the DAG folder has import errors: {bag.import_errors}")
    dag = bag.get_dag(DAG_ID)
    logical = datetime.fromisoformat(ds).replace(tzinfo=timezone.utc)
    dr = dag.test(logical_date=logical, run_conf=run_conf or {}, mark_success_pattern=mark_success_pattern)
    states = {}
    for ti in dr.get_task_instances():
        name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}.{ti.map_index}"
        states[name] = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
    states["__run__"] = str(dr.state.value if hasattr(dr.state, "value") else dr.state)
    states["__run_id__"] = dr.run_id
    return states


def failure_message(cfg: MerConfig, ds: str, states: dict[str, str]) -> str:
    failed = [t for t, s in states.items() if s == "failed"]
    records = read_stages(cfg, ds)
    lines = [f"DAG {DAG_ID} run for ds={ds} failed; failed tasks: {', '.join(failed) or 'none recorded'}"]
    for t in failed:
        err = (records.get(t) or {}).get("error")
        if err:
            lines.append(f"  {t}: {err}")
    lines.append(f"task logs: {os.environ.get('AIRFLOW__LOGGING__BASE_LOG_FOLDER')}")
    return "\n".join(lines)


def run(cfg: MerConfig, ds: str, run_conf: dict[str, Any] | None = None) -> dict[str, Any]:
    validate_ds(ds)
    env = airflow_env(cfg)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    conf = {"generate_if_absent": True, **(run_conf or {})}
    with patched_env(env):
        migrate_db()
        with local_s3(cfg.publish.bucket, mirror=cfg.root / "s3" / cfg.publish.bucket) as endpoint:
            states = run_dag(ds, conf)
    if states["__run__"] != "success":
        raise MerError(failure_message(cfg, ds, states))
    records = read_stages(cfg, ds)
    bless = (records.get("bless") or {}).get("summary") or {}
    publish = records.get("publish") or {}
    report = cfg.run_dir(ds) / "report.html"
    summary = {
        "ds": ds,
        "run_id": states["__run_id__"],
        "blessed": bless.get("blessed"),
        "bless_reason": bless.get("reason"),
        "published": publish.get("status") == "success",
        "publish": publish.get("summary"),
        "report": str(report) if report.exists() else None,
        "tables": str(cfg.warehouse_dir),
        "s3_endpoint_was": endpoint,
        "s3_mirror": str(cfg.root / "s3" / cfg.publish.bucket / cfg.publish.prefix.strip("/")),
        "airflow_home": env["AIRFLOW_HOME"],
        "tasks": {t: s for t, s in states.items() if not t.startswith("__")},
    }
    _print_where(summary)
    return summary


def _print_where(s: dict[str, Any]) -> None:
    print(f"\nMER demo for ds={s['ds']}: model {'blessed' if s['blessed'] else 'NOT blessed'} ({s['bless_reason']})", file=sys.stderr)
    print(f"  report:    {s['report']}", file=sys.stderr)
    print(f"  tables:    {s['tables']}  (try: mer sql \"SELECT count(*) FROM training_examples\")", file=sys.stderr)
    print(f"  published: {s['s3_mirror']} (local mirror of the S3 bucket)", file=sys.stderr)
    print(f"  airflow:   AIRFLOW_HOME={s['airflow_home']}  (make ui to browse the run)", file=sys.stderr)
