"""Any interaction log -> the raw input contract (``mer ingest interactions FILE``); MovieLens's ingest shares it.

Most public data sets are a table of (user, item, time[, rating]) rows and, at best, an item table with a
category, a creator, topics or a content embedding. This turns one into the five raw tables the pipeline
reads, with the same deterministic rules ``mer ingest movielens`` uses (a re-ingest writes the same rows):

- **Ids.** Integer ids >= 1 are kept. Any other id (a string such as an ASIN, or 0 / negative) maps every id of
  that column to 1..n in sorted order, and ``<root>/ingest/{user,item}_ids.parquet`` holds (source_id, id) so
  results can be read back in the source's terms.
- **Time.** Epoch numbers (the unit read from their size: s, ms, us or ns) or date-time strings (UTC unless they
  say otherwise). All rows sorted by (time, user, item) are cut into ``cfg.generate.days`` equal-count days
  ending at ``cfg.generate.end_ds``; inside a day, times map linearly onto [00:00:01, 23:59:57] (order, ties kept).
- **Engagements.** Each row is an ``impression`` and one action one second later: with a rating column,
  ``save`` at >= ``save_at``, ``click`` at >= ``click_at``, else ``hide``; without one (implicit feedback:
  plays, purchases, check-ins) every row is ``implicit_action``.
- **Requests.** ``request_id`` per (user, session): a 30-minute gap in the source times or a new day starts one.
- **Items.** From the optional item table: topics (a list column or a ``topic_sep``-separated string; topic ids
  = names sorted, from 1; equal scores), category and creator (integers kept, other values map to 1..n, missing
  0), the content embedding (a list column or a string of numbers; one length for the data set; missing or
  non-finite: null, an item without features). Items engaged but absent from the item table get no features.
- **Follows and source interests (simulated: such logs record neither).** A user follows up to 3 topics: the
  most frequent among the items of their earliest 20 % of engagements (non-hidden ones when any), followed at
  the last of those; an engagement whose item has a topic the user already follows is logged as retrieved by
  ``followed_topic`` with that topic (the user's best-ranked one), else ``collaborative``. Without topics there
  are no follows and the explicit-interest models (CR, inverted index) report that they do not apply.

Rows that cannot be placed (no user, item or time, an unreadable time or rating) are not dropped silently: they
go to ``<root>/ingest/rejected_interactions.parquet`` with the reason. A root whose raw tables another source
wrote is never overwritten (``<root>/ingest/source.json`` records which source wrote them).
"""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from mer.base.config import MerConfig
from mer.base.contract import ITEM_FEATURES, RAW_TABLES, TOPICS, USER_FOLLOWS
from mer.base.errors import ContractError
from mer.base.io import write_partition

DAY_S = 86_400
SESSION_GAP_S = 30 * 60
MAX_FOLLOWS = 3
EARLY_FRACTION = 0.2


class InteractionsSource(BaseModel):
    """Where the interactions (and optionally the items) are and which columns mean what."""

    model_config = ConfigDict(extra="forbid")
    path: Path
    items: Path | None = None
    user_col: str = "user_id"
    item_col: str = "item_id"  # in both tables
    time_col: str = "timestamp"
    rating_col: str | None = None
    save_at: float = 4.0
    click_at: float = 3.0
    implicit_action: Literal["click", "save"] = "click"
    topics_col: str | None = None
    topic_sep: str = "|"
    category_col: str | None = None
    creator_col: str | None = None
    embedding_col: str | None = None


# ------------------------------------------------------------------------------------------ reading
def read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV / TSV file, a Parquet file or a folder of Parquet files, as read by pyarrow."""
    path = Path(path)
    if not path.exists():
        raise ContractError(f"ingest: {what} file {path} does not exist")
    try:
        if path.is_dir() or path.suffix.lower() in (".parquet", ".pq"):
            table = pq.read_table(path)
        elif path.suffix.lower() in (".csv", ".tsv", ".txt"):
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
        else:
            raise ContractError(f"ingest: {what} file {path}: unknown format {path.suffix!r} "
                                "(expected .csv, .tsv, .parquet or a folder of Parquet files)")
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(f"ingest: {what} file {path} is not readable: {str(exc).splitlines()[0]}") from None
    # Integer columns with gaps stay integers (Int64), not floats whose ids would print as "1.0".
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype()}.get)


def require_columns(df: pd.DataFrame, path: Path, columns: list[str | None]) -> None:
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise ContractError(f"ingest: {path} has no column(s) {', '.join(missing)} "
                            f"(found {', '.join(map(str, df.columns))}); name them with --user-col / --item-col / ...")


def epoch_seconds(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(seconds since the epoch as float64, unreadable mask). Numbers: unit from their size; else date-times."""
    if pd.api.types.is_datetime64_any_dtype(values):  # any resolution (Arrow reads ISO strings as seconds)
        return _seconds(pd.to_datetime(values, utc=True))
    if pd.api.types.is_numeric_dtype(values):
        x = values.to_numpy(dtype=np.float64, na_value=np.nan)
        big = np.nanmedian(np.abs(x)) if np.isfinite(x).any() else 0.0
        scale = 1e9 if big > 1e17 else 1e6 if big > 1e14 else 1e3 if big > 1e11 else 1.0
        return x / scale, ~np.isfinite(x)
    text = values.astype("string")
    number = pd.to_numeric(text, errors="coerce")
    if number.notna().sum() * 2 > text.notna().sum():  # mostly numbers: epoch times with a few bad cells
        return epoch_seconds(number.astype("float64"))
    return _seconds(pd.to_datetime(text, utc=True, errors="coerce", format="mixed"))


def _seconds(ts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    bad = ts.isna().to_numpy()
    secs = ((ts - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=0.0)
    return secs, bad


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct value -> 1..n in sorted (text) order, missing -> 0; and the distinct values."""
    keys = values.astype("string")
    uniq = np.sort(keys.dropna().unique().to_numpy(dtype=object))
    codes = keys.map(pd.Series(np.arange(1, len(uniq) + 1), index=uniq)).fillna(0).to_numpy(dtype=np.int64)
    return codes, uniq


def dense_ids(values: pd.Series) -> tuple[np.ndarray, pd.DataFrame | None]:
    """int64 ids: integer ids >= 1 as they are; otherwise every value -> 1..n in sorted order, with the map."""
    if pd.api.types.is_integer_dtype(values) and len(values) and values.min() >= 1:
        return values.to_numpy(dtype=np.int64), None
    codes, uniq = _sorted_codes(values)
    return codes, pd.DataFrame({"source_id": uniq.astype(str), "id": np.arange(1, len(uniq) + 1, dtype=np.int64)})


def code_ids(values: pd.Series) -> np.ndarray:
    """Category / creator codes: non-negative integers kept, other values 1..n by sorted value, missing 0."""
    if pd.api.types.is_integer_dtype(values) and (values.dropna() >= 0).all():
        return values.fillna(0).to_numpy(dtype=np.int64)
    return _sorted_codes(values)[0]


# ------------------------------------------------------------------------------------------ events
def assign_days(r: pd.DataFrame, start_us: int, n_days: int) -> pd.DataFrame:
    """Equal-count days by global time order; inside a day the original times map linearly (order, ties kept).

    `r`: user_id, item_id, timestamp (seconds); adds order, day, ts_us."""
    r = r.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    r["order"] = np.arange(len(r))
    r["day"] = np.repeat(np.arange(n_days), [len(c) for c in np.array_split(np.arange(len(r)), n_days)])
    lo = r.groupby("day").timestamp.transform("min").to_numpy()
    hi = r.groupby("day").timestamp.transform("max").to_numpy()
    frac = np.where(hi > lo, (r.timestamp.to_numpy() - lo) / np.maximum(hi - lo, 1), 0.5)
    # [00:00:01, 23:59:57]: the action one second after the impression stays in the day
    offset_us = (1_000_000 + frac * (DAY_S - 4) * 1_000_000).astype(np.int64)
    r["ts_us"] = start_us + r.day.to_numpy() * DAY_S * 1_000_000 + offset_us
    return r


def sessions(r: pd.DataFrame, prefix: str) -> np.ndarray:
    """request_id per (user, session): a 30-minute gap in original time or a new day starts one."""
    by_user = r.sort_values(["user_id", "order"], kind="stable")
    new = (
        (by_user.user_id.diff() != 0)
        | (by_user.timestamp.diff() > SESSION_GAP_S)
        | (by_user.day.diff() != 0)
    ).to_numpy()
    n = np.cumsum(new) - 1
    rid = pd.Series([f"{prefix}-{u}-{s}" for u, s in zip(by_user.user_id.to_numpy(), n)], index=by_user.index)
    return rid.sort_index().to_numpy()


def follows(r: pd.DataFrame, item_topics: dict[int, list[int]]) -> pd.DataFrame:
    """Up to MAX_FOLLOWS topics from each user's earliest 20 % of engagements; followed_ts = the last of those."""
    by_user = r.sort_values(["user_id", "order"], kind="stable")
    rank = by_user.groupby("user_id").cumcount()
    size = by_user.groupby("user_id").user_id.transform("size")
    early = by_user[rank < np.maximum(1, np.floor(EARLY_FRACTION * size))]
    liked = early[early.action != "hide"]
    early = pd.concat([liked, early[~early.user_id.isin(liked.user_id)]])  # users with no liked early engagement
    followed_ts = early.groupby("user_id").ts_us.max()
    pairs = early[["user_id", "item_id"]].assign(topic_id=early.item_id.map(item_topics)).explode("topic_id").dropna()
    pairs["topic_id"] = pairs.topic_id.astype("int64")
    counts = pairs.groupby(["user_id", "topic_id"]).size().rename("n").reset_index()
    counts = counts.sort_values(["user_id", "n", "topic_id"], ascending=[True, False, True], kind="stable")
    counts["follow_rank"] = counts.groupby("user_id").cumcount()
    top = counts[counts.follow_rank < MAX_FOLLOWS].copy()
    top["followed_ts"] = top.user_id.map(followed_ts).astype("int64")
    return top[["user_id", "topic_id", "follow_rank", "followed_ts"]].reset_index(drop=True)


def source_interest(r: pd.DataFrame, fol: pd.DataFrame, item_topics: dict[int, list[int]]) -> np.ndarray:
    """The simulated followed-topic retriever: the user's best-ranked followed topic the item has, if followed by then."""
    cand = r[["order", "user_id", "item_id", "ts_us"]].assign(topic_id=r.item_id.map(item_topics)).explode("topic_id").dropna()
    cand["topic_id"] = cand.topic_id.astype("int64")
    m = cand.merge(fol, on=["user_id", "topic_id"])
    m = m[m.followed_ts <= m.ts_us].sort_values(["order", "follow_rank"], kind="stable").drop_duplicates("order")
    src = np.full(len(r), -1, dtype=np.int64)
    src[m.order.to_numpy()] = m.topic_id.to_numpy()
    return src


# ------------------------------------------------------------------------------------------ writing
def claim_root(cfg: MerConfig, source: dict) -> None:
    """Refuse a root whose raw tables another source wrote; record this source as the writer."""
    marker = cfg.root / "ingest" / "source.json"
    raw = cfg.root / "raw"
    if raw.is_dir() and any(p.is_dir() and any(p.glob("ds=*")) for p in raw.iterdir()):
        if not marker.is_file():
            raise ContractError(f"ingest: {raw} already holds raw tables that no ingest of {source['source']} wrote "
                                "(e.g. `mer generate`); ingest into another --root")
        before = json.loads(marker.read_text())
        if before != source:
            raise ContractError(f"ingest: {raw} holds raw tables ingested from {before.get('source')} with other "
                                "settings; ingest into another --root (a published root is never overwritten)")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(source, indent=2, sort_keys=True))


def write_raw(cfg: MerConfig, r: pd.DataFrame, items: pa.Table, topic_names: list[str], prefix: str) -> dict:
    """Events with day / ts_us / request_id / action -> the five raw tables, one partition per day.

    Follows and source interests are simulated from the items' topics (module docstring). Returns row counts."""
    g = cfg.generate
    start = g.start_ds()
    start_us = _start_us(cfg)
    item_topics = dict(zip(items.column("item_id").to_pylist(), items.column("topic_ids").to_pylist()))
    topics = pa.table({"topic_id": pa.array(np.arange(1, len(topic_names) + 1), pa.int64()), "name": topic_names},
                      schema=TOPICS)
    fol = follows(r, item_topics)
    src = source_interest(r, fol, item_topics)

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
                "event_id": [f"{prefix}-{o}-{k}" for o, k in zip(order, kind)],
                "event_ts": pa.array(ts, pa.timestamp("us")),
                "user_id": pa.array(np.tile(day.user_id.to_numpy(), 2), pa.int64()),
                "item_id": pa.array(np.tile(day.item_id.to_numpy(), 2), pa.int64()),
                "action": np.concatenate([np.full(n, "impression"), day.action.to_numpy()]).tolist(),
                "request_id": np.tile(day.request_id.to_numpy(), 2).tolist(),
                "surface": ["home_feed"] * (2 * n),
            },
            schema=RAW_TABLES["engagement_log"],
        )
        eng = eng.take(np.lexsort((kind == "a", ts)))  # time order; an impression before its action
        # One retriever row per (request, item), the join key stage 1 requires unique: an item engaged twice in
        # a session (a replay, a re-purchase) was served once, by the retriever of its first engagement.
        served = day.drop_duplicates(["request_id", "item_id"], keep="first")
        s = src[served.order.to_numpy()]
        followed = s > 0
        src_t = pa.table(
            {
                "request_id": served.request_id.tolist(),
                "item_id": pa.array(served.item_id.to_numpy(), pa.int64()),
                "retriever": np.where(followed, "followed_topic", "collaborative").tolist(),
                "source_interest_id": pa.array(s, pa.int64(), mask=~followed),
            },
            schema=RAW_TABLES["source_interest_log"],
        )
        day_end_us = start_us + (i + 1) * DAY_S * 1_000_000
        f = fol[fol.followed_ts < day_end_us]
        follows_t = pa.table(
            {
                "user_id": pa.array(f.user_id.to_numpy(), pa.int64()),
                "topic_id": pa.array(f.topic_id.to_numpy(), pa.int64()),
                "followed_ts": pa.array(f.followed_ts.to_numpy(), pa.timestamp("us")),
            },
            schema=USER_FOLLOWS,
        )
        for name, table in (("engagement_log", eng), ("source_interest_log", src_t), ("user_follows", follows_t),
                            ("item_features", items), ("topics", topics)):
            write_partition(cfg.raw_table(name), ds, table)
            rows[name] += table.num_rows
    return {
        "root": str(cfg.root),
        "days": [days[0].isoformat(), days[-1].isoformat()],
        "users": int(r.user_id.nunique()),
        "items": items.num_rows,
        "topics": len(topic_names),
        "invalid_items": int(items.column("pretrained_embedding").null_count),
        "rows": rows,
        "actions": {"impression": len(r), **{k: int(v) for k, v in r.action.value_counts().items()}},
        "followed_topic_share": round(float((src > 0).mean()), 4) if len(r) else 0.0,
        "follows": len(fol),
    }


def _start_us(cfg: MerConfig) -> int:
    """The window's first midnight (UTC), in microseconds: where day 0 of the events begins."""
    return int(pd.Timestamp(cfg.generate.start_ds()).value // 1000)


def place_events(cfg: MerConfig, r: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Days, times and requests of events with user_id, item_id, timestamp (s) and action."""
    g = cfg.generate
    if len(r) < g.days:
        raise ContractError(f"ingest: {len(r)} usable interactions, fewer than the {g.days} days to spread them over "
                            "(generate.days)")
    r = assign_days(r, _start_us(cfg), g.days)
    r["request_id"] = sessions(r, prefix)
    return r


# ------------------------------------------------------------------------------------------ items
def parse_embeddings(values: pd.Series, item_ids: np.ndarray, path: Path, column: str) -> list[list[float] | None]:
    """A list column or strings of numbers ("0.1 0.2", "[0.1, 0.2]") -> float lists of one length; bad -> None."""
    out: list[list[float] | None] = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
            continue
        if isinstance(v, str):
            try:
                v = [float(x) for x in v.replace("[", " ").replace("]", " ").replace(",", " ").split()]
            except ValueError:
                v = []
        arr = np.asarray(v, dtype=np.float64)
        out.append(arr.astype(np.float32).tolist() if arr.size and np.isfinite(arr).all() else None)
    lengths = {len(x) for x in out if x is not None}
    if len(lengths) > 1:
        first = next(i for i, x in enumerate(out) if x is not None)
        other = next(i for i, x in enumerate(out) if x is not None and len(x) != len(out[first]))
        raise ContractError(f"ingest: {path} column {column}: item {item_ids[other]} has an embedding of length "
                            f"{len(out[other])}, item {item_ids[first]} one of length {len(out[first])}; "
                            "one length per data set")
    return out


def item_table(src: InteractionsSource, item_ids: np.ndarray, items: pd.DataFrame | None,
               items_item_ids: np.ndarray | None) -> tuple[pa.Table, list[str]]:
    """item_features rows for every engaged or listed item, and the topic names (topic id = position + 1)."""
    key = "__mer_item_id"  # the mapped id, beside the item table's own columns (whatever their names)
    if items is None:
        ids = item_ids
        feats = pd.DataFrame(index=range(len(item_ids)))
    else:
        listed = items.reset_index(drop=True).assign(**{key: items_item_ids}).drop_duplicates(key, keep="first")
        ids = np.union1d(item_ids, listed[key].to_numpy())
        feats = pd.DataFrame({key: ids}).merge(listed, on=key, how="left")
    n = len(ids)
    topic_lists: list[list[str]] = [[] for _ in range(n)]
    if src.topics_col:
        for i, v in enumerate(feats[src.topics_col]):
            if isinstance(v, str):
                topic_lists[i] = [t.strip() for t in v.split(src.topic_sep) if t.strip()]
            elif v is not None and not (isinstance(v, float) and np.isnan(v)):
                topic_lists[i] = [str(t).strip() for t in v if t is not None and str(t).strip()]
    names = sorted({t for ts in topic_lists for t in ts})
    index = {t: k + 1 for k, t in enumerate(names)}
    topic_ids = [sorted({index[t] for t in ts}) for ts in topic_lists]
    emb: list[list[float] | None] = [None] * n
    if src.embedding_col:
        emb = parse_embeddings(feats[src.embedding_col], ids, src.items or src.path, src.embedding_col)
    zeros = np.zeros(n, np.int64)
    table = pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "pretrained_embedding": pa.array(emb, pa.list_(pa.float32())),
            "category_id": pa.array(code_ids(feats[src.category_col]) if src.category_col else zeros, pa.int64()),
            "creator_id": pa.array(code_ids(feats[src.creator_col]) if src.creator_col else zeros, pa.int64()),
            "topic_ids": pa.array(topic_ids, pa.list_(pa.int64())),
            "topic_scores": pa.array([[1.0 / max(len(x), 1)] * len(x) for x in topic_ids], pa.list_(pa.float32())),
        },
        schema=ITEM_FEATURES,
    )
    return table, names


# ------------------------------------------------------------------------------------------ entry point
def _reject(df: pd.DataFrame, reasons: np.ndarray) -> pd.DataFrame:
    bad = reasons != ""
    out = df[bad].astype("string").copy()
    out["reason"] = reasons[bad]
    return out


def ingest(cfg: MerConfig, src: InteractionsSource) -> dict:
    src = src.model_copy(update={"path": Path(src.path).resolve(), "items": src.items and Path(src.items).resolve()})
    if src.click_at > src.save_at:
        raise ContractError(f"ingest: click_at {src.click_at} is above save_at {src.save_at}")
    df = read_table(src.path, "interactions")
    require_columns(df, src.path, [src.user_col, src.item_col, src.time_col, src.rating_col])
    items = None
    if src.items is not None:
        items = read_table(src.items, "items")
        require_columns(items, src.items, [src.item_col, src.topics_col, src.category_col, src.creator_col,
                                           src.embedding_col])
    elif any((src.topics_col, src.category_col, src.creator_col, src.embedding_col)):
        raise ContractError("ingest: --topics-col / --category-col / --creator-col / --embedding-col name columns of "
                            "the item table: pass it with --items")

    secs, bad_time = epoch_seconds(df[src.time_col])
    reasons = np.full(len(df), "", dtype=object)
    reasons[bad_time] = f"{src.time_col}: not a time"
    rating = np.full(len(df), np.nan)
    if src.rating_col:
        rating = pd.to_numeric(df[src.rating_col], errors="coerce").to_numpy(dtype=np.float64)
        reasons[~np.isfinite(rating)] = f"{src.rating_col}: not a number"
    reasons[df[src.item_col].isna().to_numpy()] = f"{src.item_col}: missing"
    reasons[df[src.user_col].isna().to_numpy()] = f"{src.user_col}: missing"
    rejected = _reject(df, reasons)
    keep = reasons == ""
    if not keep.any():
        raise ContractError(f"ingest: no usable row in {src.path}: e.g. {rejected.iloc[0].to_dict() if len(rejected) else {}}")

    # Ids are mapped over every id the two tables name, so the interactions and the item table agree.
    item_keys = df[src.item_col][keep]
    all_items = item_keys if items is None else pd.concat([item_keys, items[src.item_col].dropna()], ignore_index=True)
    all_ids, item_map = dense_ids(all_items)
    user_ids, user_map = dense_ids(df[src.user_col][keep])
    eng_items = all_ids[: keep.sum()]
    listed_ids = None if items is None else all_ids[keep.sum():]
    listed = None if items is None else items[items[src.item_col].notna()]

    r = pd.DataFrame({"user_id": user_ids, "item_id": eng_items, "timestamp": secs[keep]})
    if src.rating_col:
        x = rating[keep]
        r["action"] = np.where(x >= src.save_at, "save", np.where(x >= src.click_at, "click", "hide"))
    else:
        r["action"] = src.implicit_action
    r = place_events(cfg, r, "ix")
    table, names = item_table(src, np.unique(eng_items), listed, listed_ids)

    # Everything that can fail on the input has run: only now is the root claimed and written.
    claim_root(cfg, {"source": str(src.path), "kind": "interactions", "settings": src.model_dump(mode="json")})
    out_dir = cfg.root / "ingest"
    for name, m in (("user_ids", user_map), ("item_ids", item_map)):
        if m is not None:
            pq.write_table(pa.Table.from_pandas(m, preserve_index=False), out_dir / f"{name}.parquet")
        else:
            (out_dir / f"{name}.parquet").unlink(missing_ok=True)
    rejected_path = out_dir / "rejected_interactions.parquet"
    if len(rejected):
        pq.write_table(pa.Table.from_pandas(rejected, preserve_index=False), rejected_path)
    else:
        rejected_path.unlink(missing_ok=True)
    summary = write_raw(cfg, r, table, names, "ix")
    out = {"source": str(src.path), **summary, "rejected": int(len(rejected)),
           "rejected_file": str(rejected_path) if len(rejected) else None,
           "id_maps": [n for n, m in (("user_ids", user_map), ("item_ids", item_map)) if m is not None]}
    if not summary["follows"]:
        # The DAG's gate stops on a followed-topic join rate under build.join_rate_min: on a platform that logs
        # source interests, 0 is an outage; on this data set it is what there is.
        out["next"] = ("no followed topics (no item topics to simulate them from): CR does not apply; run the DAG "
                       "with MER_BUILD__JOIN_RATE_MIN=0 (README: data without explicit interests)")
    return out
