"""A hand-built raw dataset small enough to know every answer (used by the Spark build/validation tests).

Window for ds 2026-01-15 with train_days=2: train days 01-13, 01-14, eval day 01-15.
Items 1-4 have valid features, item 5 a zero embedding, item 6 none. Topics 100, 200.
Event ids are zero-padded so their string order is their numeric order.
"""
from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from mer.base.config import MerConfig
from mer.base.contract import (
    ENGAGEMENT_LOG,
    ITEM_FEATURES,
    SOURCE_INTEREST_LOG,
    TOPICS,
    USER_FOLLOWS,
)
from mer.base.io import write_partition

DS = "2026-01-15"
DAYS = ("2026-01-12", "2026-01-13", "2026-01-14", "2026-01-15")


def ts(day: str, hm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hm}:00")


# event_id, day, time, user, item, action, request
EVENTS = [
    ("e01", "2026-01-13", "10:00", 1, 1, "impression", "r1"),
    ("e02", "2026-01-13", "10:01", 1, 1, "click", "r1"),
    ("e03", "2026-01-13", "10:02", 1, 2, "save", "r1"),
    ("e04", "2026-01-13", "10:03", 1, 3, "hide", "r1"),
    ("e05", "2026-01-13", "11:00", 2, 2, "click", "r2"),
    ("e06", "2026-01-14", "09:00", 1, 4, "click", "r3"),
    ("e07", "2026-01-14", "09:00", 1, 5, "save", "r3"),  # same instant as e06: neither is the other's history
    ("e08", "2026-01-14", "12:00", 2, 3, "impression", "r4"),
    ("e09", "2026-01-14", "12:05", 2, 3, "save", "r4"),
    ("e10", "2026-01-15", "08:00", 1, 6, "click", "r5"),
    ("e11", "2026-01-15", "08:30", 2, 1, "save", "r6"),
    ("e12", "2026-01-15", "08:31", 2, 4, "click", "r6"),
]

# day, request, item, retriever, source_interest_id
SOURCE_INTEREST = [
    ("2026-01-13", "r1", 1, "followed_topic", 100),
    ("2026-01-13", "r1", 2, "collaborative", None),
    ("2026-01-13", "r1", 3, "followed_topic", 200),
    ("2026-01-13", "r2", 2, "followed_topic", 200),
    ("2026-01-14", "r3", 4, "followed_topic", 100),
    ("2026-01-14", "r3", 5, "popular", None),
    ("2026-01-14", "r4", 3, "followed_topic", 100),
    ("2026-01-15", "r5", 6, "followed_topic", 200),
    ("2026-01-15", "r6", 1, "fresh", None),
    ("2026-01-15", "r6", 4, "followed_topic", 100),
]

# (condition_id, user_id, item_id, event_id) of every expected cr_triples row
EXPECTED_TRIPLES = {
    (100, 1, 1, "e02"),
    (200, 2, 2, "e05"),
    (100, 1, 4, "e06"),
    (100, 2, 3, "e09"),
    (200, 1, 6, "e10"),
    (100, 2, 4, "e12"),
}


def engagement_table(rows) -> pa.Table:
    cols = list(zip(*rows)) if rows else [[]] * 7
    if not rows:
        return ENGAGEMENT_LOG.empty_table()
    ids, days, hms, users, items, actions, reqs = cols
    return pa.table(
        {
            "event_id": list(ids),
            "event_ts": [ts(d, t) if t else None for d, t in zip(days, hms)],
            "user_id": list(users),
            "item_id": list(items),
            "action": list(actions),
            "request_id": list(reqs),
            "surface": ["home_feed"] * len(ids),
        },
        schema=ENGAGEMENT_LOG,
    )


def source_interest_table(rows) -> pa.Table:
    if not rows:
        return SOURCE_INTEREST_LOG.empty_table()
    _, reqs, items, retrievers, topics = zip(*rows)
    return pa.table(
        {"request_id": list(reqs), "item_id": list(items), "retriever": list(retrievers),
         "source_interest_id": list(topics)},
        schema=SOURCE_INTEREST_LOG,
    )


def write_snapshots(cfg: MerConfig, day: str = "2026-01-15") -> None:
    emb = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.5, 0.5],
           [0.0, 0.0, 0.0, 0.0], None]
    items = pa.table(
        {
            "item_id": [1, 2, 3, 4, 5, 6],
            "pretrained_embedding": emb,
            "category_id": [1, 1, 2, 2, 3, 3],
            "creator_id": [10, 11, 12, 13, 14, 15],
            "topic_ids": [[100], [200], [100, 200], [100], [200], [200]],
            "topic_scores": [[1.0], [1.0], [0.5, 0.5], [1.0], [1.0], [1.0]],
        },
        schema=ITEM_FEATURES,
    )
    write_partition(cfg.raw_table("item_features"), day, items)
    write_partition(cfg.raw_table("topics"), day, pa.table({"topic_id": [100, 200], "name": ["art", "food"]}, schema=TOPICS))
    follows = pa.table({"user_id": [1, 2], "topic_id": [100, 200], "followed_ts": [ts("2026-01-01", "00:00")] * 2},
                       schema=USER_FOLLOWS)
    write_partition(cfg.raw_table("user_follows"), day, follows)


def write_raw(cfg: MerConfig, events=EVENTS, source_interest=SOURCE_INTEREST, days=DAYS) -> None:
    """Logs partitioned by event day (every day of ``days`` gets a partition, maybe empty) + snapshots."""
    write_snapshots(cfg, days[0])
    for day in days:
        write_partition(cfg.raw_table("engagement_log"), day, engagement_table([e for e in events if e[1] == day]))
        write_partition(cfg.raw_table("source_interest_log"), day,
                        source_interest_table([s for s in source_interest if s[0] == day]))


def small_cfg(cfg: MerConfig, **build) -> MerConfig:
    """Three-day window (train 01-13, 01-14; eval 01-15), history of 3, core = 2+ train saves."""
    opts = {"train_days": 2, "eval_days": 1, "history_len": 3, "core_saves_per_28d": 14, "eval_corpus_size": 3}
    opts.update(build)
    cfg.build = cfg.build.model_copy(update=opts)
    cfg.spark = cfg.spark.model_copy(update={"shuffle_partitions": 2})
    return cfg


@pytest.fixture(scope="session")
def built_small(spark, tmp_path_factory) -> tuple[MerConfig, dict]:
    """The fixture dataset validated and built once per test run (read-only for its users)."""
    from mer.stages.spark_jobs import training_data, validate_raw

    cfg = small_cfg(MerConfig(root=tmp_path_factory.mktemp("built") / "var"))
    write_raw(cfg)
    validate_raw.run(cfg, DS)
    return cfg, training_data.run(cfg, DS)
