"""Tables -> tensors: the item catalog (features by row) and streamed training batches.

Row 0 of every catalog array is padding / unknown item (zero features, missing flag set),
so a history slot or an item id the snapshot does not know maps to 0 and never breaks a batch.
Histories are right-aligned: the last slot is the most recent engagement.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from mer.base.config import MerConfig
from mer.base.contract import NEGATIVE_ACTIONS
from mer.base.errors import ContractError
from mer.base.io import latest_partition, partition_dataset, read_partition

log = logging.getLogger(__name__)

# Order of the user-tower inputs everywhere (training, export, serving).
ITEM_INPUTS = ("pre", "missing", "cat", "creator", "topic", "ids")  # what the item tower reads per item
# mask: the slot holds a history item; engaged: and that item's action is not a negative one (with or without
# features: a tower that needs features checks `missing`, see item_tower.history_use); cond: condition topic index.
USER_INPUTS = ITEM_INPUTS + ("mask", "engaged", "cond")
MASK, ENGAGED, COND, MISSING = (USER_INPUTS.index(k) for k in ("mask", "engaged", "cond", "missing"))
TRAIN_COLUMNS = ["event_id", "user_id", "item_id", "event_ts", "hist_item_ids", "hist_ts", "hist_valid",
                 "hist_actions", "condition_id", "segment"]

_GOLDEN = np.uint64(11400714819323198485)  # Fibonacci hashing: spreads sequential ids over buckets


def hash_bucket(values: np.ndarray, buckets: int) -> np.ndarray:
    """Id -> 1..buckets (0 stays for null), stable across runs and machines."""
    v = np.asarray(values, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = (v * _GOLDEN) >> np.uint64(32)
    return (h % np.uint64(buckets)).astype(np.int64) + 1


@dataclass
class Catalog:
    """Item features by row (row = position in sorted item_ids + 1)."""

    item_ids: np.ndarray  # int64 sorted [N]
    pre: np.ndarray  # float32 [N+1, P]
    missing: np.ndarray  # float32 [N+1]: 1 = pretrained embedding missing/invalid
    cat: np.ndarray  # int64 [N+1]
    creator: np.ndarray  # int64 [N+1]
    topic: np.ndarray  # int64 [N+1]: primary (highest score) topic as vocab index + 1, 0 = none
    topic_offsets: np.ndarray  # CSR of each row's topic vocab indexes (+1) and scores
    topic_values: np.ndarray
    topic_scores: np.ndarray
    topic_vocab: np.ndarray  # int64 topic ids; vocab index i <-> topic id topic_vocab[i]
    tensors: dict = field(default_factory=dict)

    @property
    def ids(self) -> np.ndarray:
        """Item id by row (-1 for row 0): the item tower's id field, looked up in its own id vocabulary."""
        return np.concatenate([[-1], self.item_ids]).astype(np.int64)

    @property
    def n_rows(self) -> int:
        return len(self.item_ids) + 1

    @property
    def pre_dim(self) -> int:
        return self.pre.shape[1]

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Item ids -> catalog rows; unknown ids -> 0."""
        ids = np.asarray(item_ids, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, ids)
        pos = np.clip(pos, 0, max(len(self.item_ids) - 1, 0))
        hit = (self.item_ids[pos] == ids) if len(self.item_ids) else np.zeros(ids.shape, bool)
        return np.where(hit, pos + 1, 0)

    def topic_index(self, topic_ids: np.ndarray) -> np.ndarray:
        """Topic ids -> vocab index + 1; unknown / null (-1) -> 0."""
        ids = np.asarray(topic_ids, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.topic_vocab, ids), 0, max(len(self.topic_vocab) - 1, 0))
        hit = self.topic_vocab[pos] == ids if len(self.topic_vocab) else np.zeros(ids.shape, bool)
        return np.where(hit, pos + 1, 0)

    def topics_of(self, row: int) -> np.ndarray:
        return self.topic_values[self.topic_offsets[row]:self.topic_offsets[row + 1]]

    def feature_tensors(self) -> dict[str, torch.Tensor]:
        if not self.tensors:
            self.tensors = {
                "pre": torch.from_numpy(self.pre), "missing": torch.from_numpy(self.missing),
                "cat": torch.from_numpy(self.cat), "creator": torch.from_numpy(self.creator),
                "topic": torch.from_numpy(self.topic), "ids": torch.from_numpy(self.ids),
            }
        return self.tensors

    def item_inputs(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """ITEM_INPUTS for catalog rows of any shape."""
        t = self.feature_tensors()
        return tuple(t[k][rows] for k in ITEM_INPUTS)


def unit_rows(x: np.ndarray, ok: np.ndarray | None = None) -> np.ndarray:
    """Rows scaled to unit length; rows not ok (or of norm 0) are zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    ok = (norm > 0) if ok is None else (ok[:, None] & (norm > 0))
    return np.where(ok, x / np.where(norm > 0, norm, 1.0), 0.0).astype(np.float32)


def item_arrays(table: pa.Table, pre_dim: int | None, topic_vocab: np.ndarray, cat_buckets: int,
                creator_buckets: int) -> dict[str, np.ndarray]:
    """item_features rows -> feature arrays (no padding row). Shared by training and ItemEncoder."""
    n = table.num_rows
    emb = table.column("pretrained_embedding").combine_chunks()
    lens = pc.fill_null(pc.list_value_length(emb), 0).to_numpy(zero_copy_only=False)
    if pre_dim is None:
        pre_dim = int(np.bincount(lens[lens > 0]).argmax()) if (lens > 0).any() else 1
    ok = lens == pre_dim
    pre = np.zeros((n, pre_dim), dtype=np.float32)
    if ok.any():
        good = emb.filter(pa.array(ok))
        pre[ok] = np.asarray(good.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, pre_dim)
    finite = np.isfinite(pre).all(axis=1)
    # An all-zero vector is no embedding either (the build's hist_valid rule: finite, non-zero norm); it was fed
    # to the towers as a present one and counted as valid history.
    ok &= finite & (np.abs(pre).sum(axis=1) > 0)
    pre[~ok] = 0.0  # the paper's validity rule: a missing feature is zeroed and flagged, not guessed
    # Unit length, as the pretrained baselines and PinnerSage compare them (cosine): a data set whose embeddings
    # come unnormalised (norms of 10 or 1,000) then enters the towers at the scale their input layers were
    # initialised for, not one that saturates them. Ours are unit already (synthetic, MovieLens): no change there.
    pre = unit_rows(pre, ok)
    cat = table.column("category_id").to_numpy(zero_copy_only=False)
    creator = table.column("creator_id").to_numpy(zero_copy_only=False)
    cat_null = pd_isnull(cat)
    cr_null = pd_isnull(creator)
    cat_h = hash_bucket(np.where(cat_null, 0, cat).astype(np.int64), cat_buckets)
    cr_h = hash_bucket(np.where(cr_null, 0, creator).astype(np.int64), creator_buckets)
    cat_h[cat_null] = 0
    cr_h[cr_null] = 0

    tids = table.column("topic_ids").combine_chunks()
    tsc = table.column("topic_scores").combine_chunks()
    tlen = pc.fill_null(pc.list_value_length(tids), 0).to_numpy(zero_copy_only=False)
    slen = pc.fill_null(pc.list_value_length(tsc), 0).to_numpy(zero_copy_only=False)
    flat_t = tids.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    flat_s = tsc.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    # Scores that do not line up with topics count as uniform.
    if not np.array_equal(tlen, slen):
        flat_s = np.ones_like(flat_t, dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum(tlen)])
    pos = np.clip(np.searchsorted(topic_vocab, flat_t), 0, max(len(topic_vocab) - 1, 0))
    vidx = np.where(topic_vocab[pos] == flat_t, pos + 1, 0) if len(topic_vocab) else np.zeros_like(flat_t)
    primary = np.zeros(n, dtype=np.int64)
    has = tlen > 0
    if has.any():
        # argmax of scores inside each list
        seg = np.repeat(np.arange(n), tlen)
        order = np.lexsort((-flat_s, seg))
        first = order[offsets[:-1][has]]
        primary[has] = vidx[first]
    ids = table.column("item_id").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return {"pre": pre, "missing": (~ok).astype(np.float32), "cat": cat_h, "creator": cr_h, "topic": primary, "ids": ids,
            "topic_offsets": offsets, "topic_values": vidx, "topic_scores": flat_s, "pre_dim": pre_dim}


def pd_isnull(a: np.ndarray) -> np.ndarray:
    if a.dtype == object:
        return np.array([x is None for x in a], dtype=bool)
    if np.issubdtype(a.dtype, np.floating):
        return np.isnan(a)
    return np.zeros(a.shape, dtype=bool)


def build_catalog(table: pa.Table, topic_vocab: np.ndarray, cat_buckets: int, creator_buckets: int,
                  pre_dim: int | None = None) -> Catalog:
    table = table.sort_by("item_id")
    ids = table.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        _, first = np.unique(ids, return_index=True)
        table = table.take(pa.array(first))
        ids = ids[first]
    a = item_arrays(table, pre_dim, np.asarray(topic_vocab, dtype=np.int64), cat_buckets, creator_buckets)

    def pad(x, value=0):
        return np.concatenate([np.full((1,) + x.shape[1:], value, dtype=x.dtype), x])

    offsets = np.concatenate([[0], a["topic_offsets"]])  # row 0 has no topics
    return Catalog(item_ids=ids, pre=pad(a["pre"]), missing=pad(a["missing"], 1.0), cat=pad(a["cat"]),
                   creator=pad(a["creator"]), topic=pad(a["topic"]), topic_offsets=offsets,
                   topic_values=a["topic_values"], topic_scores=a["topic_scores"],
                   topic_vocab=np.asarray(topic_vocab, dtype=np.int64))


def load_topic_vocab(cfg: MerConfig, ds: str) -> np.ndarray:
    snap = latest_partition(cfg.raw_table("topics"), ds)
    t = read_partition(cfg.raw_table("topics"), snap, columns=["topic_id"])
    ids = t.column("topic_id").drop_null().to_numpy(zero_copy_only=False).astype(np.int64)
    return np.unique(ids)


def load_catalog(cfg: MerConfig, ds: str, topic_vocab: np.ndarray | None = None, pre_dim: int | None = None) -> Catalog:
    snap = latest_partition(cfg.raw_table("item_features"), ds)
    table = read_partition(cfg.raw_table("item_features"), snap)
    if topic_vocab is None:
        topic_vocab = load_topic_vocab(cfg, ds)
    return build_catalog(table, topic_vocab, cfg.train.cat_buckets, cfg.train.creator_buckets, pre_dim)


# ---------------------------------------------------------------- history batches
def flag_lists(col: pa.Array | pa.ChunkedArray, values) -> pa.ListArray:
    """A list<string> column -> list<bool> of the same shape: entry is one of ``values`` (null lists: empty)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    col = pc.fill_null(col, pa.scalar([], col.type)) if col.null_count else col
    lens = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int32)
    flags = pc.fill_null(pc.is_in(col.flatten(), value_set=pa.array(list(values), col.type.value_type)), False)
    return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)), flags)


def pad_lists(col: pa.Array, length: int, dtype, fill=0) -> tuple[np.ndarray, np.ndarray]:
    """A list column -> right-aligned [n, length] array keeping the last `length` values + a mask."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(col)
    lens = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    col = pc.fill_null(col, pa.scalar([], col.type)) if col.null_count else col
    values = col.flatten()
    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.int64())
    flat = values.to_numpy(zero_copy_only=False)
    if flat.dtype == object:  # bool lists with nulls
        flat = np.array([bool(x) for x in flat])
    offsets = np.concatenate([[0], np.cumsum(lens)])
    out = np.full((n, length), fill, dtype=dtype)
    mask = np.zeros((n, length), dtype=bool)
    if len(flat):
        row = np.repeat(np.arange(n), lens)
        within = np.arange(len(flat)) - offsets[:-1][row]
        keep = within >= lens[row] - length
        colpos = length - (lens[row] - within)
        out[row[keep], colpos[keep]] = flat[keep]
        mask[row[keep], colpos[keep]] = True
    return out, mask


@dataclass
class Batch:
    inputs: tuple[torch.Tensor, ...]  # USER_INPUTS order
    target_rows: torch.Tensor  # catalog rows of the positive item
    user_ids: np.ndarray
    item_ids: np.ndarray
    segments: np.ndarray
    condition_ids: np.ndarray  # -1 = none
    hist_ts: np.ndarray  # int64 microseconds, right-aligned
    event_ts: np.ndarray
    hist_rows: np.ndarray | None = None  # [B, L] catalog rows of the history slots (0 = empty / unknown)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def cond(self) -> torch.Tensor:
        return self.inputs[COND]

    @property
    def use(self) -> np.ndarray:
        """[B, L] the paper's valid history slots: engaged (not a negative action) and with features (PinnerSage)."""
        return (self.inputs[MASK] & self.inputs[ENGAGED] & (self.inputs[MISSING] == 0)).numpy()

    @property
    def engaged(self) -> np.ndarray:
        """[B, L] engaged history slots, features or not (item-kNN and ALS need none)."""
        return (self.inputs[MASK] & self.inputs[ENGAGED]).numpy()

    def novel(self) -> np.ndarray:
        """[B] bool: the target is not among the user's own history items (a new item, not a repeat)."""
        rows = self.target_rows.numpy()
        return ~((self.hist_rows == rows[:, None]) & (self.hist_rows > 0)).any(1)

    def take(self, keep: np.ndarray) -> "Batch":
        sel = torch.from_numpy(np.asarray(keep))
        return Batch(inputs=tuple(x[sel] for x in self.inputs), target_rows=self.target_rows[sel],
                     user_ids=self.user_ids[keep], item_ids=self.item_ids[keep], segments=self.segments[keep],
                     condition_ids=self.condition_ids[keep], hist_ts=self.hist_ts[keep], event_ts=self.event_ts[keep],
                     hist_rows=None if self.hist_rows is None else self.hist_rows[keep])


def make_batch(table: pa.Table, catalog: Catalog, history_len: int, cond_topic_ids: np.ndarray | None = None) -> Batch:
    """Rows of training_examples -> user-tower inputs. cond_topic_ids overrides condition_id (CR item variant)."""
    hist_ids, mask = pad_lists(table.column("hist_item_ids"), history_len, np.int64)
    valid, _ = pad_lists(table.column("hist_valid"), history_len, bool, False)
    hist_ts, _ = pad_lists(table.column("hist_ts"), history_len, np.int64)
    rows = np.where(mask, catalog.rows(hist_ids), 0)
    item_ids = table.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    if cond_topic_ids is None:
        cond_topic_ids = table.column("condition_id").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    rows_t = torch.from_numpy(rows)
    cond = torch.from_numpy(catalog.topic_index(cond_topic_ids))
    if "hist_actions" in table.column_names:
        # Every engaged item but the negative ones, with or without features (hist_valid also drops items without
        # a pretrained embedding; the towers and baselines that need one check `missing` themselves).
        negative, _ = pad_lists(flag_lists(table.column("hist_actions"), NEGATIVE_ACTIONS), history_len, bool, False)
        engaged = mask & ~negative
    else:  # rows without hist_actions: hist_valid (features and not negative) is all that is known
        engaged = valid & mask & (catalog.missing[rows] == 0)
    inputs = catalog.item_inputs(rows_t) + (torch.from_numpy(mask), torch.from_numpy(engaged), cond)
    ev = table.column("event_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
    return Batch(inputs=inputs, target_rows=torch.from_numpy(catalog.rows(item_ids)), user_ids=table.column(
        "user_id").to_numpy(zero_copy_only=False).astype(np.int64), item_ids=item_ids,
        segments=np.asarray(table.column("segment").to_pylist(), dtype=object), condition_ids=cond_topic_ids,
        hist_ts=hist_ts, event_ts=ev, hist_rows=rows)


def sample_item_conditions(table: pa.Table, catalog: Catalog, rng: np.random.Generator) -> np.ndarray:
    """CR item variant (Lin et al.): a condition drawn from the target's topics, weighted by topic_scores."""
    rows = catalog.rows(table.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64))
    out = np.full(len(rows), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        lo, hi = catalog.topic_offsets[r], catalog.topic_offsets[r + 1]
        if hi <= lo:
            continue
        idx = catalog.topic_values[lo:hi]
        w = np.clip(catalog.topic_scores[lo:hi].astype(np.float64), 1e-6, None) * (idx > 0)
        if w.sum() <= 0:
            continue
        out[i] = catalog.topic_vocab[idx[rng.choice(len(idx), p=w / w.sum())] - 1]
    return out


def examples_dataset(cfg: MerConfig, ds: str) -> pads.Dataset:
    ds_ = partition_dataset(cfg.table("training_examples"), ds)
    missing = [c for c in TRAIN_COLUMNS if c not in ds_.schema.names]
    if missing:
        raise ContractError(f"table training_examples: missing column(s) {missing} in ds={ds}")
    return ds_


def has_logged_conditions(cfg: MerConfig, ds: str) -> bool:
    """Any train or validation row of training_examples ds with a condition_id (a logged explicit interest); the
    eval day is not read."""
    ds_ = examples_dataset(cfg, ds)
    return ds_.count_rows(filter=(pc.field("split") != "eval") & pc.field("condition_id").is_valid()) > 0


def stream_tables(cfg: MerConfig, ds: str, split: str, *, conditioned_only: bool = False,
                  batch_rows: int = 8192) -> Iterator[pa.Table]:
    """Record batches of one split, read lazily (never the whole table in memory)."""
    flt = pc.field("split") == split
    if conditioned_only:
        flt = flt & pc.field("condition_id").is_valid()
    scanner = examples_dataset(cfg, ds).scanner(columns=TRAIN_COLUMNS, filter=flt, batch_size=batch_rows)
    for rb in scanner.to_batches():
        if rb.num_rows:
            yield pa.Table.from_batches([rb])


def shuffled_tables(tables: Iterator[pa.Table], buffer_rows: int, batch_size: int,
                    rng: np.random.Generator) -> Iterator[pa.Table]:
    """Deterministic shuffling buffer: fill to buffer_rows, permute with the seeded rng, emit minibatches."""
    buf: list[pa.Table] = []
    size = 0

    def drain(final: bool):
        nonlocal buf, size
        t = pa.concat_tables(buf)
        perm = rng.permutation(t.num_rows)
        t = t.take(pa.array(perm))
        cut = t.num_rows if final else (t.num_rows // batch_size) * batch_size
        for s in range(0, cut, batch_size):
            yield t.slice(s, min(batch_size, cut - s))
        rest = t.slice(cut)
        buf, size = ([rest], rest.num_rows) if rest.num_rows else ([], 0)

    for t in tables:
        buf.append(t)
        size += t.num_rows
        if size >= buffer_rows:
            yield from drain(False)
    if size:
        yield from drain(True)


def read_eval(cfg: MerConfig, ds: str, limit: int | None, seed: int, conditioned_only: bool = False,
              split: str = "eval", part: Literal["stop", "select"] | None = None) -> pa.Table:
    """The eval split, or the val split for early stopping / tuning / bless (capped by a seeded sample so
    metrics stay cheap and reproducible). ``part`` (val split only): the records of one part of the validation
    day's users, see `validation_part`; the sample is drawn within it."""
    parts = list(stream_tables(cfg, ds, split, conditioned_only=conditioned_only))
    if not parts:
        return examples_dataset(cfg, ds).schema.empty_table().select(TRAIN_COLUMNS)
    t = pa.concat_tables(parts)
    t = t.sort_by([("event_id", "ascending")])
    if part is not None and split == "val":
        t = validation_part(t, part, cfg.train.early_stop_user_share)
    if limit is not None and t.num_rows > limit:
        idx = np.sort(np.random.default_rng(seed).choice(t.num_rows, limit, replace=False))
        t = t.take(pa.array(idx))
    return t


def stop_users(user_ids: np.ndarray, share: float) -> np.ndarray:
    """[n] bool: whether each user is in the early-stopping part of the validation day. A fixed hash of the id
    (Fibonacci hashing: the id times 2^64 / golden ratio, top 53 bits as a fraction in [0, 1)), so a user's part
    depends on nothing else (not on the day's other users, the seed or the model) and consecutive ids spread."""
    u = np.asarray(user_ids).astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        h = u * np.uint64(0x9E3779B97F4A7C15)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53) < share


def validation_part(table: pa.Table, part: Literal["stop", "select"], share: float) -> pa.Table:
    """The validation-day records of one part of its users: "stop" (early stopping and the budget extension
    read it, ``share`` of the users) or "select" (the rest: tune trials, the bless gate, the strongest baseline).

    A tower's validation score is its best period's, chosen on the records early stopping read, so it is
    optimistic there, more for a run with more periods; scored on users that early stopping never read, towers,
    trials and baselines compete on equal terms. A day whose users all fall in one part cannot be split: both
    parts are then every record (a tiny validation day), and a warning says so.
    """
    if part not in ("stop", "select"):
        raise ValueError(f"validation part {part!r}: expected 'stop' or 'select'")
    stop = stop_users(table.column("user_id").to_numpy(zero_copy_only=False), share)
    if stop.all() or not stop.any():
        log.warning("validation day: its %d users all fall in one part (train.early_stop_user_share=%s); early "
                    "stopping and selection both read every validation record", len(np.unique(
                        table.column("user_id").to_numpy(zero_copy_only=False))), share)
        return table
    return table.filter(pa.array(stop if part == "stop" else ~stop))


def item_probabilities(cfg: MerConfig, ds: str, catalog: Catalog) -> np.ndarray | None:
    """prob by catalog row from item_frequency; None when the table is absent (the streaming estimator takes over)."""
    path = cfg.table("item_frequency") / f"ds={ds}"
    if not path.is_dir():
        return None
    t = read_partition(cfg.table("item_frequency"), ds, columns=["item_id", "prob"])
    prob = np.zeros(catalog.n_rows, dtype=np.float64)
    rows = catalog.rows(t.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64))
    p = t.column("prob").fill_null(0.0).to_numpy(zero_copy_only=False)
    prob[rows] = p
    prob[0] = 0.0
    return prob


def factor_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """item_factors rows -> (item ids [n] int64, factors [n, width] float32; width 0 when there are none).

    The one reader of the table's list column: the id-embedding start (train.py) and the als baseline
    (baselines.py) both take their arrays from here."""
    ids = table.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    if not len(ids):
        return ids, np.zeros((0, 0), np.float32)
    return ids, np.stack(table.column("factors").to_numpy(zero_copy_only=False)).astype(np.float32)


def corpus_rows(cfg: MerConfig, ds: str, catalog: Catalog) -> np.ndarray:
    t = read_partition(cfg.table("eval_corpus"), ds, columns=["item_id", "rank"]).sort_by("rank")
    rows = catalog.rows(t.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64))
    rows = rows[rows > 0]
    if len(rows) == 0:
        raise ContractError(f"table eval_corpus: no item of ds={ds} is in item_features")
    return rows
