"""Batched inference helpers shared by early stopping, evaluation and serving (no file IO)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from mer.stages.model.data import Batch, Catalog, make_batch
from mer.stages.model.metrics import corpus_columns, positive_ranks


@torch.no_grad()
def encode_items(net, catalog: Catalog, rows: np.ndarray, chunk: int = 4096) -> torch.Tensor:
    net.eval()
    rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64))
    out = [net.item(*catalog.item_inputs(rows_t[s:s + chunk])) for s in range(0, len(rows_t), chunk)]
    return torch.cat(out) if out else torch.zeros(0, net.c.dim)


@torch.no_grad()
def encode_users(net, inputs: tuple[torch.Tensor, ...], chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """User-tower inputs -> (embeddings [B, K, d], importance [B, K])."""
    net.eval()
    embs, imps = [], []
    n = inputs[0].shape[0]
    for s in range(0, n, chunk):
        e, i = net.user(*(x[s:s + chunk] for x in inputs))
        embs.append(e)
        imps.append(i)
    if not embs:
        return torch.zeros(0, net.c.n_embeddings, net.c.dim), torch.zeros(0, net.c.n_embeddings)
    return torch.cat(embs), torch.cat(imps)


def active_of(net, importance: torch.Tensor) -> torch.Tensor:
    """Which embeddings are real: a tower that declares ``zero_importance_is_empty`` (DCM: empty / duplicate
    clusters) marks the others with zero importance; every user keeps at least its first embedding."""
    if getattr(net.user, "zero_importance_is_empty", False):
        act = importance > 0
        act[:, 0] |= ~act.any(1)
        return act
    return torch.ones_like(importance, dtype=torch.bool)


def eval_batch(table: pa.Table, catalog: Catalog, history_len: int) -> Batch | None:
    if table.num_rows == 0:
        return None
    b = make_batch(table, catalog, history_len)
    keep = b.target_rows.numpy() > 0
    if not keep.all():
        b = make_batch(table.filter(pa.array(keep)), catalog, history_len)
    return b


@torch.no_grad()
def hr_at(net, batch: Batch | None, catalog: Catalog, corpus: np.ndarray, k: int = 100) -> float:
    """HR@k of a batch of eval records (early stopping)."""
    if batch is None or len(batch) == 0:
        return float("nan")
    corpus_emb = encode_items(net, catalog, corpus)
    user, imp = encode_users(net, batch.inputs)
    pos = encode_items(net, catalog, batch.target_rows.numpy())
    cols = corpus_columns(batch.target_rows.numpy(), corpus)
    ranks = positive_ranks(user, active_of(net, imp), pos, corpus_emb, cols)
    return float(np.mean(ranks < k))
