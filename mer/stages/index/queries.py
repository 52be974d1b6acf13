"""Query vectors for recall: real user embeddings, items only as a stated fallback.

The recall gate queries with the eval split's users (``recall_queries``); the index build tunes
nprobe / efSearch on the same kind of queries from the validation split (``tuning_queries``), so
tuning sees the gate's query distribution without ever reading eval-day rows.
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mer.base.config import MerConfig
from mer.base.io import list_partitions, read_partition
from mer.stages.index import towers

USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("emb_index", pa.int32()),  # position k among the user's K embeddings
        ("embedding", pa.list_(pa.float32())),
        ("importance", pa.float32()),  # DCM cluster importance; 1.0 for explicit embeddings
        ("topic_id", pa.int64()),  # CR condition topic; null for implicit embeddings
    ]
)


def _field(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return None


def users_table(result: dict) -> pa.Table:
    """``user_embeddings`` output (user -> [K, d] embeddings, importance, topic ids) as flat rows."""
    uids, ks, embs, imps, topics = [], [], [], [], []
    for uid, rec in result.items():
        emb = np.asarray(_field(rec, "embeddings", "embedding", "emb"), dtype=np.float32)
        emb = emb.reshape(-1, emb.shape[-1]) if emb.size else emb.reshape(0, 0)
        imp = _field(rec, "importance", "weights")
        imp = np.ones(len(emb), dtype=np.float32) if imp is None else np.asarray(imp, dtype=np.float32).reshape(-1)
        top = _field(rec, "topic_ids", "condition_ids", "conditions", "topics")
        top = [None] * len(emb) if top is None else [None if t is None else int(t) for t in np.asarray(top).reshape(-1)]
        for k in range(len(emb)):
            uids.append(int(uid))
            ks.append(k)
            embs.append(emb[k])
            imps.append(float(imp[k]) if k < len(imp) else 1.0)
            topics.append(top[k] if k < len(top) else None)
    d = len(embs[0]) if embs else 0
    emb_arr = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(embs) if embs else np.zeros(0, np.float32)), d) if d else pa.array([], pa.list_(pa.float32()))
    return pa.table(
        {
            "user_id": pa.array(uids, pa.int64()),
            "emb_index": pa.array(ks, pa.int32()),
            "embedding": emb_arr.cast(pa.list_(pa.float32())),
            "importance": pa.array(imps, pa.float32()),
            "topic_id": pa.array(topics, pa.int64()),
        },
        schema=USERS_SCHEMA,
    )


def split_user_ids(cfg: MerConfig, ds: str, split: str, limit: int | None = None, seed: int = 0) -> list[int] | None:
    """Distinct users of one split of ``training_examples`` (None when the table is absent)."""
    table_dir = cfg.table("training_examples")
    if ds not in list_partitions(table_dir):
        return None
    t = read_partition(table_dir, ds, columns=["user_id", "split"])
    users = np.unique(t.filter(pc.equal(t.column("split"), split)).column("user_id").to_numpy())
    if limit is not None and len(users) > limit:
        users = np.sort(np.random.default_rng(seed).choice(users, limit, replace=False))
    return [int(u) for u in users]


def user_query_table(cfg: MerConfig, ds: str, model: str, user_ids: list[int] | None, split: str = "eval") -> pa.Table | None:
    """User embeddings of ``split``'s users from the served user tower; None when there is no user tower
    (or, for another split than eval, when the tower cannot embed that split's histories)."""
    try:
        srv = towers.serving(cfg)
        fn = getattr(srv, "user_embeddings")
    except Exception:
        return None
    if split == "eval":
        return users_table(fn(cfg, ds, model, user_ids=user_ids))
    if "split" not in inspect.signature(fn).parameters:
        return None
    return users_table(fn(cfg, ds, model, user_ids=user_ids, split=split))


def _queries(cfg: MerConfig, ds: str, model: str, model_version: str, n: int, seed: int, split: str) -> tuple[np.ndarray, str]:
    from mer.stages.index.shards import embeddings_to_numpy, sample_item_vectors

    rng = np.random.default_rng(seed)
    split_users = split_user_ids(cfg, ds, split, limit=n, seed=seed)
    # Tuning with no validation users that day falls back to items; the gate keeps asking the tower.
    users = None if split != "eval" and split_users == [] else user_query_table(cfg, ds, model, split_users, split)
    if users is not None and users.num_rows:
        q = embeddings_to_numpy(users, table_name=f"user_embeddings[{model}]")
        if len(q) > n:
            q = q[np.sort(rng.choice(len(q), n, replace=False))]
        source = f"user_embeddings:{split}" if split_users is not None else f"user_embeddings:all(no {split} split)"
    else:
        items = sample_item_vectors(cfg, ds, model_version, n, seed)
        # Small noise so an item does not trivially find itself.
        q = items + rng.normal(0, 0.05, items.shape).astype(np.float32)
        source = f"items(no {split} user embeddings)"
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(q, dtype=np.float32), source


def recall_queries(cfg: MerConfig, ds: str, model: str, model_version: str, n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """The recall gate's queries: up to ``n`` L2-normalised embeddings of eval users, and where they came from.

    Sampled item vectors with small noise when there are none (no user tower), marked ``items``.
    """
    return _queries(cfg, ds, model, model_version, n, seed, "eval")


def tuning_queries(cfg: MerConfig, ds: str, model: str, model_version: str, n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """The index build's tuning queries: the gate's kind (user embeddings) from the validation split.

    Items only when no validation-split user embeddings exist (the source says so).
    """
    return _queries(cfg, ds, model, model_version, n, seed, "val")
