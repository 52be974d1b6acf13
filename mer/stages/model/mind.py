"""MIND (Li et al. 2019): dynamic routing with Gaussian random logit init, soft routing and a shared bilinear S.

    b_ij ~ N(0, 1) (fixed, seeded buffer)     random init
    w_ij = softmax_j(b_ij)                    Eq 1
    c_j  = squash(sum_i w_ij S e_i)           Eq 2 / 3
    b_ij += c_j^T S e_i
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from mer.stages.model.item_tower import TowerConfig, history_encoder, mlp, squash
from mer.stages.model.tower_spec import TowerSpec


class MINDTower(nn.Module):
    association = "argmax"
    SPECS: ClassVar[dict[str | None, TowerSpec]] = {None: TowerSpec(multi_interest=True)}

    def __init__(self, c: TowerConfig, item: nn.Module | None = None):
        super().__init__()
        self.c = c
        self.summarize = history_encoder(c, item)
        self.S = nn.Linear(c.dim, c.dim, bias=False)  # shared bilinear map
        g = torch.Generator().manual_seed(c.seed)
        self.register_buffer("b0", torch.randn(c.k, c.history_len, generator=g))
        self.head = mlp(c.dim, c.hidden_dim, c.dim)

    def forward(self, pre, missing, cat, creator, topic, ids, mask, engaged, cond):
        _, se = self.summarize(pre, missing, cat, creator, topic, ids, per_item=self.S)  # S(e) [B, L, d], per item
        L = se.shape[1]
        b = self.b0[:, -L:].unsqueeze(0).expand(se.shape[0], -1, -1)
        m = mask.unsqueeze(1).to(se.dtype)
        c = w = None
        for _ in range(self.c.routing_iters):
            w = torch.softmax(b, dim=1) * m  # Eq 1
            c = squash(torch.einsum("bkl,bld->bkd", w, se))  # Eq 2
            b = b + torch.einsum("bkd,bld->bkl", c, se)
        o = F.normalize(c + self.head(c), dim=-1)
        return o, w.sum(-1)
