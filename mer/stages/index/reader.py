"""Reader client of a published version: download, verify every checksum, load shards, serve queries.

This is what online serving does with a publish, so it trusts nothing it has not verified:
the manifest is fetched first, every file is checked against its sha256 before any is loaded,
and a version without a manifest is refused as half-written.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mer.base.config import MerConfig
from mer.base.errors import MerError, StorageError, validate_ds, validate_run_id
from mer.stages.index.publish import LATEST, MANIFEST, list_versions, read_latest
from mer.stages.index.search import load_model_shards, search_shards
from mer.stages.index.shards import embeddings_to_numpy
from mer.stages.index.storage import Store, sha256_file
from mer.stages.model.merge import served_merge


@dataclass
class Candidate:
    item_id: int
    score: float
    model: str
    emb_index: int
    topic_id: int | None

    @property
    def source(self) -> str:
        return f"{self.model}[k={self.emb_index}]" + (f" topic {self.topic_id}" if self.topic_id is not None else "")


def resolve_version(store: Store, version: str | None) -> tuple[str, str]:
    """``LATEST``/None, ``<ds>`` (newest published run of that day) or ``<ds>/<run_id>``."""
    if version in (None, "", LATEST):
        pointer = read_latest(store)
        if pointer is None:
            raise StorageError(f"reader: no {LATEST} under {store.url(store.prefix)}; nothing is published")
        return validate_ds(pointer["ds"]), validate_run_id(pointer["run_id"])
    if "/" in version:
        ds, run_id = version.split("/", 1)
        return validate_ds(ds), validate_run_id(run_id)
    ds = validate_ds(version)
    runs = [v for v in list_versions(store) if v["ds"] == ds]
    if not runs:
        raise StorageError(f"reader: no published version for ds={ds} under {store.url(store.prefix)}")
    return ds, runs[-1]["run_id"]


class PublishedIndex:
    def __init__(self, cfg: MerConfig, version: str | None = None, *, cache_dir: Path | None = None, store: Store | None = None):
        self.store = store or Store(cfg)
        self.ds, self.run_id = resolve_version(self.store, version)
        vkey = self.store.key(self.ds, self.run_id)
        self.manifest = self.store.get_json(f"{vkey}/{MANIFEST}")
        if self.manifest is None:
            raise StorageError(f"reader: {self.store.url(vkey)} has no {MANIFEST} (unpublished or half-written); refusing it")
        self.local = Path(cache_dir or cfg.root / "reader_cache") / self.ds / self.run_id
        for rel, f in self.manifest["files"].items():
            self._fetch_verified(f"{vkey}/{rel}", rel, f["sha256"])
        self.shards = {m: load_model_shards(self.local / "index" / m)[1] for m in self.manifest["models"]}
        self._users = {}

    @property
    def version(self) -> str:
        return f"{self.ds}/{self.run_id}"

    def _fetch_verified(self, key: str, rel: str, sha: str) -> None:
        path = self.local / rel
        if path.exists() and sha256_file(path) == sha:
            return
        tmp = path.with_name(f".{path.name}.part")
        self.store.download_file(key, tmp)
        got = sha256_file(tmp)
        if got != sha:
            tmp.unlink(missing_ok=True)
            raise StorageError(
                f"reader: checksum mismatch for {rel} in version {self.ds}/{self.run_id}: "
                f"manifest sha256 {sha[:16]}..., downloaded {got[:16]}...; refusing this version"
            )
        os.replace(tmp, path)

    def search(self, model: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if model not in self.shards:
            raise MerError(f"reader: model {model!r} not in version {self.version} (has {sorted(self.shards)})")
        return search_shards(self.shards[model], np.atleast_2d(queries), k)

    def users(self, model: str):
        if model not in self._users:
            rel = self.manifest["models"][model].get("users_file")
            self._users[model] = pq.read_table(self.local / rel) if rel else None
        return self._users[model]

    def user_embeddings(self, user_id: int) -> list[tuple[str, int, np.ndarray, float, int | None]]:
        """(model, k, vector, importance, topic) for every published embedding of the user."""
        import pyarrow.compute as pc

        rows = []
        for model in self.manifest["models"]:
            table = self.users(model)
            if table is None:
                continue
            mine = table.filter(pc.equal(table.column("user_id"), user_id))
            vecs = embeddings_to_numpy(mine, table_name=f"users/{model}")
            for i in range(mine.num_rows):
                rows.append(
                    (model, int(mine["emb_index"][i].as_py()), vecs[i], float(mine["importance"][i].as_py()), mine["topic_id"][i].as_py())
                )
        return rows

    def user_candidates(self, user_id: int, k: int) -> list[Candidate]:
        """The served merge over every embedding of the user, all shards searched per embedding."""
        embs = self.user_embeddings(user_id)
        if not embs:
            raise MerError(f"reader: user {user_id} has no embeddings in the published user export of {self.version}")
        return merged_candidates(embs, self.search, k)


def merged_candidates(embs: list[tuple[str, int, np.ndarray, float, int | None]],
                      search: Callable[[str, np.ndarray, int], tuple[np.ndarray, np.ndarray]], k: int) -> list[Candidate]:
    """The served merge (mer.stages.model.merge.served_merge, the one evaluation scores) of a user's
    embeddings (model, k, vector, importance, topic); ``search(model, vector, k)`` -> (scores, ids) [1, k].
    An embedding with a topic is explicit (CR); one without is implicit (DCM)."""
    lists, scores = [], []
    for model, _, vec, _, _ in embs:
        s, i = search(model, vec, k)  # k per embedding leaves room for de-duplication
        lists.append(i[0].tolist())
        scores.append(dict(zip(i[0].tolist(), s[0].tolist())))
    picked = served_merge(lists, [e[0] for e in embs], [e[3] for e in embs], [e[4] is not None for e in embs], k)
    return [Candidate(item, float(scores[src][item]), embs[src][0], embs[src][1], embs[src][4]) for item, src in picked]


def query_user(cfg: MerConfig, user_id: int, k: int = 20, ds: str | None = None, *, store: Store | None = None) -> list[Candidate]:
    """``mer query --user U``: print the user's merged candidates and the embedding each came from."""
    from rich.console import Console
    from rich.table import Table

    idx = PublishedIndex(cfg, ds, store=store)
    cands = idx.user_candidates(user_id, k)
    table = Table(title=f"user {user_id}: {len(cands)} candidates from {idx.version}")
    for col in ("#", "item_id", "score", "model", "embedding", "topic"):
        table.add_column(col, justify="right" if col in ("#", "item_id", "score") else "left")
    for r, c in enumerate(cands, 1):
        table.add_row(str(r), str(c.item_id), f"{c.score:.4f}", c.model, f"k={c.emb_index}", "" if c.topic_id is None else str(c.topic_id))
    Console().print(table)
    return cands
