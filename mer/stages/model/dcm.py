"""DCM: Differentiable Clustering Module, the implicit multi-interest user tower (paper 3.2.2).

    e_i   = Summarize(item fields)                      Eq 4
    c_j   = validity-aware farthest-point init          Eq 5 / 6
    b_ij  = softmax_j(c_j^T e_i), single assignment     Eq 1 / 7
    c_j   = squash(sum_i b_ij e_i)                       Eq 2 / 3
    o_u^j = normalize(c_j + MLP(c_j)), importance_j = sum_i b_ij (3.5)
    anchor: o_u^j = normalize(w_g g + w_c c_j + MLP([c_j, g])), g = attended history (as single pools it)
    inference: + the recent_queries most recent valid items' embeddings psi(h) x recent_scale (recent_items)

Ablations: va_fpi=False -> plain FPI over every history item; sar=False -> soft routing (Eq 1).
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from mer.stages.model.item_tower import (
    TowerConfig,
    attention_logit,
    attention_pool,
    history_encoder,
    history_use,
    mlp,
    squash,
)
from mer.stages.model.tower_spec import TowerSpec


def farthest_point_init(x: torch.Tensor, eligible: torch.Tensor, mask: torch.Tensor, k: int):
    """Indexes [B, k] of the initial centroids and whether each is a real (distinct) centroid [B, k].

    Eq 6 as meant: among eligible items, the next centroid is the one whose highest similarity to
    the centroids chosen so far is lowest (Eq 5's argmin-max, restricted to I_valid = 1). The first
    centroid is the most recent eligible item (deterministic, unlike the paper's random pick).
    With fewer than k eligible items the remaining slots repeat the first centroid and are inactive.
    A user with no eligible item falls back to the most recent history slot for one active centroid.
    """
    B, L = eligible.shape
    pos = torch.arange(L, device=x.device).expand(B, L)
    anchor = torch.where(eligible.any(1, keepdim=True), eligible, mask)
    first = torch.where(anchor, pos, -1).argmax(1)  # most recent; all -1 -> index 0 (padding), still defined
    xn = F.normalize(x, dim=-1)
    sims = torch.einsum("bld,bmd->blm", xn, xn)  # all pairwise cosines once: [B, L, L]
    row = lambda i: sims.gather(1, i.view(B, 1, 1).expand(B, 1, L)).squeeze(1)  # noqa: E731
    maxsim = row(first)  # each item's highest similarity to a chosen centroid
    chosen = F.one_hot(first, L).bool()
    idx, active = [first], [torch.ones(B, dtype=torch.bool, device=x.device)]
    for _ in range(1, k):
        cand = eligible & ~chosen
        score = torch.where(cand, maxsim, torch.full_like(maxsim, float("inf")))
        nxt = score.argmin(1)
        ok = cand.any(1)
        nxt = torch.where(ok, nxt, first)
        idx.append(nxt)
        active.append(ok)
        chosen = chosen | (F.one_hot(nxt, L).bool() & ok.unsqueeze(1))
        maxsim = torch.maximum(maxsim, row(nxt))
    return torch.stack(idx, 1), torch.stack(active, 1)


def single_assignment(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Eq 7: softmax over centroids, keeping only each item's max entry."""
    w = torch.softmax(logits, dim=dim)
    return w * (logits == logits.max(dim=dim, keepdim=True).values).to(w.dtype)


def route(e: torch.Tensor, c: torch.Tensor, item_mask: torch.Tensor, active: torch.Tensor, iters: int, sar: bool,
          weight: torch.Tensor | None = None):
    """Routing iterations: returns squashed centroids [B, K, d] and routing weights b [B, K, L].

    `weight` [L] (recency): how much each history position counts in a centroid (Eq 2's sum), not in b.

    Only the last iteration is differentiated (earlier ones refine the assignment without a graph),
    the usual stop-gradient in capsule routing: same forward values, a cheaper backward.
    """

    def step(c, e):
        logits = torch.einsum("bkd,bld->bkl", c, e)  # c_j^T e_i
        logits = logits.masked_fill(~active.unsqueeze(-1), -1e9)  # inactive centroids take no item
        b = single_assignment(logits) if sar else torch.softmax(logits, dim=1)  # Eq 7 / Eq 1
        b = b * item_mask.unsqueeze(1).to(b.dtype)  # padding routes nowhere
        bw = b if weight is None else b * weight
        return squash(torch.einsum("bkl,bld->bkd", bw, e)), b  # Eq 2 + Eq 3

    with torch.no_grad():
        ed, cd = e.detach(), c.detach()
        for _ in range(iters - 1):
            cd, _ = step(cd, ed)
    if iters > 1:
        c = cd
    return step(c, e)


def recent_items(e: torch.Tensor, members: torch.Tensor, n: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The n most recent member slots' encodings x scale [B, n, d] (most recent first) and their importance [B, n]:
    scale for a real item, 0 where the user has fewer than n members (an empty embedding: not scored or served).

    e are the history items' item-tower embeddings (the history is encoded by psi), so a query is the item itself:
    at scale s it scores a corpus item s x cos, and wins the max over the user's embeddings only where it is much
    closer than every interest is.
    """
    L = members.shape[1]
    slots = torch.where(members, torch.arange(L, device=e.device).expand_as(members), -1)
    # a history shorter than n slots still gives n embeddings (the exported shape): the extra slots hold no member
    slots = F.pad(slots, (max(0, n - L), 0), value=-1)
    idx = slots.topk(n, dim=1).values  # latest member slots; -1: no more members
    has = idx >= 0
    q = e.gather(1, idx.clamp_min(0).unsqueeze(-1).expand(-1, -1, e.shape[-1])) * (scale * has.unsqueeze(-1).to(e.dtype))
    return q, scale * has.to(e.dtype)


class DCMTower(nn.Module):
    association = "argmax"  # Eq 8
    # Empty and duplicate clusters come out with zero importance: scoring and serving skip them.
    zero_importance_is_empty = True
    # Ablations: plain FPI (Eq 5), soft routing (Eq 1), a fixed number of interests whatever train.k_im says (k2; k4,
    # the default since session 20, kept so that folders trained as dcm-k4 before still load; k7, the paper's K_im).
    SPECS: ClassVar[dict[str | None, TowerSpec]] = {None: TowerSpec(multi_interest=True),
             "no-vafpi": TowerSpec(multi_interest=True, overrides={"va_fpi": False}),
             "no-sar": TowerSpec(multi_interest=True, overrides={"sar": False}),
             "k2": TowerSpec(multi_interest=True, overrides={"k": 2}),
             "k4": TowerSpec(multi_interest=True, overrides={"k": 4}),
             "k7": TowerSpec(multi_interest=True, overrides={"k": 7}),
             "no-recent": TowerSpec(multi_interest=True, overrides={"recent_queries": 0})}

    def __init__(self, c: TowerConfig, item: nn.Module | None = None):
        super().__init__()
        self.c = c
        self.summarize = history_encoder(c, item)
        self.head = mlp(2 * c.dim if c.anchor else c.dim, c.hidden_dim, c.dim)
        if c.recency:  # 2 sigmoid(p): every position counts 1 at the start; training learns what recency is worth
            self.pos = nn.Parameter(torch.zeros(c.history_len))
        if c.anchor:
            # Each interest alone (c_j + MLP(c_j)) was weaker than single's one embedding on MovieLens: the
            # whole-history taste matters there. Anchored on it, an interest is that taste shifted towards its
            # cluster; the weights let training decide how far (both start at 1).
            self.anchor_attn = nn.Linear(c.dim, 1)
            if c.recency:
                self.anchor_pos = nn.Parameter(torch.zeros(c.history_len))
            self.anchor_w = nn.Parameter(torch.ones(()))
            self.centroid_w = nn.Parameter(torch.ones(()))

    def forward(self, pre, missing, cat, creator, topic, ids, mask, engaged, cond):
        # Eq 4, [B, L, d]; with the anchor, also each item's attention logit for the attended history g
        e, logit = (self.summarize(pre, missing, cat, creator, topic, ids, per_item=attention_logit(self.anchor_attn))
                    if self.c.anchor else (self.summarize(pre, missing, cat, creator, topic, ids), None))
        valid = mask & engaged & (missing == 0)  # I_valid: engaged (no negative action) and with features
        # Eq 6 vs Eq 5. A user none of whose items has features (an interactions-only log) seeds its centroids
        # from its engaged items, as it routes them (history_use): with no eligible item at all, FPI would give
        # one active centroid and DCM would be a single-embedding tower on such data.
        eligible = history_use(self.c, mask, engaged, missing) if self.c.va_fpi else mask
        idx, active = farthest_point_init(e.detach(), eligible, mask, self.c.k)
        c0 = e.gather(1, idx.unsqueeze(-1).expand(-1, -1, e.shape[-1]))
        # Which history items the clusters are made of: with route_valid, only engaged items with valid features
        # (not hides), as single and PinnerSage pool them; a user with none falls back to its engaged items without
        # features (featureless_fallback), then to every slot, hides included (a watched-and-disliked item still
        # says what the user looks at).
        members = mask
        if self.c.route_valid:
            members = history_use(self.c, mask, engaged, missing) if self.c.featureless_fallback else valid
            members = torch.where(members.any(1, keepdim=True), members, mask)
        weight = 2 * torch.sigmoid(self.pos[-e.shape[1]:]) if self.c.recency else None
        c, b = route(e, c0, members, active, self.c.routing_iters, self.c.sar, weight)
        importance = b.sum(-1) * active.to(b.dtype)  # 3.5: cluster importance = sum_i b_ij
        if not self.c.anchor:
            o = F.normalize(c + self.head(c), dim=-1)
        else:
            g = attention_pool(e, members, logit, self.anchor_pos if self.c.recency else None)
            g = g.unsqueeze(1).expand_as(c)  # [B, K, d]
            o = F.normalize(self.anchor_w * g + self.centroid_w * c + self.head(torch.cat([c, g], dim=-1)), dim=-1)
        if self.c.recent_queries and not self.training:
            q, q_imp = recent_items(e, members, self.c.recent_queries, self.c.recent_scale)
            return torch.cat([o, q], 1), torch.cat([importance, q_imp], 1)
        return o, importance
