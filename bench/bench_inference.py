"""Bulk item-tower inference on Spark (``spark_jobs.item_inference``) vs a raw torch loop.

Both encode the same items with the same tower in the same run: the Spark path reads the
item_features snapshot, runs mapInArrow with the tower cached per Python worker and writes
item_embeddings; the anchor is a plain loop of the tower's forward over pre-built float32
tensors (no I/O, no Arrow, one process using all cores). Target: Spark >= 0.8x the anchor.

Tower: model.serving's when trained models exist for --ds under --root; otherwise a
generated seeded MLP tower (32 -> 512 -> 64, tests/item_tower_fixture.py).

    .venv/bin/python bench/bench_inference.py [--items 500000]

Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=500_000)
    ap.add_argument("--batch", type=int, default=10_000)
    args = ap.parse_args()

    import torch

    from mer.config import MerConfig
    from mer.tables import read_partition

    os.environ["MER_SERVING_MODULE"] = "tests.item_tower_fixture"
    from tests import item_tower_fixture as fx

    ds = "2026-01-15"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = MerConfig(root=Path(tmp) / "var")
        fx.make_models(cfg, ds, in_dim=32, dim=64, hidden=512)
        fx.write_item_features(cfg, ds, n=args.items, in_dim=32, null_every=0)

        from spark_jobs.item_inference import run
        from spark_jobs.session import get_spark

        get_spark(cfg).range(1).count()  # JVM start is not inference time
        t = time.perf_counter()
        summary = run(cfg, ds)
        spark_total_s = time.perf_counter() - t
        n_models = len(summary["versions"])

        # Anchor: the same towers' forward over the same items as in-memory tensors.
        feats = read_partition(cfg.raw_table("item_features"), ds, columns=["pretrained_embedding"])
        x = np.asarray(feats.column("pretrained_embedding").combine_chunks().flatten(), dtype=np.float32).reshape(args.items, 32)
        encoders = [fx.load_item_encoder(fx.model_dir(cfg, ds, m)) for m in fx.SERVED_MODELS]
        torch.set_num_threads(os.cpu_count() or 1)
        t = time.perf_counter()
        for enc in encoders:
            for start in range(0, args.items, args.batch):
                enc.forward(np.array(x[start : start + args.batch]))
        raw_s = time.perf_counter() - t

    spark_items_s = summary["items_per_s"]
    raw_items_s = args.items * n_models / raw_s
    out = {
        "bench": "inference",
        "tower": "generated seeded MLP 32->512->64 (tests/item_tower_fixture.py)",
        "items": args.items,
        "models": n_models,
        "spark_items_per_s": round(spark_items_s, 1),
        "spark_stage_seconds_incl_checks": round(spark_total_s, 2),
        "raw_torch_items_per_s": round(raw_items_s, 1),
        "ratio_vs_raw_torch": round(spark_items_s / raw_items_s, 3),
        "max_abs_diff_vs_eager": summary["max_abs_diff_vs_eager"],
        "cores": os.cpu_count(),
        "target_ratio": 0.8,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
