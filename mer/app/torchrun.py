"""Data-parallel training on one or more machines: ``torchrun ... -m mer.app.torchrun --ds D --model dcm``.

    .venv/bin/torchrun --standalone --nproc_per_node 2 -m mer.app.torchrun --ds 2026-01-15 --model dcm

Every process runs ``mer.stages.model.train.run`` (the same function ``mer train`` and the DAG call). Under
torchrun (WORLD_SIZE > 1) it joins the process group (``MER_TRAIN__DDP_BACKEND``, default gloo: CPU;
use nccl on GPUs), wraps the towers in DistributedDataParallel, trains each rank on a disjoint slice of
the seeded batch stream (batch i goes to rank i % world), averages gradients every step and takes
early-stopping decisions on rank 0's eval HR; only rank 0 writes the model folder and the stage
record and prints the summary. Without torchrun it is a plain single-process ``mer train``.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from mer.app.pipeline import config_for, run_stage
    from mer.base.errors import MerError, validate_ds
    from mer.base.io import jsonable
    from mer.stages.model.train import dist_setup, run

    parser = argparse.ArgumentParser(prog="mer.app.torchrun", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--model", default="dcm")
    parser.add_argument("--variant", default=None)
    parser.add_argument("--params", default="{}", help="DAG run params as JSON (None = config value)")
    args = parser.parse_args(argv)
    rank, world = dist_setup()
    try:
        ds = validate_ds(args.ds)
        cfg = config_for(json.loads(args.params))
        task = f"train_{args.model}" if not args.variant else f"train_{args.model}_{args.variant}"
        try:
            if rank == 0:  # one stage record (success or failure) per run, like a DAG task's
                result = run_stage(cfg, ds, task, run, args.model, args.variant)
            else:
                result = run(cfg, ds, args.model, args.variant)
        except MerError as err:
            print(f"error (rank {rank}): {err}", file=sys.stderr)
            return 2
        if rank == 0:
            print(json.dumps(jsonable(result), indent=2))
        return 0
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
