"""Benchmark: one training setting against the defaults, scored on validation users that early stopping never read.

    .venv/bin/python bench/bench_setting.py ROOT --model dcm --set id_min_count=5 --seeds 13,1,2
    options: --set KEY=VALUE (a train.* setting of the candidate; repeatable), --base KEY=VALUE (applied to both
             runs, e.g. to size a run down), --ds D (default: the config's generate.end_ds), --workers N
             (runs at once, one thread each; default 2)

ROOT is a root already validated and built (`mer validate`, `mer build`). For each training seed the tower is
trained at the defaults and with the settings (`train_tower`, nothing written), and each kept tower is scored
twice on the validation day: its early-stopping figure (the best period's HR@100 on the "stop" users' sample:
the figure sessions before 23 compared settings by, optimistic for a run with more periods) and its HR@100 on
the "select" users (`mer.stages.model.tune.Selection`, what `mer tune` and the bless gate score). Prints one
row per seed and one JSON line with the means and the candidate / default ratio of each. The eval day is not
read. bench/RESULTS.md, session 23, says why a default is chosen on the select figure over three seeds and every
data set, not on the early-stopping one.
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def settings(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise SystemExit(f"bench_setting: {p!r} is not KEY=VALUE (a train.* setting, e.g. id_min_count=5)")
        out[key] = value
    return out


def run_config(root: str, updates: dict[str, str], seed: int):
    """The root's config with train.* updated; validated as a config file's values are ("5" becomes the int a
    setting expects; an unknown key or a bad value is a one-line error naming it)."""
    from pydantic import ValidationError

    from mer.base.config import MerConfig

    cfg = MerConfig(root=Path(root))
    try:
        train = type(cfg.train).model_validate({**cfg.train.model_dump(), **updates, "seed": seed, "num_threads": 1})
    except ValidationError as err:
        e = err.errors()[0]
        raise SystemExit(f"bench_setting: train.{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}") from None
    return cfg.model_copy(update={"train": train})


def one(root: str, ds: str, model: str, updates: dict[str, str], seed: int) -> dict:
    import torch

    from mer.stages.model.train import train_tower
    from mer.stages.model.tune import Selection

    torch.set_num_threads(1)
    cfg = run_config(root, updates, seed)
    fit = train_tower(cfg, ds, model, None)
    return {"seed": seed, "early_stopping": round(fit["best_val_hr@100"], 4),
            "select": round(Selection(cfg, ds, model, None).hr(fit["net"]), 4), "steps": fit["extra"]["steps"]}


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--model", default="dcm")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--base", action="append", default=[])
    ap.add_argument("--seeds", default="13,1,2")
    ap.add_argument("--ds")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    from mer.base.config import MerConfig

    cand, base = settings(a.sets), settings(a.base)
    if not cand:
        raise SystemExit("bench_setting: give the candidate's settings with --set KEY=VALUE")
    ds = a.ds or MerConfig(root=Path(a.root)).generate.end_ds.isoformat()
    seeds = [int(s) for s in a.seeds.split(",")]
    run_config(a.root, {**base, **cand}, seeds[0])  # a bad setting fails here, before any training
    jobs = [(name, seed, {**base, **(cand if name == "setting" else {})}) for seed in seeds
            for name in ("defaults", "setting")]
    with ProcessPoolExecutor(max_workers=max(1, a.workers)) as pool:
        futures = [(name, pool.submit(one, a.root, ds, a.model, upd, seed)) for name, seed, upd in jobs]
        runs = {"defaults": [], "setting": []}
        for name, fut in futures:
            runs[name].append(fut.result())
    print(f"{a.model} {cand} (base {base or 'none'}) on {a.root} ds={ds}")
    print(f"{'seed':>5} {'ES default':>11} {'ES setting':>11} {'select default':>15} {'select setting':>15}")
    for d, s in zip(runs["defaults"], runs["setting"]):
        print(f"{d['seed']:>5} {d['early_stopping']:>11.4f} {s['early_stopping']:>11.4f} {d['select']:>15.4f} "
              f"{s['select']:>15.4f}")
    result = {"bench": "setting", "root": a.root, "ds": ds, "model": a.model, "set": cand, "base": base,
              "seeds": seeds, "runs": runs}
    for fig in ("early_stopping", "select"):
        d, s = (mean([r[fig] for r in runs[n]]) for n in ("defaults", "setting"))
        result[fig] = {"defaults": round(d, 4), "setting": round(s, 4), "ratio": round(s / d, 4) if d else None}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
