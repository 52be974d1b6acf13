"""Benchmark: retrieval quality of every model on one data set, on the same records, corpus and rank rule.

    .venv/bin/python bench/bench_quality.py synthetic            # the generator's default data set
    .venv/bin/python bench/bench_quality.py synthetic-sparse     # the generator as a sparse, content-driven domain
    .venv/bin/python bench/bench_quality.py movielens            # ../shared/datasets/movielens-latest-small
    .venv/bin/python bench/bench_quality.py /path/to/root        # any root holding raw/<table>/ds=... (the contract)
    options: --root DIR (work folder, default a temp dir; kept with --keep), --ds D, --only a,b (artifact names),
             --no-ablations (skip the DCM ablations), --trials N (also run `mer tune` for dcm and single first)

Runs validate -> build -> compare (train every tower and simple baseline, evaluate on the validation and
eval days) exactly as `mer` does, then prints the comparison table and one JSON line: HR@100 and novel
HR@100 per model on the eval day, the ratios vs single and vs the strongest simple baseline with their
paired bootstrap 95% intervals, and the wall time of each step (the anchor for speed: the build).
Defaults are the project's: nothing here is tuned per data set.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MOVIELENS = REPO.parent / "shared" / "datasets" / "movielens-latest-small"
# The same generator as a sparse, content-driven domain: 90% of users non-core (a few engagements each; ~3 valid
# history items on the validation day), item pretrained embeddings closer to their sub-interest, a longer
# popularity tail. Here the pretrained-space baselines (PinnerSage, pretrained-max) are the ones to beat, as on
# the review's data set of another domain (issue 10): a stand-in for it that the default set does not show, not
# a data set to tune defaults on (bench/RESULTS.md, session 25).
SPARSE = {"seed": 101, "n_users": 4000, "n_items": 12000, "core_user_fraction": 0.1, "requests_per_day_noncore": 0.25,
          "embedding_noise": 0.3, "popularity_sigma": 1.5}


def prepare(data: str, root: Path) -> None:
    """Raw input under root/raw: generated, ingested, or copied from a root that follows the contract."""
    from mer.base.config import MerConfig

    cfg = MerConfig(root=root)
    if data in ("synthetic", "synthetic-sparse"):
        from mer.stages.datagen.synthetic import generate

        if data == "synthetic-sparse":
            cfg = cfg.model_copy(update={"generate": cfg.generate.model_copy(update=SPARSE)})
        generate(cfg)
    elif data == "movielens":
        from mer.stages.datagen.movielens import ingest

        if not MOVIELENS.is_dir():
            sys.exit(f"bench_quality: {MOVIELENS} is absent")
        ingest(cfg, MOVIELENS)
    else:
        src = Path(data) / "raw"
        if not src.is_dir():
            sys.exit(f"bench_quality: {src} does not exist (give a root with raw/<table>/ds=...)")
        shutil.copytree(src, root / "raw", dirs_exist_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="synthetic | synthetic-sparse | movielens | a root with raw/")
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--ds", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", default=None)
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--trials", type=int, default=0)
    args = ap.parse_args()

    from mer.base.config import MerConfig
    from mer.stages.model import compare, tune
    from mer.stages.spark_jobs import training_data, validate_raw

    root = args.root or Path(tempfile.mkdtemp(prefix="mer-quality-"))
    cfg = MerConfig(root=root)
    ds = args.ds or cfg.generate.end_ds.isoformat()
    secs = {}
    t0 = time.perf_counter()
    if not (root / "raw").is_dir():
        prepare(args.data, root)
    secs["prepare"] = time.perf_counter() - t0
    for name, fn in (("validate", validate_raw.run), ("build", training_data.run)):
        t = time.perf_counter()
        fn(cfg, ds)
        secs[name] = time.perf_counter() - t
    only = args.only.split(",") if args.only else None
    if args.no_ablations and only is None:
        only = [compare.artifact_name(m, v) for m, v in compare.RUNS if m != "dcm" or v is None]
    tuned = {}
    for model in ("dcm", "single") if args.trials else ():
        t = time.perf_counter()
        tuned[model] = tune.run(cfg, ds, model, trials=args.trials)
        secs[f"tune_{model}"] = time.perf_counter() - t
    t = time.perf_counter()
    out = compare.run(cfg, ds, only=only)
    secs["compare"] = time.perf_counter() - t
    secs = {k: round(v, 1) for k, v in secs.items()}
    print(f"compare table: {out['table']}")
    print(json.dumps({"bench": "quality", "data": args.data, "ds": ds, "best_baseline": out["best_baseline"],
                      "hr@100": out["hr"], "hr_novel@100": out["hr_novel"], "verdicts": out["verdicts"],
                      "tuned": {m: r["best_params"] for m, r in tuned.items()}, "seconds": secs}))
    if not args.keep and args.root is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
