"""What the DAG tasks lean on: params -> config, the raw-partition check and its sensor's failure
message, stage records, the spark-submit entry point and its code zip."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pyarrow as pa
import pytest

from mer.app.pipeline import config_for, missing_raw, read_stages, run_stage, window
from mer.base.contract import RAW_TABLES
from mer.base.errors import MerError
from mer.base.io import write_partition


def test_params_override_config_and_none_keeps_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MER_ROOT", str(tmp_path))
    monkeypatch.setenv("MER_INDEX__SHARDS", "5")
    cfg = config_for({"history_len": 7, "k_im": 3, "recall_target": 0.5, "shards": None, "unknown": 1})
    assert cfg.build.history_len == 7
    assert cfg.train.k_im == 3 and cfg.index.recall_target == 0.5
    assert cfg.index.shards == 5  # None = the MER_* value stands
    assert cfg.root == tmp_path


def test_bad_param_value_names_the_field():
    with pytest.raises(MerError, match=r"k_im.*train"):
        config_for({"k_im": "many"})


def test_window_and_missing_raw(cfg):
    cfg.build.train_days, cfg.build.eval_days = 2, 1
    assert window(cfg, "2026-01-15") == ["2026-01-13", "2026-01-14", "2026-01-15"]
    for table in ("engagement_log", "source_interest_log"):
        for d in ("2026-01-13", "2026-01-15"):
            write_partition(cfg.raw_table(table), d, RAW_TABLES[table].empty_table())
    for table in ("user_follows", "item_features"):
        write_partition(cfg.raw_table(table), "2026-01-10", RAW_TABLES[table].empty_table())
    write_partition(cfg.raw_table("topics"), "2026-01-16", RAW_TABLES["topics"].empty_table())  # after ds: no use
    assert missing_raw(cfg, "2026-01-15") == [
        "engagement_log/ds=2026-01-14", "source_interest_log/ds=2026-01-14", "topics/ds<=2026-01-15",
    ]


# The raw sensor waiting and timing out (late-arriving partitions) is in tests/test_faults_data.py.


def test_run_stage_records_success_and_failure(cfg):
    assert run_stage(cfg, "2026-01-15", "count", lambda c, ds, n: {"rows": n}, 3) == {"rows": 3}
    with pytest.raises(MerError):
        run_stage(cfg, "2026-01-15", "bad", lambda c, ds: (_ for _ in ()).throw(MerError("table t: column c bad")))
    rec = read_stages(cfg, "2026-01-15")
    assert rec["count"]["status"] == "success" and rec["count"]["summary"] == {"rows": 3}
    assert rec["bad"]["status"] == "failed" and rec["bad"]["error"] == "table t: column c bad"


def test_code_zip_holds_the_packages(tmp_path):
    from mer.app.spark_submit import package_code

    path = package_code(tmp_path)
    names = set(zipfile.ZipFile(path).namelist())
    assert {"mer/base/config.py", "mer/app/pipeline.py", "mer/stages/spark_jobs/session.py", "mer/app/spark_submit.py"} <= names
    assert not any("__pycache__" in n for n in names)


def test_submit_entry_point_rejects_bad_input_with_a_message(tmp_path):
    env = {**os.environ, "MER_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "mer.app.spark_submit", "validate_raw", "--ds", "../etc"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid ds '../etc'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "mer.app.spark_submit", "nope", "--ds", "2026-01-15"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
