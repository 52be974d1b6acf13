"""DAG parse time: the scheduler re-parses dags/ every few seconds, so it must stay cheap (target < 2 s and
no heavy module imported). Anchor, measured in the same run: importing Airflow's DagBag itself.

    .venv/bin/python bench/bench_dag_parse.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    parse, anchor = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as home:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MER_"))}
            env.update(AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False", MER_ROOT=str(Path(home) / "var"))
            out = subprocess.run([sys.executable, "-m", "tests.programs.dag_parse", str(REPO / "dags")], env=env,
                                 cwd=REPO, capture_output=True, text=True, check=True).stdout
            got = json.loads([ln for ln in out.splitlines() if ln.startswith("@@")][-1][2:])
            if got["errors"] or got["heavy"]:
                raise SystemExit(f"DAG parse: errors {got['errors']} heavy modules {got['heavy']}")
            parse.append(got["parse_s"])
            anchor.append(got["import_s"])
    p, a = min(parse), min(anchor)
    print(f"dags/ parse: {p:.3f} s (best of {args.repeat}); anchor import DagBag: {a:.3f} s; ratio {p / a:.2f}x; "
          f"target < 2 s: {'met' if p < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
