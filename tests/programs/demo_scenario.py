"""The demo end to end in a fresh process: generate, run the DAG for several days (tests/test_demo_e2e.py)."""
import json, shutil, sys
from mer.base.config import load_config
from mer.stages.datagen.synthetic import generate
from mer.app.demo import run

D, days = sys.argv[1], sys.argv[2].split(",")
cfg = load_config()
generate(cfg)  # all days up front: every run finds its window
out = {}
BLESS = {"bless_margin": -1.0, "bless_tolerance": 1.0}
out["first"] = run(cfg, D, BLESS)
shutil.copytree(cfg.table("training_examples") / f"ds={D}", cfg.root / "snap_first")
out["second"] = run(cfg, D, BLESS)
latest = cfg.root / "s3" / cfg.publish.bucket / cfg.publish.prefix / "LATEST"
out["latest_after_second"] = latest.read_text()
out["not_blessed"] = run(cfg, D, {"bless_margin": 1e6})
out["latest_after_not_blessed"] = latest.read_text()
out["backfill"] = [run(cfg, d, BLESS) for d in days]
print("@@" + json.dumps(out, default=str))
