"""Self-attention multi-interest tower (ComiRec-SA style): A = softmax_L(W2 tanh(W1 H^T)), V = A H.

Trained with straight-through Gumbel softmax association (paper 3.2.4) to avoid winner-takes-all collapse.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from mer.stages.model.item_tower import (
    TowerConfig,
    history_encoder,
    masked_softmax,
    mlp,
)
from mer.stages.model.tower_spec import TowerSpec


class SelfAttentionTower(nn.Module):
    association = "gumbel"
    SPECS: ClassVar[dict[str | None, TowerSpec]] = {None: TowerSpec(multi_interest=True)}

    def __init__(self, c: TowerConfig, item: nn.Module | None = None):
        super().__init__()
        self.c = c
        self.summarize = history_encoder(c, item)
        self.pos = nn.Parameter(torch.zeros(c.history_len, c.dim))
        self.w1 = nn.Linear(c.dim, 4 * c.dim, bias=False)
        self.w2 = nn.Linear(4 * c.dim, c.k, bias=False)
        self.head = mlp(c.dim, c.hidden_dim, c.dim)

    def forward(self, pre, missing, cat, creator, topic, ids, mask, engaged, cond):
        # w1(e + pos) = w1(e) + w1(pos) (no bias): w1(e) is a function of the item, computed once per distinct item
        e, we = self.summarize(pre, missing, cat, creator, topic, ids, per_item=self.w1)
        a = self.w2(torch.tanh(we + self.w1(self.pos[-e.shape[1]:]))).transpose(1, 2)  # [B, K, L]
        a = masked_softmax(a, mask.unsqueeze(1).expand_as(a), dim=2)
        v = torch.einsum("bkl,bld->bkd", a, e)
        o = F.normalize(v + self.head(v), dim=-1)
        return o, torch.ones(o.shape[:2], dtype=o.dtype)
