"""Project Spark defaults fill in only what the launcher left unset (issue 11 item 9).

A real spark-submit of a tiny driver that builds the project's session: ``--conf`` must survive.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mer.base.config import REPO_ROOT

PROBE = """
import json, sys
from mer.base.config import load_config
from mer.stages.spark_jobs.session import get_spark
s = get_spark(load_config(root=sys.argv[1]), app_name="mer-probe")
keys = ["spark.sql.shuffle.partitions", "spark.sql.session.timeZone", "spark.driver.memory", "spark.app.name"]
print("PROBE " + json.dumps({"master": s.sparkContext.master, **{k: s.conf.get(k, None) for k in keys}}))
"""


def _probe(cmd: list[str], tmp_path: Path, **env: str) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MER_", "PYSPARK_SUBMIT_ARGS"))}
    full_env.update(PYSPARK_PYTHON=sys.executable, PYTHONPATH=str(REPO_ROOT), **env)
    proc = subprocess.run([*cmd, str(script), str(tmp_path / "var")], env=full_env, cwd=REPO_ROOT, check=False,
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("PROBE "):])


@pytest.mark.spark
def test_spark_submit_conf_wins_over_project_defaults(tmp_path):
    import pyspark

    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    got = _probe([str(submit), "--master", "local[1]", "--conf", "spark.sql.shuffle.partitions=64"], tmp_path)
    assert got["spark.sql.shuffle.partitions"] == "64"  # the project default (spark.shuffle_partitions) is 4
    assert got["master"] == "local[1]"
    assert got["spark.sql.session.timeZone"] == "UTC"  # unset by the submitter: the project default applies


@pytest.mark.spark
def test_in_process_defaults_and_pyspark_submit_args(tmp_path):
    """In-process: the typed config's values, unless PYSPARK_SUBMIT_ARGS says otherwise."""
    got = _probe([sys.executable], tmp_path, MER_SPARK__SHUFFLE_PARTITIONS="5", MER_SPARK__MASTER="local[1]",
                 PYSPARK_SUBMIT_ARGS="--driver-memory 1g --conf spark.sql.session.timeZone=Etc/GMT+3 pyspark-shell")
    assert got["master"] == "local[1]" and got["spark.sql.shuffle.partitions"] == "5"
    assert got["spark.app.name"] == "mer-probe"
    assert got["spark.driver.memory"] == "1g" and got["spark.sql.session.timeZone"] == "Etc/GMT+3"
