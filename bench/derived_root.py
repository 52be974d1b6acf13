"""What the bench scripts that derive one raw root from another share (make_cf_pretrained, make_interactions_only):
the SRC DST command line with its checks, and the staged copy that rewrites some tables and appears all at once."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq


def source_and_destination(prog: str, doc: str, tables: tuple[str, ...]) -> tuple[Path, Path]:
    """Parse SRC DST; SRC/raw must hold ``tables``, DST/raw must not exist. Returns the two raw/ folders."""
    ap = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    args = ap.parse_args()
    src, dst = args.src / "raw", args.dst / "raw"
    if dst.exists():
        raise SystemExit(f"{prog}: {dst} exists; give a new folder")
    for table in tables:
        if not (src / table).is_dir():
            raise SystemExit(f"{prog}: {src / table} does not exist (SRC must hold raw/<table>/ds=...)")
    return src, dst


def write_derived(src: Path, dst: Path, rewrite: dict[str, Callable[[pa.Table], pa.Table]]) -> None:
    """Copy raw/ ``src`` to ``dst`` with every Parquet file of each table in ``rewrite`` passed through its function.

    Written beside DST and renamed into place at the end: a failed run leaves no half-rewritten raw/ behind."""
    staging = dst.with_name(f".{dst.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(src, staging)
        for table, fn in rewrite.items():
            for path in sorted((staging / table).rglob("*.parquet")):
                pq.write_table(fn(pq.read_table(path)), path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
