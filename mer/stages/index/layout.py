"""Where index artifacts live locally: ``<run_dir>/index/<model>/shard-XXXXX.{faiss,ids.npy,json}``."""
from __future__ import annotations

from pathlib import Path

from mer.base.config import MerConfig

METRIC = "inner_product"


def index_root(cfg: MerConfig, ds: str) -> Path:
    return cfg.run_dir(ds) / "index"


def model_index_dir(cfg: MerConfig, ds: str, model: str) -> Path:
    return index_root(cfg, ds) / model


def shard_stem(shard: int) -> str:
    return f"shard-{shard:05d}"


def shard_paths(folder: Path, shard: int) -> dict[str, Path]:
    stem = shard_stem(shard)
    return {"index": folder / f"{stem}.faiss", "ids": folder / f"{stem}.ids.npy", "meta": folder / f"{stem}.json"}


def recall_path(cfg: MerConfig, ds: str) -> Path:
    return index_root(cfg, ds) / "recall.json"


def users_export_path(cfg: MerConfig, ds: str, model: str) -> Path:
    return index_root(cfg, ds) / "users" / f"{model}.parquet"


