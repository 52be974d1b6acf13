"""End to end through real Airflow (``dag.test``) with every real stage, on tiny synthetic data,
publishing to moto's S3 server on 127.0.0.1 (the demo's local endpoint, mirrored to disk).

Sequence (one subprocess, one AIRFLOW_HOME): ds=D published; D again -> a second version, same
tables; D with a huge bless margin -> not blessed, publish skipped, LATEST unchanged; then
the day before D -> with D, two partitions, LATEST still on D. Skipped while a stage module is missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mer.base.config import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.spark]  # the DAG runs the Spark stages

D = "2026-01-15"
DAYS = ("2026-01-14",)  # one backfilled day: each DAG run here costs about a minute

# Tiny but real: every stage runs, on a few hundred users.
TINY = {
    "MER_GENERATE__END_DS": D,
    "MER_GENERATE__DAYS": "6",
    "MER_GENERATE__N_USERS": "150",
    "MER_GENERATE__N_ITEMS": "400",
    "MER_GENERATE__N_TOPICS": "6",
    "MER_BUILD__TRAIN_DAYS": "3",
    "MER_BUILD__EVAL_CORPUS_SIZE": "300",
    "MER_BUILD__HISTORY_LEN": "10",
    "MER_TRAIN__EPOCHS": "1",
    "MER_TRAIN__MIN_STEPS": "0",
    "MER_TRAIN__EMBED_DIM": "16",
    "MER_TRAIN__BATCH_SIZE": "128",
    "MER_EVAL__KS": "[10,50]",
    "MER_EVAL__SERVE_BUDGET": "50",
    "MER_EVAL__MAX_EVAL_RECORDS": "300",
    "MER_INDEX__RECALL_K": "10",
    "MER_INDEX__RECALL_QUERIES": "50",
    "MER_INDEX__RECALL_TARGET": "0.9",
    "MER_PUBLISH__BUCKET": "mer-e2e",
    "MER_DAG__RETRY_DELAY_S": "1",
}



@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MER_", "AWS_"))}
    env.update(TINY, MER_ROOT=str(tmp / "var"))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.programs.demo_scenario", D, ",".join(DAYS)], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1][2:])
    root = tmp / "var"
    mirror = root / "s3" / TINY["MER_PUBLISH__BUCKET"] / "mer" / "index"
    return out, root, mirror


def versions(mirror: Path, ds: str) -> list[str]:
    return sorted(p.parent.name for p in (mirror / ds).glob("*/manifest.json"))


def test_first_run_publishes_a_verified_version(e2e):
    out, root, mirror = e2e
    first = out["first"]
    assert first["blessed"] is True and first["published"] is True
    assert set(first["tasks"].values()) <= {"success", "skipped"}
    run_dir = mirror / D / first["publish"]["version"].split("/", 1)[1]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["files"]
    for rel, meta in manifest["files"].items():
        assert hashlib.sha256((run_dir / rel).read_bytes()).hexdigest() == meta["sha256"], rel
    # nothing in the version but what its manifest lists; the report task uploads under reports/
    assert {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()} == {*manifest["files"], "manifest.json"}
    assert (mirror / "reports" / D / run_dir.name / "report.html").exists()
    assert Path(first["report"]).read_text().count("data:image/png") >= 3


def test_second_run_of_the_same_ds_same_tables_one_more_version(e2e):
    out, root, mirror = e2e
    import pandas as pd

    first, second = out["first"], out["second"]
    assert first["run_id"] != second["run_id"]
    assert len(versions(mirror, D)) == 2  # one published version per run
    a = pd.read_parquet(root / "snap_first").sort_values("event_id").reset_index(drop=True)
    b = pd.read_parquet(root / "warehouse" / "training_examples" / f"ds={D}").sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_not_blessed_skips_publish_and_keeps_latest(e2e):
    out, root, mirror = e2e
    nb = out["not_blessed"]
    assert nb["blessed"] is False and "does not beat" in nb["bless_reason"]
    for t in ("item_inference", "gate_embeddings", "recall_gate", "publish"):
        assert nb["tasks"][t] == "skipped", t
    assert nb["tasks"]["report"] == "success"
    assert len(versions(mirror, D)) == 2
    assert out["latest_after_not_blessed"] == out["latest_after_second"]
    assert out["second"]["run_id"] in out["latest_after_second"]
    assert "NOT blessed" in Path(nb["report"]).read_text()


def test_backfilled_day_gets_its_partition_and_latest_stays_on_the_newest(e2e):
    out, root, mirror = e2e
    parts = sorted(p.name for p in (root / "warehouse" / "training_examples").glob("ds=*"))
    assert parts == [f"ds={d}" for d in (*DAYS, D)]
    for d in DAYS:
        assert len(versions(mirror, d)) == 1
    assert json.loads((mirror / "LATEST").read_text())["ds"] == D


def test_mer_query_after_the_demo_answers_from_the_local_mirror(e2e):
    """Right after the main job, `mer query` needs no endpoint or credentials: it serves the demo's mirror."""
    import pyarrow.parquet as pq

    out, root, mirror = e2e
    latest = json.loads((mirror / "LATEST").read_text())
    user = int(pq.read_table(mirror / latest["ds"] / latest["run_id"] / "users" / "dcm.parquet").column("user_id")[0].as_py())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MER_", "AWS_"))}
    env.update(TINY, MER_ROOT=str(root))
    proc = subprocess.run([sys.executable, "-m", "mer.app.cli", "query", "--user", str(user), "--k", "5"], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "local S3 endpoint over" in proc.stderr
    text = " ".join(proc.stdout.split())  # rich wraps the title to the table's width
    assert f"user {user}: 5 candidates from {latest['ds']}/{latest['run_id']}" in text
    assert "dcm" in text


def test_demo_files_its_full_log_and_each_tasks_log_for_the_ui(e2e):
    """Airflow's, Spark's and GX's output goes to <root>/logs/demo-<ds>.log, not the terminal; each task's
    part of it is filed where the Airflow UI reads that task's log (a mapped instance under its map index)."""
    out, root, mirror = e2e
    first = out["first"]
    log = Path(first["log"])
    assert log == root / "logs" / f"demo-{D}.log"
    runs = root / "airflow_home" / "logs" / "dag_id=mer_daily"
    run_dir = runs / f"run_id={first['run_id']}"
    assert "Done. Returned value" in (run_dir / "task_id=training_data" / "attempt=1.log").read_text()
    assert list(run_dir.glob("task_id=train_simple_baselines/map_index=0/attempt=*.log"))
    assert list(run_dir.glob("task_id=build_shard/map_index=0/attempt=*.log"))
