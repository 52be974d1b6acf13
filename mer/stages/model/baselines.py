"""Non-neural retrieval baselines and the one ranking rule every baseline is scored with.

Scores and ranks
    A baseline scores catalog rows ``cols`` (sorted, distinct) for a slice of eval records:
    ``baseline.score(records, cols) -> float64 [len(records), len(cols)]``; ``-inf`` = not retrievable
    (NaN counts as -inf). ``bind(baseline, records)`` gives the ``score_fn(slice, cols)`` that
    ``ranks_from_scores`` and ``top_lists`` call once per chunk of records. Both rank corpus items in
    one total order: score desc, then ``tiebreak`` desc (train popularity), then lower catalog row.
    A positive whose kNN score is 0 is placed behind every zero-score item that wins the tie-break (the
    towers' rule, metrics.positive_ranks, also counts ties against the positive).

Records (rows align with the eval records; a baseline reads only what it needs)
    hist_rows [B, L] int64  catalog rows of the history slots, 0 = empty / unknown item
    use       [B, L] bool   slots that count (engaged: present, not a negative action); default hist_rows > 0
    cond      [B] int64     condition topic as vocab index + 1, 0 = none          (inverted)
    followed  B int arrays  each record's followed topics as vocab index + 1     (inverted)
    A record's history is the *set* of distinct catalog rows > 0 in its used slots.

Baselines (folder name under ``run_dir(ds)/models/``: score of candidate c)
    popularity       train-split positives of c (item_frequency.count)
    itemknn-sum      sum_{h in history} S[h, c]    S = item_neighbors by catalog row (cosine co-engagement,
    itemknn-max      max_{h in history} S[h, c]    top-M per row; 0 where c is not among h's neighbours)
    pretrained-mean  cos(mean_h u_h, c)            u = unit pretrained embedding, 0 when missing; items
    pretrained-max   max_h cos(u_h, u_c)           without one are left out of the history; no history: 0
    als              cos(mean_h v_h, v_c)          v = unit implicit-ALS item factor (item_factors, Spark MLlib,
                                                   train split), 0 for an item without one: pretrained-mean's
                                                   rule in the collaborative space (iALS with the history folded in)
    inverted         the paper's explicit-interest control (Table 3): a followed topic serves that topic's
                     most engaged items. Each topic's list = its items by train count desc (ties: lower row),
                     position 1 = first. Condition mode: count(c) if c has the record's topic, else -inf.
                     Followed mode (round-robin merge of the followed topics' lists): -(best position of c
                     in any followed topic's list), -inf when c has none of them (no topic: all -inf).

Artifacts
    ``fit_baseline(cfg, ds, model, variant)`` writes ``run_dir(ds)/models/<name>/config.json`` (kind
    "baseline") and what a reader serves, as Parquet: popularity.parquet (item_id, count, rank),
    neighbors.parquet (the item_neighbors partition), topic_items.parquet (topic_id, item_id, count, rank),
    factors.parquet (the item_factors partition);
    pretrained needs only item_features. Everything is fitted on the train split (item_frequency and
    item_neighbors are). ``load_baseline(folder, catalog)`` returns the scorer object (``Popularity``,
    ``ItemKNN``, ``Pretrained`` or ``InvertedIndex``) with ``.name`` and ``.config`` set.
"""
from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import sparse

from mer.base.config import MerConfig
from mer.base.errors import ContractError, validate_ds
from mer.base.io import read_partition, swap_in
from mer.stages.model.data import Catalog, factor_arrays, unit_rows
from mer.stages.model.metrics import corpus_columns

ScoreFn = Callable[[slice, np.ndarray], np.ndarray]

# (model, variant) -> folder name
NAMES = {
    ("popularity", None): "popularity",
    ("itemknn", "sum"): "itemknn-sum",
    ("itemknn", "max"): "itemknn-max",
    ("pretrained", "mean"): "pretrained-mean",
    ("pretrained", "max"): "pretrained-max",
    ("inverted", None): "inverted",
    ("als", None): "als",
}
PAIR_BLOCK = 512  # history items scored against all columns at once (pretrained-max): 512 x cols floats


def baseline_name(model: str, variant: str | None = None) -> str:
    try:
        return NAMES[(model, variant)]
    except KeyError:
        known = ", ".join(f"{m}/{v}" if v else m for m, v in NAMES)
        raise ValueError(f"unknown baseline {model!r} variant {variant!r}; known: {known}") from None


# ---------------------------------------------------------------- records and the ranking rule
@dataclass
class Records:
    """Per-record inputs of the baselines (see the module doc)."""

    hist_rows: np.ndarray | None = None
    use: np.ndarray | None = None
    cond: np.ndarray | None = None
    followed: Sequence[np.ndarray] | None = None
    n: int | None = None  # record count when no array is given (popularity)

    def __len__(self) -> int:
        for x in (self.hist_rows, self.cond, self.followed):
            if x is not None:
                return len(x)
        if self.n is None:
            raise ValueError("Records: give hist_rows, cond, followed or n")
        return self.n

    def __getitem__(self, sl: slice) -> Records:
        start, stop, _ = sl.indices(len(self))
        return Records(
            hist_rows=None if self.hist_rows is None else self.hist_rows[sl],
            use=None if self.use is None else self.use[sl],
            cond=None if self.cond is None else self.cond[sl],
            followed=None if self.followed is None else self.followed[sl],
            n=stop - start,
        )

    @classmethod
    def from_batch(cls, batch, followed: Sequence[np.ndarray] | None = None) -> Records:
        """A mer.stages.model.data Batch (with hist_rows) -> Records: use = the engaged slots (not a negative
        action; an item without features counts: item-kNN and ALS need none, the pretrained rules skip it
        themselves), cond = the batch's condition."""
        return cls(hist_rows=np.asarray(batch.hist_rows), use=batch.engaged, cond=batch.cond.numpy().astype(np.int64),
                   followed=followed)


def bind(baseline, records: Records) -> ScoreFn:
    """``score_fn(slice, cols)`` for ``ranks_from_scores`` / ``top_lists``."""
    return lambda sl, cols: baseline.score(records[sl], cols)


def _clean(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    return np.where(np.isnan(s), -np.inf, s)


def ranks_from_scores(score_fn: ScoreFn, n_records: int, pos_rows: np.ndarray, corpus: np.ndarray,
                      tiebreak: np.ndarray, chunk: int = 512) -> np.ndarray:
    """[n_records] int64 rank of each record's positive among the corpus, 0 = best.

    rank = corpus items (the positive itself excluded) that come first in the total order: a strictly
    greater score, or an equal score and a greater tiebreak, or both equal and a lower catalog row.
    ``tiebreak`` is indexed by catalog row. The positive need not be in the corpus.
    """
    pos_rows = np.asarray(pos_rows, dtype=np.int64)
    corpus = np.unique(np.asarray(corpus, dtype=np.int64))
    tiebreak = np.asarray(tiebreak, dtype=np.float64)
    out = np.zeros(n_records, dtype=np.int64)
    for start in range(0, n_records, chunk):
        stop = min(start + chunk, n_records)
        pos = pos_rows[start:stop]
        cols = np.union1d(corpus, pos)
        s = _clean(score_fn(slice(start, stop), cols))
        sp = s[np.arange(len(pos)), np.searchsorted(cols, pos)][:, None]
        tc, tp = tiebreak[cols][None, :], tiebreak[pos][:, None]
        first = (s > sp) | ((s == sp) & ((tc > tp) | ((tc == tp) & (cols[None, :] < pos[:, None]))))
        first &= np.isin(cols, corpus)[None, :]
        out[start:stop] = first.sum(axis=1)
    return out


def top_lists(score_fn: ScoreFn, n_records: int, corpus: np.ndarray, tiebreak: np.ndarray, budget: int,
              chunk: int = 512) -> np.ndarray:
    """[n_records, min(budget, corpus)] catalog rows: per record, the first ``budget`` corpus rows in the ranking's
    total order (what a reader serves); rows scored -inf are never served, so a list can be shorter (-1 pads)."""
    cols = np.unique(np.asarray(corpus, dtype=np.int64))
    tiebreak = np.asarray(tiebreak, dtype=np.float64)
    order = np.lexsort((cols, -tiebreak[cols]))  # tiebreak desc, then lower row: position in `base` breaks ties
    base = cols[order]
    n = min(budget, len(base))
    out = np.full((n_records, n), -1, dtype=np.int64)
    if n == 0:
        return out
    for start in range(0, n_records, chunk):
        stop = min(start + chunk, n_records)
        s = _clean(score_fn(slice(start, stop), cols))[:, order]
        # The first n in (score desc, position) order without sorting every column: all above the n-th largest
        # score, then that score's ties by position; only those n are sorted (stable: ties keep their position).
        kth = -np.partition(-s, n - 1, axis=1)[:, n - 1:n]
        above, tie = s > kth, s == kth
        keep = above | (tie & (np.cumsum(tie, axis=1) <= n - above.sum(1, keepdims=True)))
        idx = np.nonzero(keep)[1].reshape(stop - start, n)  # each row keeps exactly n, by position
        sel = np.take_along_axis(s, idx, axis=1)
        idx = np.take_along_axis(idx, np.argsort(-sel, axis=1, kind="stable"), axis=1)
        out[start:stop] = np.where(np.take_along_axis(s, idx, axis=1) > -np.inf, base[idx], -1)
    return out


# ---------------------------------------------------------------- shared vectorised helpers
def history_pairs(hist_rows: np.ndarray, use: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (record, catalog row > 0) pairs of the used history slots, sorted by record then row."""
    h = np.asarray(hist_rows, dtype=np.int64)
    if use is not None:
        h = np.where(np.asarray(use, dtype=bool), h, 0)
    rec, slot = np.nonzero(h > 0)
    if len(rec) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = h[rec, slot]
    m = int(rows.max()) + 1
    key = np.unique(rec.astype(np.int64) * m + rows)
    return key // m, key % m


def _gather(indptr: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entries of compressed rows (CSR) / columns (CSC) ``which``: (index into ``which``, entry position)."""
    which = np.asarray(which, dtype=np.int64)
    starts = indptr[which].astype(np.int64)
    lens = indptr[which + 1].astype(np.int64) - starts
    owner = np.repeat(np.arange(len(which)), lens)
    pos = np.arange(int(lens.sum())) + np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return owner, pos


# ---------------------------------------------------------------- baselines
class Popularity:
    """score = train-split positives of the item, the same list for everyone."""

    def __init__(self, counts: np.ndarray):
        self.counts = np.asarray(counts, dtype=np.float64)  # by catalog row

    def score(self, rec: Records, cols: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts[cols], (len(rec), len(cols)))


class ItemKNN:
    """Item-kNN over ``item_neighbors``: sum or max of S[h, c] over the record's history items h."""

    def __init__(self, sim: sparse.csr_matrix, variant: str = "sum"):
        if variant not in ("sum", "max"):
            raise ValueError(f"itemknn variant must be sum or max, not {variant!r}")
        self.sim = sparse.csr_matrix(sim)
        self.variant = variant

    def score(self, rec: Records, cols: np.ndarray) -> np.ndarray:
        b, c = len(rec), len(cols)
        r, h = history_pairs(rec.hist_rows, rec.use)
        owner, e = _gather(self.sim.indptr, h)  # every neighbour entry of every history item
        j = corpus_columns(self.sim.indices[e], cols)
        keep = j >= 0
        flat = r[owner[keep]] * c + j[keep]
        v = self.sim.data[e[keep]].astype(np.float64)
        if self.variant == "sum":
            return np.bincount(flat, weights=v, minlength=b * c).reshape(b, c)
        out = np.zeros(b * c)  # scores are >= 0 and a non-neighbour scores 0
        np.maximum.at(out, flat, v)
        return out.reshape(b, c)


def neighbor_matrix(table: pa.Table, catalog: Catalog) -> sparse.csr_matrix:
    """item_neighbors rows -> S [n_rows, n_rows] by catalog row (items the catalog lacks are dropped)."""
    i = catalog.rows(table.column("item_id").to_numpy(zero_copy_only=False))
    j = catalog.rows(table.column("neighbor_id").to_numpy(zero_copy_only=False))
    v = table.column("score").fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64)
    keep = (i > 0) & (j > 0) & (i != j)
    n = catalog.n_rows
    return sparse.csr_matrix((v[keep], (i[keep], j[keep])), shape=(n, n))


def factor_space(table: pa.Table, catalog: Catalog) -> np.ndarray:
    """item_factors rows -> unit factors by catalog row (items the catalog lacks are dropped; no factor: 0)."""
    ids, factors = factor_arrays(table)
    space = np.zeros((catalog.n_rows, factors.shape[1]), np.float32)
    rows = catalog.rows(ids)
    keep = rows > 0
    space[rows[keep]] = factors[keep]
    return unit_rows(space)


class Pretrained:
    """Pooling in an item space (default: the pretrained embeddings; `als`: the ALS factors): cosine to the
    history's mean, or max cosine to any item."""

    def __init__(self, catalog: Catalog, variant: str = "mean", space: np.ndarray | None = None):
        if variant not in ("mean", "max"):
            raise ValueError(f"pretrained variant must be mean or max, not {variant!r}")
        # catalog.pre is unit already, missing rows zero (data.item_arrays builds every catalog that way)
        self.space = catalog.pre if space is None else space
        self.has = np.abs(self.space).sum(axis=1) > 0
        self.variant = variant

    def score(self, rec: Records, cols: np.ndarray) -> np.ndarray:
        b, c = len(rec), len(cols)
        r, h = history_pairs(rec.hist_rows, rec.use)
        keep = self.has[h]
        r, h = r[keep], h[keep]
        if self.variant == "mean":
            cand = self.space[cols].astype(np.float64)  # [c, d]
            m = np.zeros((b, self.space.shape[1]))
            np.add.at(m, r, self.space[h].astype(np.float64))  # sum of the history's unit vectors
            norm = np.linalg.norm(m, axis=1, keepdims=True)
            m = np.where(norm > 0, m / np.where(norm > 0, norm, 1.0), 0.0)
            return m @ cand.T
        out = np.zeros((b, c))
        cand32 = self.space[cols]
        # Blocks of whole records (pairs are sorted by record) so one matmul is about PAIR_BLOCK x c.
        bounds = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]) if len(r) else np.zeros(0, np.int64)
        lo = 0
        while lo < len(bounds):
            hi = lo + 1
            while hi < len(bounds) and bounds[hi] - bounds[lo] < PAIR_BLOCK:
                hi += 1
            p0, p1 = bounds[lo], (bounds[hi] if hi < len(bounds) else len(r))
            sims = self.space[h[p0:p1]] @ cand32.T  # [pairs, c], float32: the max is a pure comparison
            # One max per record over its rows: np.maximum.reduceat(sims, starts, axis=0) gives the same and was
            # 6x slower here (MovieLens: 10 s of pretrained-max's 16 s in evaluation).
            ends = np.r_[bounds[lo + 1:hi], p1] - p0
            for a, z, rec in zip(bounds[lo:hi] - p0, ends, r[bounds[lo:hi]]):
                out[rec] = sims[a:z].max(0)
            lo = hi
        return out


class InvertedIndex:
    """Topic -> its items by train count (the followed-topic retriever without a model).

    ``position`` is a CSR matrix [n_rows, n_topics + 1] (column = vocab index + 1) holding each item's
    1-based position in that topic's list; ``count`` the train count by row.
    """

    def __init__(self, n_rows: int, n_topics: int, topic: np.ndarray, row: np.ndarray, position: np.ndarray,
                 count: np.ndarray):
        topic, row = np.asarray(topic, np.int64), np.asarray(row, np.int64)
        self.n_topics = int(n_topics)
        self.position = sparse.csr_matrix((np.asarray(position, np.float64), (row, topic)),
                                          shape=(n_rows, self.n_topics + 1))
        self.count = np.asarray(count, dtype=np.float64)  # by catalog row

    @classmethod
    def from_catalog(cls, catalog: Catalog, counts: np.ndarray) -> InvertedIndex:
        """Every catalog item in every topic of its topic_ids; within a topic: count desc, then lower row."""
        counts = np.asarray(counts, dtype=np.float64)
        per_row = np.diff(catalog.topic_offsets)
        rows = np.repeat(np.arange(catalog.n_rows), per_row)
        topics = np.asarray(catalog.topic_values, dtype=np.int64)
        keep = topics > 0  # topics outside the vocabulary map to 0
        n_t = len(catalog.topic_vocab)
        key = np.unique(topics[keep] * catalog.n_rows + rows[keep])  # an item listed twice under a topic: once
        topics, rows = key // catalog.n_rows, key % catalog.n_rows
        order = np.lexsort((rows, -counts[rows], topics))
        topics, rows = topics[order], rows[order]
        first = np.searchsorted(topics, topics)  # start of each topic's run
        position = np.arange(len(rows)) - first + 1
        return cls(catalog.n_rows, n_t, topics, rows, position, counts)

    @classmethod
    def from_table(cls, table: pa.Table, catalog: Catalog) -> InvertedIndex:
        """topic_items rows (topic_id, item_id, count, rank) -> the index over this catalog's rows."""
        t = catalog.topic_index(table.column("topic_id").to_numpy(zero_copy_only=False))
        r = catalog.rows(table.column("item_id").to_numpy(zero_copy_only=False))
        cnt = table.column("count").to_numpy(zero_copy_only=False).astype(np.float64)
        rank = table.column("rank").to_numpy(zero_copy_only=False)
        keep = (t > 0) & (r > 0)
        counts = np.zeros(catalog.n_rows)
        counts[r[keep]] = cnt[keep]
        return cls(catalog.n_rows, len(catalog.topic_vocab), t[keep], r[keep], rank[keep], counts)

    def to_table(self, catalog: Catalog) -> pa.Table:
        """The served lists: (topic_id, item_id, count, rank), by topic then rank."""
        coo = self.position.tocoo()
        order = np.lexsort((coo.data, coo.col))
        rows, topics, rank = coo.row[order], coo.col[order], coo.data[order].astype(np.int64)
        return pa.table({
            "topic_id": pa.array(catalog.topic_vocab[topics - 1], pa.int64()),
            "item_id": pa.array(catalog.item_ids[rows - 1], pa.int64()),
            "count": pa.array(self.count[rows].astype(np.int64), pa.int64()),
            "rank": pa.array(rank, pa.int64()),
        })

    def score_condition(self, cond: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """count(c) where c has the record's condition topic (vocab index + 1), else -inf."""
        cond = np.asarray(cond, dtype=np.int64)
        b, c = len(cond), len(cols)
        out = np.full(b * c, -np.inf)
        sub = self.position[cols].tocsc()  # rows = positions in cols
        recs = np.flatnonzero((cond > 0) & (cond <= self.n_topics))
        owner, e = _gather(sub.indptr, cond[recs])
        j = sub.indices[e].astype(np.int64)
        out[recs[owner] * c + j] = self.count[cols[j]]
        return out.reshape(b, c)

    def score_followed(self, followed: Sequence[np.ndarray], cols: np.ndarray) -> np.ndarray:
        """Round-robin merge of the followed topics' lists: -(best position of c), -inf in none of them."""
        b, c = len(followed), len(cols)
        lens = np.array([len(f) for f in followed], dtype=np.int64)
        topics = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(f, dtype=np.int64) for f in followed])
        recs = np.repeat(np.arange(b), lens)
        ok = (topics > 0) & (topics <= self.n_topics)
        recs, topics = recs[ok], topics[ok]
        sub = self.position[cols].tocsc()
        owner, e = _gather(sub.indptr, topics)
        best = np.full(b * c, np.inf)
        np.minimum.at(best, recs[owner] * c + sub.indices[e].astype(np.int64), sub.data[e])
        return -best.reshape(b, c)

    def score(self, rec: Records, cols: np.ndarray) -> np.ndarray:
        """Followed mode when the records carry followed topics, else condition mode."""
        if rec.followed is not None:
            return self.score_followed(rec.followed, cols)
        if rec.cond is None:
            raise ValueError("inverted: records need cond or followed topics")
        return self.score_condition(rec.cond, cols)


# ---------------------------------------------------------------- tables -> arrays
def train_counts(cfg: MerConfig, ds: str, catalog: Catalog) -> np.ndarray:
    """Train-split positives by catalog row (item_frequency.count): popularity and the ranking tie-break."""
    t = read_partition(cfg.table("item_frequency"), ds, columns=["item_id", "count"])
    return counts_by_row(t, catalog)


def counts_by_row(table: pa.Table, catalog: Catalog) -> np.ndarray:
    counts = np.zeros(catalog.n_rows, dtype=np.float64)
    rows = catalog.rows(table.column("item_id").to_numpy(zero_copy_only=False))
    np.add.at(counts, rows, table.column("count").fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64))
    counts[0] = 0.0
    return counts


def popularity_table(freq: pa.Table) -> pa.Table:
    """item_frequency rows -> (item_id, count, rank): rank 1 = most positives, ties: lower item_id."""
    t = freq.select(["item_id", "count"]).sort_by([("count", "descending"), ("item_id", "ascending")])
    return t.append_column("rank", pa.array(np.arange(1, t.num_rows + 1), pa.int64()))


# ---------------------------------------------------------------- artifacts
def _write_folder(final: Path, conf: dict, files: dict[str, pa.Table]) -> None:
    """Config + artifacts into a temporary sibling folder, swapped in with one rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, table in files.items():
            pq.write_table(table, tmp / name, compression="zstd")
        (tmp / "config.json").write_text(json.dumps(conf, indent=2))
        swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fit_baseline(cfg: MerConfig, ds: str, model: str, variant: str | None = None) -> dict:
    """Write ``run_dir(ds)/models/<name>/`` for one baseline (see the module doc); returns its config."""
    from mer.stages.model.data import load_catalog

    validate_ds(ds)
    name = baseline_name(model, variant)
    folder = cfg.model_dir(ds, name)
    conf = {"model": model, "variant": variant, "name": name, "ds": ds, "model_version": f"{name}-{ds}",
            "kind": "baseline", "fitted_on": "train split"}
    files: dict[str, pa.Table] = {}
    if model == "popularity":
        files["popularity.parquet"] = popularity_table(
            read_partition(cfg.table("item_frequency"), ds, columns=["item_id", "count"]))
        conf["items"] = files["popularity.parquet"].num_rows
    elif model == "itemknn":
        from mer.base.contract import ITEM_NEIGHBORS

        t = read_partition(cfg.table("item_neighbors"), ds, columns=ITEM_NEIGHBORS.names)
        files["neighbors.parquet"] = t.cast(ITEM_NEIGHBORS)
        conf.update(rows=t.num_rows, top_m=cfg.build.neighbors_top_m,
                    max_items_per_user=cfg.build.neighbors_max_items_per_user)
    elif model == "pretrained":
        conf["space"] = "pretrained_embedding"
    elif model == "als":
        from mer.base.contract import ITEM_FACTORS

        t = read_partition(cfg.table("item_factors"), ds, columns=ITEM_FACTORS.names)
        files["factors.parquet"] = t.cast(ITEM_FACTORS)
        conf.update(rows=t.num_rows, rank=cfg.build.als_rank, reg=cfg.build.als_reg, alpha=cfg.build.als_alpha)
    else:  # inverted
        catalog = load_catalog(cfg, ds)
        index = InvertedIndex.from_catalog(catalog, train_counts(cfg, ds, catalog))
        files["topic_items.parquet"] = index.to_table(catalog)
        conf["rows"] = files["topic_items.parquet"].num_rows
    _write_folder(folder, conf, files)
    return {"dir": str(folder), "trained": False, **conf}


def load_baseline(folder: Path, catalog: Catalog):
    """A fitted baseline folder -> its scorer (``.score(records, cols)``), with ``.name`` and ``.config``."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise ContractError(f"baseline {folder.name}: {path} is missing (run fit_baseline first)")
    conf = json.loads(path.read_text())
    model, variant = conf.get("model"), conf.get("variant")
    baseline_name(model, variant)  # unknown -> ValueError naming the known ones
    if model == "popularity":
        obj = Popularity(counts_by_row(pq.read_table(folder / "popularity.parquet"), catalog))
    elif model == "itemknn":
        obj = ItemKNN(neighbor_matrix(pq.read_table(folder / "neighbors.parquet"), catalog), variant)
    elif model == "pretrained":
        obj = Pretrained(catalog, variant)
    elif model == "als":
        obj = Pretrained(catalog, "mean", space=factor_space(pq.read_table(folder / "factors.parquet"), catalog))
    else:
        obj = InvertedIndex.from_table(pq.read_table(folder / "topic_items.parquet"), catalog)
    obj.name, obj.config = conf["name"], conf
    return obj
