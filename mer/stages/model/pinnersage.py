"""PinnerSage (Pal et al. 2020), the no-training multi-embedding seed.

Per user: Ward clustering of the engaged items' (pretrained) embeddings, one medoid per cluster as
that interest's embedding, importance = time-decayed count sum_i exp(-lambda * age_days_i)
(lambda = cfg.train.pinnersage_decay_per_day: 0.1 halves an engagement's weight in ~7 days), and
only the top clusters by importance are kept. Items are scored in the same pretrained space.
"""
from __future__ import annotations

import fastcluster
import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster

from mer.base.config import MerConfig
from mer.base.errors import validate_ds
from mer.base.io import write_json_atomic
from mer.stages.model.data import Batch, Catalog

US_PER_DAY = 86_400 * 1_000_000
WARD_THRESHOLD = 1.0  # merge cost at which Ward stops merging (unit vectors: distinct topics are > 1 apart)


def cluster_user(emb: np.ndarray, age_days: np.ndarray, max_clusters: int, decay: float,
                 threshold: float = WARD_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(medoid indexes [k], importance [k], labels [n]) for one user's engaged items, top-k by importance."""
    n = len(emb)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    if n == 1:
        labels = np.ones(1, dtype=np.int64)
    else:
        z = fastcluster.linkage_vector(np.asarray(emb, dtype=np.float64), method="ward")
        labels = fcluster(z, t=threshold, criterion="distance").astype(np.int64)
    weight = np.exp(-decay * np.clip(age_days, 0, None))
    medoids, importance = [], []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        d = np.linalg.norm(emb[idx, None, :] - emb[None, idx, :], axis=-1).sum(1)
        medoids.append(idx[np.argmin(d)])  # the member closest to all others
        importance.append(weight[idx].sum())
    order = np.argsort(-np.asarray(importance), kind="stable")[:max_clusters]
    return np.asarray(medoids)[order], np.asarray(importance)[order], labels


def item_space(catalog: Catalog) -> torch.Tensor:
    """Unit pretrained embeddings by catalog row (invalid rows stay zero and score 0)."""
    pre = torch.from_numpy(catalog.pre)
    return torch.nn.functional.normalize(pre, dim=-1) * (torch.from_numpy(catalog.missing) == 0).unsqueeze(-1)


def embed_batch(batch: Batch, catalog: Catalog, max_clusters: int, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, K, d] medoid embeddings and [B, K] importance (0 = padding slot)."""
    space = item_space(catalog)
    use_all = batch.use
    pre = batch.inputs[0].numpy()
    B, d = len(batch), space.shape[1]
    emb = torch.zeros(B, max_clusters, d)
    imp = torch.zeros(B, max_clusters)
    for b in range(B):
        use = np.flatnonzero(use_all[b])
        if len(use) == 0:
            continue
        x = pre[b, use]
        x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-9, None)
        age = (batch.event_ts[b] - batch.hist_ts[b, use]) / US_PER_DAY
        med, im, _ = cluster_user(x, age, max_clusters, decay)
        emb[b, : len(med)] = torch.from_numpy(x[med]).float()
        imp[b, : len(med)] = torch.from_numpy(im).float()
    return emb, imp


def run(cfg: MerConfig, ds: str) -> dict:
    """No training: record the settings so evaluation finds the model for this ds."""

    validate_ds(ds)
    folder = cfg.model_dir(ds, "pinnersage")
    folder.mkdir(parents=True, exist_ok=True)
    conf = {"model": "pinnersage", "variant": None, "name": "pinnersage", "ds": ds,
            "model_version": f"pinnersage-{ds}", "decay_per_day": cfg.train.pinnersage_decay_per_day,
            "max_clusters": cfg.train.pinnersage_max_clusters or cfg.train.k_im, "ward_threshold": WARD_THRESHOLD}
    write_json_atomic(folder / "config.json", conf)
    return {"model": "pinnersage", "dir": str(folder), "trained": False, **conf}
