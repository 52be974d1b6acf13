"""bench/bench_train_step.py runs a real training step of every user tower (it broke silently once when the item
tower gained its id input: the bench is not in the DAG, so only this test notices)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_step_runs_every_tower():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_train_step.py"), "--batch", "8", "--steps", "1",
                          "--warmup", "0", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["models"]) == {"single", "dcm", "mind", "sa", "token", "cr"}
    from mer.base.config import MerConfig

    # the bench measures the default DCM (train.k_im interests), the figure README and RESULTS quote
    assert result["models"]["dcm"]["k"] == MerConfig().train.k_im and result["models"]["single"]["k"] == 1
    assert all(m["step_ms"] > 0 for m in result["models"].values())
