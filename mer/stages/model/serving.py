"""The serving interface used by item inference, the index builder and the publisher.

    load_item_encoder(model_dir) -> ItemEncoder(.dim, .model_version, .encode(df), .encode_arrow(batch),
        .columns: the item_features columns it reads)
    user_embeddings(cfg, ds, model_name, user_ids=None, split="eval") -> {user_id: {"embeddings" [K, d],
        "importance" [K], and for CR "topic_ids" [K_ex]}}  (split="val": validation-day histories, for index tuning)
Weights load from safetensors only; nothing here unpickles.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from mer.base.config import MerConfig
from mer.base.contract import ITEM_FEATURES
from mer.base.errors import ContractError, MerError, validate_ds
from mer.base.io import latest_partition, read_partition
from mer.stages.model.data import (
    ITEM_INPUTS,
    build_catalog,
    item_arrays,
    make_batch,
    read_eval,
)
from mer.stages.model.scoring import active_of, encode_users
from mer.stages.model.train import load_model
from mer.stages.model.zoo import FITTERS, TOWERS, tower_spec

SERVED_MODELS = ("dcm", "cr")  # implicit (DCM) and explicit (CR) towers whose item towers get indexed


def model_dir(cfg: MerConfig, ds: str, name: str) -> Path:
    return cfg.model_dir(validate_ds(ds), name)


class ItemEncoder:
    """The trained item tower psi(i) over item_features rows; float32 [n, dim], L2-normalised.

    ``encode_arrow`` is the bulk path (Arrow in, numpy out, no per-row Python); ``encode`` takes a
    pandas frame of the same columns and goes through it.
    """

    FEATURES = ("item_id", "pretrained_embedding", "category_id", "creator_id", "topic_ids", "topic_scores")
    columns = FEATURES  # what encode_arrow reads (bulk inference reads only these)

    def __init__(self, folder: Path, batch_size: int = 8192, features: FeatureCache | None = None):
        self.net, conf = load_model(folder)
        self.net.eval()
        self.c = self.net.c
        self.dim: int = int(conf["dim"])
        self.model_version: str = conf["model_version"]
        self.batch_size = batch_size
        self.vocab = np.asarray(self.c.topic_vocab, dtype=np.int64)
        self.schema = pa.schema([ITEM_FEATURES.field(n) for n in self.FEATURES])
        # Encoders that run over the same batches share one cache only when their caller hands them the same one.
        self.features = features if features is not None else FeatureCache()

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.FEATURES if c not in df.columns]
        if missing:
            raise ContractError(f"table item_features: missing column(s) {missing} for item encoding")
        return self.encode_arrow(self._to_arrow(df))

    def _to_arrow(self, df: pd.DataFrame) -> pa.Table:
        cols = {}
        for f in self.schema:
            try:
                cols[f.name] = pa.array(df[f.name], type=f.type, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # odd cells (tuples, NaN inside lists): row by row
                vals = [None if (v is None or (isinstance(v, float) and np.isnan(v))) else
                        (list(v) if isinstance(v, (list, tuple, np.ndarray)) else v) for v in df[f.name].tolist()]
                cols[f.name] = pa.array(vals, type=f.type)
        return pa.table(cols, schema=self.schema)

    def encode_arrow(self, data: pa.RecordBatch | pa.Table) -> np.ndarray:
        """item_features rows as Arrow (a record batch or table with at least ``columns``) -> [n, dim]."""
        a = self._features(data)
        n = len(a["pre"])
        out = np.empty((n, self.dim), dtype=np.float32)
        t = [torch.from_numpy(a[k]) for k in ITEM_INPUTS]
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                out[s:s + self.batch_size] = self.net.item(*(x[s:s + self.batch_size] for x in t)).numpy()
        return out

    def _features(self, data: pa.RecordBatch | pa.Table) -> dict[str, np.ndarray]:
        """item_arrays of the rows, through this encoder's FeatureCache."""
        settings = (self.c.pre_dim, self.c.cat_buckets, self.c.creator_buckets, self.vocab.tobytes())
        return self.features.get(data, settings, self._extract)

    def _extract(self, data: pa.RecordBatch | pa.Table) -> dict[str, np.ndarray]:
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        missing = [c for c in self.FEATURES if c not in table.column_names]
        if missing:
            raise ContractError(f"table item_features: missing column(s) {missing} for item encoding")
        return item_arrays(table, self.c.pre_dim, self.vocab, self.c.cat_buckets, self.c.creator_buckets)


class FeatureCache:
    """The feature arrays of the last Arrow batch, per feature settings, for the encoders a caller runs over the
    same batches (dcm and cr over one batch extract the features once when given one cache).

    The arrays depend on the rows and on the settings (pre_dim, hash buckets, topic vocabulary) only, not on
    the weights, so encoders of different model versions may share them. The batch is held by a weak
    reference: the cache never keeps a batch alive, and a dead batch's identity cannot be mistaken for a new one.
    """

    def __init__(self):
        self._last: tuple[weakref.ref, tuple, dict[str, np.ndarray]] | None = None

    def get(self, data: pa.RecordBatch | pa.Table, settings: tuple,
            extract: Callable[[pa.RecordBatch | pa.Table], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        last = self._last
        if last is not None and last[0]() is data and last[1] == settings:
            return last[2]
        arrays = extract(data)
        self._last = (weakref.ref(data), settings, arrays)
        return arrays


def load_item_encoder(model_dir: Path, features: FeatureCache | None = None) -> ItemEncoder:
    """The item encoder of a model folder; encoders given one ``features`` cache share the feature extraction of
    a batch they all encode (each gets its own cache otherwise)."""
    return ItemEncoder(Path(model_dir), features=features)


def latest_histories(cfg: MerConfig, ds: str, user_ids: list[int] | None, split: str = "eval") -> pa.Table:
    """One row per user: the ``split`` row (eval, or val for index tuning) with the most history (its latest engagement)."""
    t = read_eval(cfg, ds, None, cfg.eval.seed, split=split)
    if t.num_rows == 0:
        raise ContractError(f"table training_examples: no {split} rows in ds={ds} to build user histories from")
    df = pd.DataFrame({"user_id": t.column("user_id").to_numpy(), "ts": t.column("event_ts").cast(pa.int64()).to_numpy()})
    df["row"] = np.arange(len(df))
    if user_ids is not None:
        df = df[df.user_id.isin([int(u) for u in user_ids])]
    last = df.sort_values(["user_id", "ts", "row"]).groupby("user_id").tail(1)
    return t.take(pa.array(last["row"].to_numpy()))


def followed_topics(cfg: MerConfig, ds: str, vocab: np.ndarray) -> dict[int, np.ndarray]:
    snap = latest_partition(cfg.raw_table("user_follows"), ds)
    t = read_partition(cfg.raw_table("user_follows"), snap, columns=["user_id", "topic_id"]).to_pandas()
    t = t[t.topic_id.isin(vocab)].drop_duplicates()
    return {int(u): np.sort(g.topic_id.to_numpy().astype(np.int64)) for u, g in t.groupby("user_id")}


def sample_conditions(follows: dict[int, np.ndarray], users: np.ndarray, k_ex: int, seed: int) -> list[np.ndarray]:
    """K_ex followed topics per user (3.5), seeded per user so a user's sample does not depend on the others."""
    out = []
    for u in users:
        f = follows.get(int(u), np.zeros(0, dtype=np.int64))
        if len(f) > k_ex:
            f = np.sort(np.random.default_rng([seed, int(u)]).choice(f, k_ex, replace=False))
        out.append(f)
    return out


def embed_with_conditions(net, catalog, table: pa.Table, conds: list[np.ndarray]):
    """CR: one embedding per (user, condition); returns per-user arrays [K_u, d]."""
    rep = np.repeat(np.arange(table.num_rows), [len(c) for c in conds])
    if len(rep) == 0:
        return [np.zeros((0, net.c.dim), np.float32) for _ in conds]
    flat = np.concatenate(conds)
    b = make_batch(table.take(pa.array(rep)), catalog, net.c.history_len, flat)
    emb, _ = encode_users(net, b.inputs)
    emb = emb[:, 0].numpy()
    splits = np.cumsum([len(c) for c in conds])[:-1]
    return np.split(emb, splits)


def user_embeddings(cfg: MerConfig, ds: str, model_name: str, user_ids: list[int] | None = None,
                    split: str = "eval") -> dict:
    validate_ds(ds)
    if model_name.split("-", 1)[0] in FITTERS:  # fitted models keep no user tower to run
        raise MerError(f"model {model_name} has no user tower: user_embeddings serves the trained towers "
                       f"({', '.join(TOWERS)})")
    folder = model_dir(cfg, ds, model_name)
    net, conf = load_model(folder)
    vocab = np.asarray(net.c.topic_vocab, dtype=np.int64)
    snap = latest_partition(cfg.raw_table("item_features"), ds)
    catalog = build_catalog(read_partition(cfg.raw_table("item_features"), snap), vocab, net.c.cat_buckets,
                            net.c.creator_buckets, net.c.pre_dim)
    table = latest_histories(cfg, ds, user_ids, split)
    users = table.column("user_id").to_numpy().astype(np.int64)
    out: dict[int, dict] = {}
    if tower_spec(net.c.model, net.c.variant).conditioned:  # one embedding per (user, followed topic)
        conds = sample_conditions(followed_topics(cfg, ds, vocab), users, cfg.train.k_ex, cfg.eval.seed)
        for u, c, e in zip(users, conds, embed_with_conditions(net, catalog, table, conds)):
            out[int(u)] = {"embeddings": e.astype(np.float32), "importance": np.ones(len(c), np.float32),
                           "topic_ids": c.astype(np.int64)}
        return out
    b = make_batch(table, catalog, net.c.history_len)
    emb, imp = encode_users(net, b.inputs)
    act = active_of(net, imp)
    for i, u in enumerate(users):
        keep = act[i].numpy()
        out[int(u)] = {"embeddings": emb[i][keep].numpy().astype(np.float32),
                       "importance": imp[i][keep].numpy().astype(np.float32)}
    return out
