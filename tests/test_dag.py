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


def test_dag_test_runs_the_wiring_with_mapped_shards_and_a_report(tmp_path):
    """Real Airflow run (dag.test): trigger rules, mapping over `shards`, the report task rendering."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.programs.dag_wiring_run", "2026-01-15", json.dumps({"shards": 3, "extra_baselines": []}), STAGE_TASKS],
        env=airflow_env(tmp_path, MER_DAG__RETRY_DELAY_S="1"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1][2:])
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
