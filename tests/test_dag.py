"""The mer_daily DAG with real Airflow: parsing, shape, params, retries, the Spark-submit switch,
and one real ``dag.test()`` run of the wiring (stages marked successful by Airflow itself).

Each Airflow check runs in a subprocess: AIRFLOW_HOME is read when Airflow is imported, and
the parse-time check must see a clean ``sys.modules``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mer.base.config import REPO_ROOT

DAGS = REPO_ROOT / "dags"



def airflow_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MER_"))}
    home = tmp_path / "airflow_home"
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        MER_ROOT=str(tmp_path / "var"),
        **extra,
    )
    return env


def parse(tmp_path: Path, **extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.programs.dag_parse", str(DAGS)], env=airflow_env(tmp_path, **extra), cwd=REPO_ROOT,
        capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    return parse(tmp_path_factory.mktemp("dagbag"))


def test_dagbag_imports_without_errors_and_without_heavy_modules(parsed):
    # Parse time is a benchmark figure (bench/bench_dag_parse.py), not a timed assertion.
    assert parsed["errors"] == {}
    assert parsed["heavy"] == [], f"DAG parse imported {parsed['heavy']}"


def test_schedule_catchup_and_concurrency(parsed):
    assert "@daily" in parsed["schedule"] or "0 0 * * *" in parsed["schedule"]
    assert parsed["catchup"] is False
    assert parsed["max_active_runs"] == 1


def test_catchup_from_environment(tmp_path):
    assert parse(tmp_path, MER_DAG__CATCHUP="true")["catchup"] is True


def test_params_cover_the_main_knobs(parsed):
    for name in ("train_days", "history_len", "k_im", "k_ex", "shards", "index_key", "recall_target",
                 "bless_margin", "bless_tolerance", "extra_baselines", "generate_if_absent"):
        assert name in parsed["params"]


def test_every_task_retries_with_exponential_backoff(parsed):
    for task_id, t in parsed["tasks"].items():
        assert t["retries"] >= 2, task_id
        assert t["backoff"] and float(t["backoff"]) > 1, task_id


def test_shape(parsed):
    up = {k: set(v["up"]) for k, v in parsed["tasks"].items()}
    assert up["wait_for_raw"] == {"generate_if_absent"}
    assert up["validate_raw"] == {"wait_for_raw"}
    assert up["gate_raw"] == {"validate_raw"}
    assert up["training_data"] == {"gate_raw"}
    assert up["gate_training"] == {"training_data"}
    for t in ("train_dcm", "train_cr", "train_single"):
        assert up[t] == {"gate_training"}
    assert up["train_baselines"] == {"gate_training", "extra_baselines"}
    assert up["train_simple_baselines"] == {"gate_training"}  # always fitted: bless must beat the strongest
    assert up["evaluate"] == {"train_dcm", "train_cr", "train_single", "train_baselines", "train_simple_baselines"}
    assert up["bless"] == {"evaluate"}
    assert up["item_inference"] == {"bless"}
    assert up["gate_embeddings"] == {"item_inference"}
    assert up["build_shard"] == {"gate_embeddings", "shard_numbers"}
    assert up["recall_gate"] == {"build_shard"}
    assert up["publish"] == {"recall_gate"}
    assert up["report"] == {"publish"}
    tasks = parsed["tasks"]
    assert tasks["bless"]["type"] == "_ShortCircuitDecoratedOperator"
    assert tasks["build_shard"]["type"] == "DecoratedMappedOperator"  # one task per shard
    assert tasks["train_simple_baselines"]["type"] == "DecoratedMappedOperator"  # one task per baseline
    assert tasks["wait_for_raw"]["type"] == "RawPartitionsSensor"
    # The report also runs when bless skipped everything up to publish; the mapping may be empty.
    assert tasks["report"]["trigger"] == "none_failed"
    assert tasks["evaluate"]["trigger"] == "none_failed"


def test_mapped_tasks_are_named_by_model_or_shard(parsed):
    """The UI lists a mapped instance by its map_index_template, not as 0, 1, 2 (issue 12.4)."""
    tasks = parsed["tasks"]
    assert tasks["train_baselines"]["map_index_template"] == "{{ model }}"
    assert tasks["train_simple_baselines"]["map_index_template"] == "{{ model }}"
    assert tasks["build_shard"]["map_index_template"] == "shard {{ shard }}"


def test_a_short_raw_wait_is_poked_within_it(tmp_path):
    """wait_for_raw polled every 60 s whatever its timeout: a 5 s wait lasted a minute."""
    sensor = parse(tmp_path, MER_DAG__RAW_WAIT_TIMEOUT_S="5")["tasks"]["wait_for_raw"]
    assert sensor["poke_interval"] == 5


def test_assets_are_outlets(parsed):
    outlets = {k: v["outlets"] for k, v in parsed["tasks"].items()}
    assert "mer.published_index" in outlets["publish"]
    assert "mer.training_examples" in outlets["training_data"]
    assert "mer.item_embeddings" in outlets["item_inference"]
    assert "mer.eval_metrics" in outlets["evaluate"]


def test_spark_connection_switches_spark_stages_to_spark_submit(tmp_path):
    parsed = parse(tmp_path, MER_DAG__SPARK_CONN="spark_cluster")
    assert parsed["errors"] == {}
    tasks = parsed["tasks"]
    for job in ("validate_raw", "training_data", "item_inference"):
        assert tasks[job]["type"] == "SparkSubmitOperator", job
        assert tasks[job]["conn"] == "spark_cluster"
        assert "package_code" in tasks[job]["up"]  # the --py-files zip is built first
        assert tasks[job]["args"][:3] == [job, "--ds", "{{ ds }}"]
        assert tasks[job]["retries"] >= 2
    assert tasks["gate_raw"]["up"] == ["validate_raw"]
    assert tasks["item_inference"]["up"] == ["bless", "package_code"]



STAGE_TASKS = r"^(wait_for_raw|validate_raw|gate_.*|training_data|train_.*|evaluate|bless|item_inference|build_shard|recall_gate|publish)$"


@pytest.fixture(scope="module")
def wiring_run(tmp_path_factory):
    """One real Airflow run (dag.test) of the wiring, through the demo's runner (quiet terminal, log file)."""
    tmp_path = tmp_path_factory.mktemp("wiring")
    log = tmp_path / "demo.log"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.programs.dag_wiring_run", "2026-01-15", json.dumps({"shards": 3, "extra_baselines": []}),
         STAGE_TASKS, str(log)],
        env=airflow_env(tmp_path, MER_DAG__RETRY_DELAY_S="1"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    states = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1][2:])
    return tmp_path, proc, states, log


def test_dag_test_runs_the_wiring_with_mapped_shards_and_a_report(wiring_run):
    """Real Airflow run (dag.test): trigger rules, mapping over `shards`, the report task rendering."""
    tmp_path, proc, states, log = wiring_run
    assert states["__run__"] == "success"
    assert {states[f"build_shard.{i}"] for i in range(3)} == {"success"}
    assert "build_shard.3" not in states
    assert states["train_baselines"] == "skipped"  # no extra baselines asked for
    from mer.base.config import MerConfig

    n_simple = len(MerConfig().eval.simple_baselines) + 1  # + the inverted index
    assert {states[f"train_simple_baselines.{i}"] for i in range(n_simple)} == {"success"}
    assert states["report"] == "success" and states["generate_if_absent"] == "success"
    report = tmp_path / "var" / "artifacts" / "ds=2026-01-15" / "report.html"
    page = report.read_text()
    assert "ds=2026-01-15" in page and "not available" in page
    record = json.loads((report.parent / "stages" / "report.json").read_text())
    assert record["status"] == "success" and record["summary"]["report"] == str(report)


def test_demo_runner_prints_a_line_per_task_and_logs_to_a_file(wiring_run):
    """The terminal gets one line per task that ran (name, state, seconds); Airflow's chatter goes to the log."""
    tmp_path, proc, states, log = wiring_run
    lines = [ln for ln in proc.stdout.splitlines() if not ln.startswith("@@")]
    ran = {"generate_if_absent", "extra_baselines", "shard_numbers", "report"}  # the rest are marked success
    assert sorted(ln.split()[0] for ln in lines) == sorted(ran), proc.stdout
    for ln in lines:
        name, state, seconds, unit = ln.split()
        assert state == "success" and float(seconds) >= 0 and unit == "s", ln
    assert proc.stderr == ""
    text = log.read_text()
    assert "[DAG TEST]" in text and "Marking success" in text


def test_demo_runner_writes_task_logs_where_the_ui_reads_them_and_real_run_times(wiring_run):
    """dag.test() runs tasks in-process and writes no task log (the UI said "Log file not found"); the
    demo's runner files each task's output under Airflow's log_filename_template. The run's start is its
    first task's, not its logical date (apache/airflow#66127: the UI showed a run of days)."""
    import sqlite3

    tmp_path, proc, states, log = wiring_run
    run_dir = tmp_path / "airflow_home" / "logs" / "dag_id=mer_daily" / f"run_id={states['__run_id__']}"
    report_log = (run_dir / "task_id=report" / "attempt=1.log").read_text()
    events = [json.loads(line)["event"] for line in report_log.splitlines()]  # Airflow's JSON-lines log format
    assert any(e.startswith("Done. Returned value") and "report.html" in e for e in events), report_log[-2000:]
    assert (run_dir / "task_id=generate_if_absent" / "attempt=1.log").exists()
    db = sqlite3.connect(tmp_path / "airflow_home" / "airflow.db")
    (start, end, logical), = db.execute("SELECT start_date, end_date, logical_date FROM dag_run").fetchall()
    first_task, = db.execute("SELECT min(start_date) FROM task_instance").fetchone()
    assert start == first_task and start > logical and end >= start
