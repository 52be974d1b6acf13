"""Tiny warehouse + raw snapshots for the model tests, with planted multi-interest structure.

Each item belongs to one topic (pretrained embedding = topic centre + noise) and carries a weaker
second topic. Each user has 1-4 interest topics, follows them, and engages items from one
interest at a time, so a single embedding must average interests a multi-embedding user can split.
About half of the engagements come through the followed-topic retriever and log that topic as
condition_id; some history entries are hides (hist_valid False) or items with a null embedding.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from mer.base.config import MerConfig
from mer.base.contract import (
    EVAL_CORPUS,
    ITEM_FEATURES,
    ITEM_FREQUENCY,
    TOPICS,
    TRAINING_EXAMPLES,
    USER_FOLLOWS,
)
from mer.base.io import write_partition

DS = "2026-01-15"


def build(cfg: MerConfig, ds: str = DS, *, n_users: int = 240, n_items: int = 600, n_topics: int = 8,
          pre_dim: int = 16, events_per_user: int = 28, history_len: int = 20, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_topics, pre_dim)).astype(np.float32)
    item_ids = np.arange(1000, 1000 + n_items, dtype=np.int64)
    item_topic = rng.integers(0, n_topics, n_items)
    second = (item_topic + rng.integers(1, n_topics, n_items)) % n_topics
    emb = centres[item_topic] + 0.35 * rng.normal(size=(n_items, pre_dim)).astype(np.float32)
    invalid = rng.random(n_items) < 0.03
    popularity = rng.pareto(1.5, n_items) + 1.0
    topic_ids = 100 + np.arange(n_topics, dtype=np.int64)

    items = pa.table({
        "item_id": item_ids,
        "pretrained_embedding": pa.array([None if bad else e.tolist() for e, bad in zip(emb, invalid)],
                                         type=pa.list_(pa.float32())),
        "category_id": (item_topic * 4 + rng.integers(0, 4, n_items)).astype(np.int64),
        "creator_id": rng.integers(0, 80, n_items).astype(np.int64),
        "topic_ids": pa.array([[int(topic_ids[a]), int(topic_ids[b])] for a, b in zip(item_topic, second)],
                              type=pa.list_(pa.int64())),
        "topic_scores": pa.array([[0.9, 0.4]] * n_items, type=pa.list_(pa.float32())),
    }, schema=ITEM_FEATURES)
    by_topic = [np.flatnonzero(item_topic == t) for t in range(n_topics)]

    end = datetime.fromisoformat(ds)
    start = end - timedelta(days=14)
    rows, follows = [], []
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    for u in user_ids:
        k = int(rng.integers(1, 5))
        interests = rng.choice(n_topics, k, replace=False)
        core = rng.random() < 0.4
        for t in interests:
            follows.append((int(u), int(topic_ids[t]), start - timedelta(days=30)))
        n_ev = events_per_user if core else events_per_user // 2
        times = np.sort(rng.uniform(0, 15 * 86400, n_ev))
        times[-1] = 14 * 86400 + rng.uniform(0, 86399)  # every user has one eval-day engagement
        times[-2] = 13 * 86400 + rng.uniform(0, 86399)  # ... and one on the validation day
        times = np.sort(times)
        hist: list[tuple[int, str, datetime, bool]] = []
        for i, s in enumerate(times):
            ts = start + timedelta(seconds=float(s))
            t = int(rng.choice(interests))
            pool = by_topic[t]
            p = popularity[pool] / popularity[pool].sum()
            it = int(pool[rng.choice(len(pool), p=p)])
            if rng.random() < 0.1 and hist:  # a hide: in the history but never a centroid
                hide = int(rng.integers(0, n_items))
                hist.append((int(item_ids[hide]), "hide", ts - timedelta(seconds=1), False))
            via_topic = rng.random() < 0.5
            action = "save" if rng.random() < 0.5 else "click"
            if hist:
                h = hist[-history_len:]
                rows.append({
                    "event_id": f"e{u}-{i}", "user_id": int(u), "item_id": int(item_ids[it]), "event_ts": ts,
                    "action": action, "event_date": ts.date().isoformat(),
                    "hist_item_ids": [x[0] for x in h], "hist_actions": [x[1] for x in h],
                    "hist_ts": [x[2] for x in h], "hist_valid": [x[3] for x in h],
                    "condition_id": int(topic_ids[t]) if via_topic else None,
                    "segment": "core" if core else "non_core",
                    # the day before ds is the validation day (early stopping, tuning, bless)
                    "split": "eval" if ts >= end else ("val" if ts >= end - timedelta(days=1) else "train"),
                })
            hist.append((int(item_ids[it]), action, ts, not bool(invalid[it])))
    examples = pa.Table.from_pylist(rows, schema=TRAINING_EXAMPLES)

    train = examples.filter(pa.compute.equal(examples.column("split"), "train"))
    ids, counts = np.unique(train.column("item_id").to_numpy(), return_counts=True)
    freq = pa.table({"item_id": ids, "count": counts.astype(np.int64), "prob": counts / counts.sum()},
                    schema=ITEM_FREQUENCY)
    order = np.argsort(-popularity)
    corpus_ids = item_ids[order[: int(n_items * 0.8)]]
    corpus = pa.table({"item_id": corpus_ids, "rank": np.arange(1, len(corpus_ids) + 1, dtype=np.int64),
                       "count": np.ones(len(corpus_ids), dtype=np.int64)}, schema=EVAL_CORPUS)

    topics = pa.table({"topic_id": topic_ids, "name": [f"topic-{i}" for i in range(n_topics)]}, schema=TOPICS)
    uf = pa.table({"user_id": [f[0] for f in follows], "topic_id": [f[1] for f in follows],
                   "followed_ts": [f[2] for f in follows]}, schema=USER_FOLLOWS)

    write_partition(cfg.raw_table("item_features"), ds, items)
    write_partition(cfg.raw_table("topics"), ds, topics)
    write_partition(cfg.raw_table("user_follows"), ds, uf)
    write_partition(cfg.table("training_examples"), ds, examples)
    write_partition(cfg.table("item_frequency"), ds, freq)
    write_partition(cfg.table("eval_corpus"), ds, corpus)
    return {"examples": examples.num_rows, "train": train.num_rows, "items": n_items, "users": n_users}


def small_cfg(cfg: MerConfig) -> MerConfig:
    """Training settings sized for the fixture and 2 cores."""
    cfg.train = cfg.train.model_copy(update=dict(embed_dim=32, field_dim=16, hidden_dim=64, batch_size=128,
                                                 epochs=4, k_im=4, k_ex=3, early_stop_records=400,
                                                 shuffle_buffer=2048, lr=5e-3, patience=2, num_threads=2, min_steps=0,
                                                 extend_cycles=0))
    cfg.eval = cfg.eval.model_copy(update=dict(ks=[10, 50], serve_budget=50, max_eval_records=500, diversity_k=20))
    cfg.build = cfg.build.model_copy(update=dict(history_len=20))  # the fixture's histories hold 20 items
    return cfg
