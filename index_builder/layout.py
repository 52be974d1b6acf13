"""Where index artifacts live locally: ``<run_dir>/index/<model>/shard-XXXXX.{faiss,ids.npy,json}``."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from mer.config import MerConfig

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write beside the target then rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
