"""MovieLens (``ml-latest-small``) -> the raw input contract (``mer ingest movielens PATH``).

The dataset is read in place (GroupLens licence: research use only, no redistribution: nothing of
it is copied into the repository). Every choice below is deterministic, so a re-ingest writes the
same rows. The timeline, requests, follows and source interests follow the rules every ingest shares
(``mer.stages.datagen.interactions``, the generic ``mer ingest interactions``); what is MovieLens's own is
reading its files, the rating -> action thresholds and the item features.

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
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from mer.base.config import MerConfig
from mer.base.contract import ITEM_FEATURES
from mer.base.errors import ContractError
from mer.stages.datagen.interactions import claim_root, place_events, write_raw

TAG_BUCKETS = 16
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


# ------------------------------------------------------------------------------------------ entry point
def ingest(cfg: MerConfig, path: Path) -> dict:
    g = cfg.generate
    ratings, movies, tags = load(path)
    if len(ratings) < g.days:
        raise ContractError(f"movielens: ratings.csv has {len(ratings)} rows, fewer than {g.days} days")
    vocab = genre_vocab(movies)
    items = item_features(movies, tags, vocab, g.pretrained_dim, g.seed)
    r = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    r["action"] = rating_action(r.rating.to_numpy())
    claim_root(cfg, {"source": str(Path(path).resolve()), "kind": "movielens"})
    r = place_events(cfg, r, "ml")
    return {"source": str(path), **write_raw(cfg, r, items, vocab, "ml")}
