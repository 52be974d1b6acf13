"""bench/bench_setting.py compares a setting with the defaults on the validation users early stopping did not read:
the figure it prints for a run is the one `mer tune` would score that tower by."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mer.base.config import MerConfig
from tests.model_fixture import DS, build

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_setting.py"
# sized for the fixture and CI's 2 cores; the candidate changes the LR
BASE = ["epochs=2", "min_steps=0", "extend_cycles=0", "embed_dim=32", "field_dim=16", "hidden_dim=64",
        "batch_size=128", "early_stop_records=400", "shuffle_buffer=2048"]
ENV = {**os.environ, "MER_BUILD__HISTORY_LEN": "20", "MER_EVAL__MAX_EVAL_RECORDS": "500"}


def _bench(root: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(BENCH), str(root), "--ds", DS, *[x for b in BASE for x in ("--base", b)], *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)


def test_bench_setting_scores_both_runs_on_the_select_users(tmp_path, monkeypatch):
    cfg = MerConfig(root=tmp_path / "var")
    build(cfg)
    out = _bench(cfg.root, "--model", "single", "--seeds", "13", "--set", "lr=0.0005", "--workers", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    d, s = result["runs"]["defaults"][0], result["runs"]["setting"][0]
    assert result["set"] == {"lr": "0.0005"} and d["seed"] == s["seed"] == 13
    assert result["select"]["ratio"] == round(s["select"] / d["select"], 4)
    assert d != s  # the setting reached training

    # the defaults' select figure is the HR@100 on the select users of the same tower, trained here again
    for k, v in (("MER_BUILD__HISTORY_LEN", "20"), ("MER_EVAL__MAX_EVAL_RECORDS", "500")):
        monkeypatch.setenv(k, v)
    sys.path.insert(0, str(BENCH.parent))
    import bench_setting

    again = bench_setting.one(str(cfg.root), DS, "single", dict(b.split("=") for b in BASE), 13)
    assert again == d


def test_bench_setting_names_a_bad_setting_in_one_line(tmp_path):
    out = _bench(tmp_path / "var", "--set", "id_min_cuont=5")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "train.id_min_cuont" in out.stderr
