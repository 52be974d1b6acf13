"""A tiny seeded stand-in for ``mer.stages.model.serving`` (same interface) and tiny raw inputs.

Used through ``index.serving_module = "tests.item_tower_fixture"`` by the inference, index,
publish and reader tests, so they run without training a model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from mer.base.config import MerConfig
from mer.base.contract import ITEM_FEATURES
from mer.base.io import write_partition

SERVED_MODELS = ("dcm", "cr")
K = {"dcm": 3, "cr": 2}


def model_dir(cfg: MerConfig, ds: str, name: str) -> Path:
    return cfg.run_dir(ds) / "models" / name


class ItemEncoder:
    """Seeded Linear over the pretrained embedding, L2-normalised (null embedding -> zeros in)."""

    def __init__(self, folder: str | Path):
        conf = json.loads((Path(folder) / "config.json").read_text())
        self.in_dim, self.dim, self.model_version = conf["in_dim"], conf["dim"], conf["model_version"]
        torch.manual_seed(conf["seed"])
        hidden = conf.get("hidden")
        # hidden: an MLP tower of realistic cost for benchmarks; tests use the single Linear.
        self.linear = (
            torch.nn.Sequential(torch.nn.Linear(self.in_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, self.dim))
            if hidden
            else torch.nn.Linear(self.in_dim, self.dim)
        )

    columns = ("pretrained_embedding",)  # what encode_arrow reads

    def encode(self, df) -> np.ndarray:
        return self.forward(features_matrix(df, self.in_dim))

    def encode_arrow(self, batch) -> np.ndarray:
        """The bulk path: Arrow rows (record batch or table) -> [n, dim], no per-row Python."""
        return self.forward(arrow_features_matrix(batch.column("pretrained_embedding"), self.in_dim))

    def forward(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = torch.nn.functional.normalize(self.linear(torch.from_numpy(x)), dim=1)
        return y.numpy().astype(np.float32)


def features_matrix(df, in_dim: int) -> np.ndarray:
    col = df["pretrained_embedding"]
    x = np.zeros((len(df), in_dim), dtype=np.float32)
    ok = col.notna().to_numpy()
    if ok.any():
        x[ok] = np.stack(col[ok].to_numpy()).astype(np.float32)
    return x


def arrow_features_matrix(col, in_dim: int) -> np.ndarray:
    """A list<float> column -> [n, in_dim] float32 from its flat values (null row -> zeros)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    x = np.zeros((len(col), in_dim), dtype=np.float32)
    if col.null_count == 0:
        x[:] = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(col), in_dim)
    elif col.null_count < len(col):
        ok = col.is_valid().to_numpy(zero_copy_only=False)
        x[ok] = np.asarray(col.filter(pa.array(ok)).flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, in_dim)
    return x


def load_item_encoder(folder) -> ItemEncoder:
    return ItemEncoder(folder)


def user_embeddings(cfg: MerConfig, ds: str, model_name: str, user_ids=None, split: str = "eval") -> dict:
    """Per user K seeded unit vectors near item vectors (DCM: importance; CR: topic ids).
    ``split``: whose histories (eval or val day): another day gives the same user other vectors."""
    conf = json.loads((model_dir(cfg, ds, model_name) / "config.json").read_text())
    users = list(user_ids) if user_ids is not None else list(range(conf.get("n_users", 20)))
    out = {}
    for u in users:
        rng = np.random.default_rng([int(u), conf["seed"]] + ([] if split == "eval" else [1]))
        emb = rng.normal(size=(K[model_name], conf["dim"])).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        rec = {"embeddings": emb}
        if model_name == "dcm":
            imp = rng.random(K[model_name]).astype(np.float32) + 0.1
            rec["importance"] = imp / imp.sum()
        else:
            rec["importance"] = np.ones(K[model_name], dtype=np.float32)
            rec["topic_ids"] = rng.choice(16, K[model_name], replace=False).astype(np.int64)
        out[int(u)] = rec
    return out


def make_models(cfg: MerConfig, ds: str, in_dim: int = 8, dim: int = 16, n_users: int = 20, hidden: int | None = None) -> dict[str, Path]:
    out = {}
    for i, name in enumerate(SERVED_MODELS):
        folder = model_dir(cfg, ds, name)
        folder.mkdir(parents=True, exist_ok=True)
        conf = {"in_dim": in_dim, "dim": dim, "seed": 100 + i, "model_version": f"{name}-{ds}-fx", "n_users": n_users, "hidden": hidden}
        (folder / "config.json").write_text(json.dumps(conf))
        (folder / "user_tower.bin").write_bytes(bytes(range(256)) * 4)
        out[name] = folder
    return out


def write_item_features(cfg: MerConfig, ds: str, n: int = 400, in_dim: int = 8, seed: int = 1, null_every: int = 50) -> pa.Table:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, in_dim))
    emb = (centers[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, in_dim))).astype(np.float32)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    null = (np.arange(n) % null_every == 0) if null_every else np.zeros(n, dtype=bool)
    # Built from flat numpy buffers (1M items in well under a second); null rows have no values.
    offsets = np.concatenate([[0], np.cumsum(np.where(null, 0, in_dim))]).astype(np.int32)
    pretrained = pa.ListArray.from_arrays(pa.array(offsets), pa.array(emb[~null].reshape(-1)), pa.list_(pa.float32()),
                                          mask=pa.array(null))
    table = pa.table(
        {
            "item_id": ids,
            "pretrained_embedding": pretrained,
            "category_id": rng.integers(0, 10, n),
            "creator_id": rng.integers(0, 50, n),
            "topic_ids": pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), pa.array(rng.integers(0, 16, n)),
                                                  pa.list_(pa.int64())),
            "topic_scores": pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), pa.array(np.ones(n, np.float32)),
                                                     pa.list_(pa.float32())),
        },
        schema=ITEM_FEATURES,
    )
    write_partition(cfg.raw_table("item_features"), ds, table)
    return table


def clustered_vectors(n: int, dim: int, seed: int = 3, clusters: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    x = (centers[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_item_embeddings(cfg: MerConfig, ds: str, n: int = 3000, dim: int = 16, seed: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """item_embeddings for both fixture models (as `mer infer` would leave them: bucketed for
    ``cfg.index.shards``), without Spark."""
    from mer.base.contract import ITEM_EMBEDDINGS
    from mer.base.io import write_json_atomic
    from mer.stages.index.shards import write_bucketed

    make_models(cfg, ds, dim=dim)
    ids = np.arange(10_000, 10_000 + n, dtype=np.int64) * 7  # not 0..n-1: ids must be kept, not positions
    out, tables = {}, []
    for i, name in enumerate(SERVED_MODELS):
        vec = clustered_vectors(n, dim, seed + i)
        version = f"{name}-{ds}-fx"
        emb = pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), dim).cast(pa.list_(pa.float32()))
        tables.append(pa.table({"model_version": [version] * n, "item_id": ids, "embedding": emb}, schema=ITEM_EMBEDDINGS))
        out[name] = (ids, vec)
    write_bucketed(cfg.table("item_embeddings"), ds, pa.concat_tables(tables), cfg.index.shards)
    write_json_atomic(cfg.run_dir(ds) / "item_inference.json", {"versions": {m: f"{m}-{ds}-fx" for m in SERVED_MODELS}})
    return out


def prepared_run(cfg: MerConfig, ds: str, n: int = 600, dim: int = 16, bucket: str | None = None) -> MerConfig:
    """Index shards + recall report for ``ds`` (what build-index and recall-gate leave), ready to publish."""
    import uuid

    from mer.stages.index import build, recall

    cfg.index = cfg.index.model_copy(update=dict(shards=2, index_key="Flat", recall_k=10, recall_queries=40, build_workers=1))
    write_item_embeddings(cfg, ds, n=n, dim=dim)
    cfg.publish = cfg.publish.model_copy(update=dict(bucket=bucket or f"mer-{uuid.uuid4().hex[:10]}", multipart_threshold_mb=1))
    build.run(cfg, ds)
    recall.run(cfg, ds)
    return cfg
