"""What each quality gate looks at: the stage's tables as pandas frames with derived check columns.

List columns (histories, embeddings) are reduced with pyarrow to one scalar per row
(``hist_before_event``, ``emb_norm`` ...) so Great Expectations validates plain columns and the
frame stays small. Raw and training frames above ``build.gx_max_rows`` rows are checked on a
seeded uniform sample of that many rows (per-row checks stay meaningful; the join rate becomes
an estimate); the embeddings frame is always complete because one-row-per-item is a table-level
property.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from mer.base.config import MerConfig
from mer.base.errors import ContractError
from mer.base.io import latest_partition, partition_dir


@dataclass
class Frame:
    table: str
    df: pd.DataFrame
    rows: int  # before sampling
    params: dict = field(default_factory=dict)  # values the suite needs (known ids, expected counts)


def _read(table_dir, ds: str, name: str, columns: list[str] | None = None, hint: str = "") -> pa.Table:
    path = partition_dir(table_dir, ds)
    if not path.is_dir() or not any(path.glob("*.parquet")):
        raise ContractError(f"table {name}: partition ds={ds} is missing ({path}){hint}")
    dataset = pads.dataset(path, format="parquet")
    missing = [c for c in (columns or []) if c not in dataset.schema.names]
    if missing:
        raise ContractError(f"table {name} ds={ds}: column(s) {missing} missing")
    return dataset.to_table(columns=columns)


def _snapshot_ids(cfg: MerConfig, table: str, column: str, ds: str) -> np.ndarray:
    snap = latest_partition(cfg.raw_table(table), ds)
    return _read(cfg.raw_table(table), snap, table, [column]).column(column).to_numpy(zero_copy_only=False)


def sample(table: pa.Table, max_rows: int, seed: int) -> pa.Table:
    if table.num_rows <= max_rows:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=max_rows, replace=False))
    return table.take(pa.array(idx))


def known(values: pa.ChunkedArray | pa.Array, ids: np.ndarray) -> np.ndarray:
    """Boolean per value: in ``ids`` (null counts as known: null checks are separate expectations)."""
    hit = pc.is_in(values, value_set=pa.array(ids)).to_numpy(zero_copy_only=False)
    return hit | pc.is_null(values).to_numpy(zero_copy_only=False)


def all_before(lists: pa.ChunkedArray, ts: pa.ChunkedArray) -> np.ndarray:
    """Per row: every element of the timestamp list is strictly before the row's timestamp."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    ts = ts.combine_chunks() if isinstance(ts, pa.ChunkedArray) else ts
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    late = pc.fill_null(pc.greater_equal(flat, pc.take(ts, parents)), True).to_numpy(zero_copy_only=False)
    n_late = np.bincount(parents.to_numpy()[late], minlength=len(ts))
    return n_late == 0


def raw_frames(cfg: MerConfig, ds: str) -> list[Frame]:
    """Stage 1's output (clean logs of the run) + ids of the snapshots they must refer to."""
    hint = f"; run `mer validate --ds {ds}` first"
    b = cfg.build
    item_ids = _snapshot_ids(cfg, "item_features", "item_id", ds)
    topic_ids = _snapshot_ids(cfg, "topics", "topic_id", ds)

    ev = sample(_read(cfg.table("clean_engagement_log"), ds, "clean_engagement_log", hint=hint), b.gx_max_rows,
                b.gx_sample_seed)
    ev_df = ev.to_pandas()
    ev_df["event_ts_in_ds"] = pc.equal(pc.strftime(ev.column("event_ts"), "%Y-%m-%d"),
                                       ev.column("event_date")).to_numpy(zero_copy_only=False)
    ev_df["item_known"] = known(ev.column("item_id"), item_ids)

    si = sample(_read(cfg.table("clean_source_interest_log"), ds, "clean_source_interest_log", hint=hint),
                b.gx_max_rows, b.gx_sample_seed)
    si_df = si.to_pandas()
    si_df["source_interest_id"] = si_df["source_interest_id"].astype("Int64")
    return [
        Frame("clean_engagement_log", ev_df, ev.num_rows, {"known_actions": list(b.known_actions)}),
        Frame("clean_source_interest_log", si_df, si.num_rows, {"topic_ids": topic_ids.tolist()}),
    ]


def training_frames(cfg: MerConfig, ds: str) -> list[Frame]:
    b = cfg.build
    name = "training_examples"
    full = _read(cfg.table(name), ds, name, hint=f"; run `mer build --ds {ds}` first")
    t = sample(full, b.gx_max_rows, b.gx_sample_seed)
    scalars = [c for c in t.column_names if not pa.types.is_list(t.schema.field(c).type)]
    df = t.select(scalars).to_pandas()
    df["condition_id"] = df["condition_id"].astype("Int64")
    df["has_condition"] = df["condition_id"].notna().astype(float)
    df["hist_before_event"] = all_before(t.column("hist_ts"), t.column("event_ts"))
    lengths = [pc.list_value_length(t.column(c)).to_numpy(zero_copy_only=False) for c in
               ("hist_item_ids", "hist_actions", "hist_ts", "hist_valid")]
    df["hist_len"] = lengths[0]
    df["hist_aligned"] = np.all([n == lengths[0] for n in lengths], axis=0)
    topic_ids = _snapshot_ids(cfg, "topics", "topic_id", ds)
    return [Frame(name, df, full.num_rows, {"topic_ids": topic_ids.tolist(), "positive_actions": list(b.positive_actions)})]


def embedding_frames(cfg: MerConfig, ds: str) -> list[Frame]:
    name = "item_embeddings"
    t = _read(cfg.table(name), ds, name, ["model_version", "item_id", "embedding"],
              hint=f"; run `mer infer --ds {ds}` first")
    emb = t.column("embedding").combine_chunks()
    dims = pc.fill_null(pc.list_value_length(emb), 0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(emb).to_numpy(zero_copy_only=False).astype(np.float64)
    parents = pc.list_parent_indices(emb).to_numpy()
    n = t.num_rows
    sq = np.bincount(parents, weights=np.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0) ** 2, minlength=n)
    nonfinite = np.bincount(parents, weights=(~np.isfinite(flat)).astype(float), minlength=n)
    df = t.select(["model_version", "item_id"]).to_pandas()
    df["emb_dim"] = dims
    df["emb_finite"] = (nonfinite == 0) & (dims > 0)
    df["emb_norm"] = np.sqrt(sq)
    catalog = _snapshot_ids(cfg, "item_features", "item_id", ds)
    df["item_in_catalog"] = known(t.column("item_id"), catalog)
    versions = max(df["model_version"].nunique(), 1)
    return [Frame(name, df, n, {"expected_rows": int(len(np.unique(catalog)) * versions),
                                "embed_dim": cfg.train.embed_dim})]


FRAMES = {"raw": raw_frames, "training": training_frames, "embeddings": embedding_frames}
