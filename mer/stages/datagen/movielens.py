"""MovieLens (``ml-latest-small``) -> the raw input contract (``mer ingest movielens PATH``).

The dataset is read in place (GroupLens licence: research use only, no redistribution: nothing of
it is copied into the repository). Every choice below is deterministic, so a re-ingest writes the
same rows.

Mapping
- **Engagements.** Each rating becomes an ``impression`` at its (remapped) time, then one action one
  second later: rating >= 4 -> ``save``; 3 or 3.5 -> ``click``; <= 2.5 -> ``hide``. Surface ``home_feed``.
  ``event_id`` = ``ml-<global order>-i`` / ``-a`` (impression / action).
- **Timeline.** All ratings sorted by (timestamp, userId, movieId) are cut into ``cfg.generate.days`` (15)
  equal-count days ending at ``cfg.generate.end_ds``. Inside a day, original timestamps are mapped linearly
  onto [00:00:01, 23:59:57], so order and ties are kept and every event lies inside its ``ds``.
- **Requests.** ``request_id`` per (user, session): a session breaks after a 30-minute gap in the user's
  original timestamps or at a day boundary.
- **Topics.** Genres, sorted by name, ``topic_id`` = position + 1 (stable across re-ingests);
  "(no genres listed)" is not a topic.
- **Item features.** ``topic_ids`` = the movie's genres, equal scores 1/n (order: topic id).
  ``category_id`` = release decade from the title's "(YYYY)" (e.g. 1990; 0 when absent); ``creator_id`` = 0.
  ``pretrained_embedding``: a feature vector [genre one-hot | year: (y-1900)/100 and its square |
  16 hashed tag buckets (crc32 of the lower-cased tag, log1p counts) | log1p(tag count)] times a fixed
  Gaussian projection (``np.random.default_rng(cfg.generate.seed)``, features x ``pretrained_dim``),
  L2-normalised. A movie with no genre, no year and no tag has no features: null embedding (invalid item).
- **Follows.** A user follows up to 3 genres: the most frequent among the movies of their earliest 20 %
  of ratings (at least one rating; rating >= 3 when any, ties by topic id). ``followed_ts`` = the time of
  the last of those ratings. The ``user_follows`` snapshot of day D holds the follows made by the end of D.
- **Source interest (a simulated followed-topic retriever).** One ``source_interest_log`` row per rating:
  when the movie has a genre the user already follows at that time, retriever ``followed_topic`` with that
  genre (the user's highest-ranked followed one) as ``source_interest_id``; else ``collaborative``, null.
"""
from __future__ import annotations

import re
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from mer.base.config import MerConfig
from mer.base.contract import ITEM_FEATURES, RAW_TABLES, TOPICS, USER_FOLLOWS
from mer.base.errors import ContractError
from mer.base.io import write_partition

DAY_S = 86_400
SESSION_GAP_S = 30 * 60
TAG_BUCKETS = 16
MAX_FOLLOWS = 3
EARLY_FRACTION = 0.2
NO_GENRE = "(no genres listed)"
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def rating_action(rating: np.ndarray) -> np.ndarray:
    """save for >= 4, click for 3-3.5, hide for <= 2.5."""
    rating = np.asarray(rating, dtype=np.float64)
    return np.where(rating >= 4.0, "save", np.where(rating >= 3.0, "click", "hide"))


# ------------------------------------------------------------------------------------------ reading
def _read_csv(path: Path, name: str, columns: dict[str, str]) -> pd.DataFrame:
    f = path / name
    if not f.is_file():
        raise ContractError(f"movielens: {f} is missing (expected the ml-latest-small folder with {name})")
    df = pd.read_csv(f, dtype=columns) if name != "tags.csv" else pd.read_csv(f, dtype=columns, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ContractError(f"movielens: {name} has no column(s) {', '.join(missing)} (found {', '.join(df.columns)})")
    return df


def load(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    path = Path(path)
    if not path.is_dir():
        raise ContractError(f"movielens: folder {path} does not exist")
    try:
        ratings = _read_csv(path, "ratings.csv", {"userId": "int64", "movieId": "int64", "rating": "float64", "timestamp": "int64"})
        movies = _read_csv(path, "movies.csv", {"movieId": "int64", "title": "string", "genres": "string"})
        tags = (
            _read_csv(path, "tags.csv", {"userId": "int64", "movieId": "int64", "tag": "string", "timestamp": "int64"})
            if (path / "tags.csv").is_file()
            else pd.DataFrame({"movieId": pd.Series(dtype="int64"), "tag": pd.Series(dtype="string")})
        )
    except ValueError as exc:  # a non-numeric id / rating / timestamp
        raise ContractError(f"movielens: unreadable value in {path}: {exc}") from None
    bad = ratings[(ratings.rating < 0.5) | (ratings.rating > 5.0)]
    if len(bad):
        r = bad.iloc[0]
        raise ContractError(f"movielens: ratings.csv column rating has value {r.rating} (userId={r.userId}, movieId={r.movieId}); expected 0.5-5")
    unknown = ~ratings.movieId.isin(movies.movieId)
    if unknown.any():
        raise ContractError(f"movielens: ratings.csv column movieId has value {ratings.movieId[unknown].iloc[0]} not in movies.csv")
    return ratings, movies, tags


# ------------------------------------------------------------------------------------------ items
def genre_vocab(movies: pd.DataFrame) -> list[str]:
    genres = {g for gs in movies.genres.fillna("") for g in str(gs).split("|") if g and g != NO_GENRE}
    return sorted(genres)


def item_features(movies: pd.DataFrame, tags: pd.DataFrame, vocab: list[str], dim: int, seed: int) -> pa.Table:
    index = {g: i for i, g in enumerate(vocab)}
    n, G = len(movies), len(vocab)
    genre_lists = [[index[g] for g in str(gs).split("|") if g in index] for gs in movies.genres.fillna("")]
    onehot = np.zeros((n, G))
    for row, gl in enumerate(genre_lists):
        onehot[row, gl] = 1.0
    year = movies.title.fillna("").str.extract(_YEAR, expand=False).astype("float64").to_numpy()
    has_year = ~np.isnan(year)
    y = np.where(has_year, (np.nan_to_num(year) - 1900.0) / 100.0, 0.0)
    row_of = pd.Series(np.arange(n), index=movies.movieId.to_numpy())
    tag_feat = np.zeros((n, TAG_BUCKETS + 1))
    t = tags[tags.movieId.isin(row_of.index)]
    if len(t):
        rows = row_of[t.movieId.to_numpy()].to_numpy()
        buckets = np.array([zlib.crc32(str(s).strip().lower().encode()) % TAG_BUCKETS for s in t.tag], dtype=np.int64)
        np.add.at(tag_feat, (rows, buckets), 1.0)
        np.add.at(tag_feat, (rows, np.full(len(rows), TAG_BUCKETS)), 1.0)
    feats = np.concatenate([onehot, y[:, None], (y**2)[:, None], np.log1p(tag_feat)], axis=1)
    proj = np.random.default_rng(seed).standard_normal((feats.shape[1], dim)) / np.sqrt(dim)
    emb = feats @ proj
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    has_features = (onehot.sum(axis=1) > 0) | has_year | (tag_feat[:, -1] > 0)
    emb = (emb / np.where(norm > 0, norm, 1.0)).astype(np.float32)

    decade = np.where(has_year, (np.nan_to_num(year) // 10 * 10), 0).astype(np.int64)
    topic_ids = [[g + 1 for g in sorted(gl)] for gl in genre_lists]
    return pa.table(
        {
            "item_id": pa.array(movies.movieId.to_numpy(), pa.int64()),
            "pretrained_embedding": pa.array([list(e) if ok else None for e, ok in zip(emb, has_features)],
                                             pa.list_(pa.float32())),
            "category_id": pa.array(decade, pa.int64()),
            "creator_id": pa.array(np.zeros(n, np.int64), pa.int64()),
            "topic_ids": pa.array(topic_ids, pa.list_(pa.int64())),
            "topic_scores": pa.array([[1.0 / max(len(x), 1)] * len(x) for x in topic_ids], pa.list_(pa.float32())),
        },
        schema=ITEM_FEATURES,
    )


# ------------------------------------------------------------------------------------------ events
def assign_days(ratings: pd.DataFrame, start_us: int, n_days: int) -> pd.DataFrame:
    """Equal-count days by global time order; inside a day the original times map linearly (order, ties kept)."""
    r = ratings.sort_values(["timestamp", "userId", "movieId"], kind="stable").reset_index(drop=True)
    r["order"] = np.arange(len(r))
    r["day"] = np.repeat(np.arange(n_days), [len(c) for c in np.array_split(np.arange(len(r)), n_days)])
    lo = r.groupby("day").timestamp.transform("min").to_numpy()
    hi = r.groupby("day").timestamp.transform("max").to_numpy()
    frac = np.where(hi > lo, (r.timestamp.to_numpy() - lo) / np.maximum(hi - lo, 1), 0.5)
    # [00:00:01, 23:59:57]: the action one second after the impression stays in the day
    offset_us = (1_000_000 + frac * (DAY_S - 4) * 1_000_000).astype(np.int64)
    r["ts_us"] = start_us + r.day.to_numpy() * DAY_S * 1_000_000 + offset_us
    return r


def sessions(r: pd.DataFrame) -> np.ndarray:
    """request_id per (user, session): a 30-minute gap in original time or a new day starts one."""
    by_user = r.sort_values(["userId", "order"], kind="stable")
    new = (
        (by_user.userId.diff() != 0)
        | (by_user.timestamp.diff() > SESSION_GAP_S)
        | (by_user.day.diff() != 0)
    ).to_numpy()
    n = np.cumsum(new) - 1
    rid = pd.Series([f"ml-{u}-{s}" for u, s in zip(by_user.userId.to_numpy(), n)], index=by_user.index)
    return rid.sort_index().to_numpy()


def follows(r: pd.DataFrame, item_topics: dict[int, list[int]]) -> pd.DataFrame:
    """Up to MAX_FOLLOWS genres from each user's earliest 20 % of ratings; followed_ts = the last of those."""
    by_user = r.sort_values(["userId", "order"], kind="stable")
    rank = by_user.groupby("userId").cumcount()
    size = by_user.groupby("userId").userId.transform("size")
    early = by_user[rank < np.maximum(1, np.floor(EARLY_FRACTION * size))]
    liked = early[early.rating >= 3.0]
    early = pd.concat([liked, early[~early.userId.isin(liked.userId)]])  # users with no liked early rating
    followed_ts = early.groupby("userId").ts_us.max()
    pairs = early[["userId", "movieId"]].assign(topic_id=early.movieId.map(item_topics)).explode("topic_id").dropna()
    pairs["topic_id"] = pairs.topic_id.astype("int64")
    counts = pairs.groupby(["userId", "topic_id"]).size().rename("n").reset_index()
    counts = counts.sort_values(["userId", "n", "topic_id"], ascending=[True, False, True], kind="stable")
    counts["follow_rank"] = counts.groupby("userId").cumcount()
    top = counts[counts.follow_rank < MAX_FOLLOWS].copy()
    top["followed_ts"] = top.userId.map(followed_ts).astype("int64")
    return top[["userId", "topic_id", "follow_rank", "followed_ts"]].reset_index(drop=True)


def source_interest(r: pd.DataFrame, fol: pd.DataFrame, item_topics: dict[int, list[int]]) -> pd.DataFrame:
    """The simulated followed-topic retriever: the user's best-ranked followed genre the movie has, if followed by then."""
    cand = r[["order", "userId", "movieId", "ts_us"]].assign(topic_id=r.movieId.map(item_topics)).explode("topic_id").dropna()
    cand["topic_id"] = cand.topic_id.astype("int64")
    m = cand.merge(fol, on=["userId", "topic_id"])
    m = m[m.followed_ts <= m.ts_us].sort_values(["order", "follow_rank"], kind="stable").drop_duplicates("order")
    src = pd.Series(pd.NA, index=r.order, dtype="Int64")
    src[m.order.to_numpy()] = m.topic_id.to_numpy()
    return src.to_numpy(dtype=object)


# ------------------------------------------------------------------------------------------ entry point
def ingest(cfg: MerConfig, path: Path) -> dict:
    g = cfg.generate
    ratings, movies, tags = load(path)
    if len(ratings) < g.days:
        raise ContractError(f"movielens: ratings.csv has {len(ratings)} rows, fewer than {g.days} days")
    start = g.start_ds()
    start_us = int(pd.Timestamp(start).value // 1000)
    vocab = genre_vocab(movies)
    items = item_features(movies, tags, vocab, g.pretrained_dim, g.seed)
    item_topics = dict(zip(items.column("item_id").to_pylist(), items.column("topic_ids").to_pylist()))
    topics = pa.table({"topic_id": pa.array(np.arange(1, len(vocab) + 1), pa.int64()), "name": vocab}, schema=TOPICS)

    r = assign_days(ratings, start_us, g.days)
    r["request_id"] = sessions(r)
    fol = follows(r, item_topics)
    src = source_interest(r, fol, item_topics)
    r["action"] = rating_action(r.rating.to_numpy())

    rows = {name: 0 for name in RAW_TABLES}
    days = [start + timedelta(days=i) for i in range(g.days)]
    for i, d in enumerate(days):
        ds = d.isoformat()
        day = r[r.day == i]
        n = len(day)
        ts = np.concatenate([day.ts_us.to_numpy(), day.ts_us.to_numpy() + 1_000_000])
        order = np.concatenate([day.order.to_numpy(), day.order.to_numpy()])
        kind = np.repeat(["i", "a"], n)
        eng = pa.table(
            {
                "event_id": [f"ml-{o}-{k}" for o, k in zip(order, kind)],
                "event_ts": pa.array(ts, pa.timestamp("us")),
                "user_id": pa.array(np.tile(day.userId.to_numpy(), 2), pa.int64()),
                "item_id": pa.array(np.tile(day.movieId.to_numpy(), 2), pa.int64()),
                "action": np.concatenate([np.full(n, "impression"), day.action.to_numpy()]).tolist(),
                "request_id": np.tile(day.request_id.to_numpy(), 2).tolist(),
                "surface": ["home_feed"] * (2 * n),
            },
            schema=RAW_TABLES["engagement_log"],
        )
        eng = eng.take(np.lexsort((kind == "a", ts)))  # time order; an impression before its action
        s = src[day.order.to_numpy()]
        followed = np.array([v is not pd.NA for v in s], dtype=bool)
        src_t = pa.table(
            {
                "request_id": day.request_id.tolist(),
                "item_id": pa.array(day.movieId.to_numpy(), pa.int64()),
                "retriever": np.where(followed, "followed_topic", "collaborative").tolist(),
                "source_interest_id": pa.array([int(v) if ok else None for v, ok in zip(s, followed)], pa.int64()),
            },
            schema=RAW_TABLES["source_interest_log"],
        )
        day_end_us = start_us + (i + 1) * DAY_S * 1_000_000
        f = fol[fol.followed_ts < day_end_us]
        follows_t = pa.table(
            {
                "user_id": pa.array(f.userId.to_numpy(), pa.int64()),
                "topic_id": pa.array(f.topic_id.to_numpy(), pa.int64()),
                "followed_ts": pa.array(f.followed_ts.to_numpy(), pa.timestamp("us")),
            },
            schema=USER_FOLLOWS,
        )
        for name, table in (("engagement_log", eng), ("source_interest_log", src_t), ("user_follows", follows_t),
                            ("item_features", items), ("topics", topics)):
            write_partition(cfg.raw_table(name), ds, table)
            rows[name] += table.num_rows
    actions = r.action.value_counts().to_dict()
    n_followed = int(sum(v is not pd.NA for v in src))
    return {
        "source": str(path),
        "root": str(cfg.root),
        "days": [days[0].isoformat(), days[-1].isoformat()],
        "users": int(ratings.userId.nunique()),
        "items": len(movies),
        "topics": len(vocab),
        "invalid_items": int(items.column("pretrained_embedding").null_count),
        "rows": rows,
        "actions": {"impression": len(r), **{k: int(v) for k, v in actions.items()}},
        "followed_topic_share": round(n_followed / len(r), 4),
        "follows": len(fol),
    }
