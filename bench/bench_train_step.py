"""Training-step time of each user tower on the same batch; DCM (K = train.k_im) vs single is the headline.

    .venv/bin/python bench/bench_train_step.py [--batch 512] [--steps 20] [--threads 2]

Inputs are a seeded random batch shaped like the default config (history 50, pretrained dim 32);
a step is forward of both towers + Eq 9 + backward + AdamW. Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from types import SimpleNamespace

import torch

from mer.base.config import MerConfig
from mer.stages.model.data import ITEM_INPUTS
from mer.stages.model.export import example_inputs
from mer.stages.model.train import train_step
from mer.stages.model.zoo import TwoTower, tower_config

MODELS = [("single", None), ("dcm", None), ("mind", None), ("sa", None), ("token", None), ("cr", "source")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = MerConfig()
    vocab = list(range(100, 100 + cfg.generate.n_topics))
    results = {}
    for model, variant in MODELS:
        torch.manual_seed(0)
        c = tower_config(cfg, model, variant, pre_dim=cfg.generate.pretrained_dim, topic_vocab=vocab)
        net = TwoTower(c)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        inputs = example_inputs(c, args.batch)
        # the last history slot's item fields (features and id) stand in for the targets
        items = tuple(x[:, -1] for x in inputs[:len(ITEM_INPUTS)])  # USER_INPUTS starts with ITEM_INPUTS
        batch = SimpleNamespace(inputs=inputs, catalog_inputs=items, target_rows=torch.arange(args.batch))
        log_q = torch.full((args.batch,), -8.0)
        times = []
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            train_step(net, batch, log_q, opt, cfg.train.temperature)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        name = model if variant in (None, "source") else f"{model}-{variant}"
        results[name] = {"step_ms": round(med * 1000, 1), "examples_per_s": round(args.batch / med, 0), "k": c.k}
        print(f"{name:8s} K={c.k}  step {med * 1000:7.1f} ms  {args.batch / med:9.0f} examples/s")
    ratio = results["dcm"]["step_ms"] / results["single"]["step_ms"]
    print(f"DCM / single step time: {ratio:.2f}x (target <= 1.5x)")
    print(json.dumps({"bench": "train_step", "batch": args.batch, "threads": args.threads,
                      "dcm_vs_single": round(ratio, 3), "models": results}))


if __name__ == "__main__":
    main()
