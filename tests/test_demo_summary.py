"""What ``mer demo`` prints and files, without running the DAG: the closing summary, task labels, and the
captured console log turned into Airflow's JSON-lines task log."""
from __future__ import annotations

import json
import os

from mer.app.demo import captured_output, log_records, summary_text, task_label


def test_summary_names_verdict_with_metric_paths_and_next_commands(cfg):
    s = {
        "ds": "2026-01-15", "run_id": "manual__x", "seconds": 143.2, "published": True,
        "bless": {"model": "dcm", "blessed": True, "metric": "hr@50", "split": "val",
                  "reason": "candidate 0.4120 vs baseline 0.3300 (+24.8%)"},
        "publish": {"version": "2026-01-15/manual__x", "status": "published"},
        "report": "/r/report.html", "tables": "/r/warehouse", "s3_mirror": "/r/s3/mer/index", "log": "/r/logs/demo-2026-01-15.log",
        "tasks": {"validate_raw": "success", "publish": "success", "train_baselines": "skipped"},
        "sample_user": 17,
    }
    text = summary_text(s, cfg)
    assert "dcm blessed on hr@50 (val): candidate 0.4120 vs baseline 0.3300" in text
    for where in ("/r/report.html", "/r/warehouse", "2026-01-15/manual__x (published) under /r/s3/mer/index",
                  "/r/logs/demo-2026-01-15.log", "make ui", "mer tables", "mer sql", "mer query --user 17"):
        assert where in text, where
    assert "2 success, 1 skipped" in text and "train_baselines (skipped)" in text
    assert len(text.splitlines()) < 16  # the 45-line JSON is gone from the terminal
    assert f"--root {cfg.root}" in text  # commands that work on this data root


def test_mapped_tasks_are_labelled_by_their_rendered_name():
    assert task_label("train_simple_baselines", 1, "two_tower") == "train_simple_baselines[two_tower]"
    assert task_label("build_shard", 2, None) == "build_shard[2]"
    assert task_label("publish", -1, None) == "publish"


def test_console_log_becomes_airflow_json_lines():
    text = ("2026-01-15T10:00:00.123456Z [info     ] Done. Returned value was: {'a': 1} [task] loc=python.py:233\n"
            "[Stage 3:=====>        (2 + 1) / 8]\r[Stage 3:=============>(8 + 0) / 8]\n"
            "Traceback (most recent call last):\n\n")
    records = list(log_records(text))
    assert records[0] == {"timestamp": "2026-01-15T10:00:00.123456Z", "level": "info",
                          "event": "Done. Returned value was: {'a': 1} [task] loc=python.py:233"}
    assert records[1:] == [{"event": "[Stage 3:=============>(8 + 0) / 8]"}, {"event": "Traceback (most recent call last):"}]
    json.dumps(records)


def test_captured_output_sends_fds_to_the_log_and_restores_them(tmp_path, capfd):
    log = tmp_path / "logs" / "demo.log"
    with captured_output(log) as console:
        os.write(1, b"airflow chatter\n")
        os.write(2, b"spark progress\n")
        console.write("  validate_raw  success  1.0 s\n")
    os.write(1, b"after\n")
    out, err = capfd.readouterr()
    assert out == "  validate_raw  success  1.0 s\nafter\n" and err == ""
    assert log.read_text() == "airflow chatter\nspark progress\n"
