"""Sampled softmax over in-batch negatives with logQ correction (Eq 8-9) and the condition association.

For a multi-embedding user the positive picks one embedding: argmax (Eq 8) or, for towers with
random-init conditions, a straight-through Gumbel softmax sample (3.2.4). The same embedding scores
the in-batch negatives. In-batch copies of the positive item are masked out (they are not negatives).
Multi-embedding towers add the same loss on the max-rule score (train.max_rule_weight), whatever their association.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mer.stages.model.metrics import max_rule_scores


def select_embedding(user: torch.Tensor, item: torch.Tensor, active: torch.Tensor, association: str,
                     tau: float = 1.0, temperature: float = 1.0) -> torch.Tensor:
    """user [B, K, d], item [B, d], active [B, K] -> the associated user embedding [B, d].

    Gumbel: the categorical is softmax_j(o_u^j . o_y / temperature), on the same logit scale as the loss
    (Eq 9 with its temperature); tau is the Gumbel-softmax temperature of the straight-through relaxation.
    Cosines live in [-1, 1]: sampled unscaled, Gumbel noise (std ~1.3) swamps them, the positive goes to a
    near-uniformly random embedding, every embedding learns the same average and the tower collapses.
    """
    scores = torch.einsum("bkd,bd->bk", user, item).masked_fill(~active, -1e9)
    if association == "gumbel":
        logits = (scores / temperature).masked_fill(~active, -1e9)
        w = F.gumbel_softmax(logits, tau=tau, hard=True, dim=1)  # straight-through: one-hot forward
    else:
        w = F.one_hot(scores.argmax(1), user.shape[1]).to(user.dtype)  # Eq 8: j* = argmax_j o_u^j . o_y
    return torch.einsum("bk,bkd->bd", w, user)


def sampled_softmax_loss(u: torch.Tensor | None, items: torch.Tensor, log_q: torch.Tensor, item_ids: torch.Tensor,
                         temperature: float, extra: tuple[torch.Tensor, torch.Tensor, int] | None = None,
                         max_rule: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Eq 9: -log softmax over {positive} + in-batch negatives of (u . o_y / T - log Q_y).

    u [B, d] associated user embeddings, items [B, d] positives (row b is b's positive and everyone
    else's negative), log_q [B] log sampling probability of each in-batch item, item_ids [B].
    extra = (embeddings [M, d], ids [M], N): negatives drawn uniformly from a catalog of N items (mixed negative
    sampling). Each candidate's correction is the log of its expected count among the candidates: B p_y for an
    in-batch item, M / N for a uniform one.
    max_rule = (user [B, K, d], active [B, K]) instead of u: every candidate, the positive too, is scored by the
    max over the user's embeddings (max_rule_scores), the score retrieval ranks by.
    """
    def score(cands: torch.Tensor) -> torch.Tensor:
        return u @ cands.T if max_rule is None else max_rule_scores(*max_rule, cands)

    B = items.shape[0]
    logits = score(items) / temperature - log_q.unsqueeze(0)  # [B, B]
    same = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))  # accidental hits are not negatives
    if extra is not None:
        neg, neg_ids, n_items = extra
        M = neg.shape[0]
        logits = logits - math.log(B)  # in-batch: log(B p_y)
        xl = score(neg) / temperature - math.log(M / n_items)
        xl = xl.masked_fill(neg_ids.unsqueeze(0) == item_ids.unsqueeze(1), float("-inf"))
        logits = torch.cat([logits, xl], dim=1)
    target = torch.arange(B, device=items.device)
    return F.cross_entropy(logits, target)


class StreamingFrequency:
    """Yi et al. 2019 streaming frequency estimate: p(y) ~ 1 / (average steps between occurrences of y).

    Fallback for logQ when item_frequency is absent. Hash arrays A (last step seen) and B (interval).
    """

    def __init__(self, buckets: int = 1 << 20, alpha: float = 0.05):
        self.buckets, self.alpha = buckets, alpha
        self.last = np.zeros(buckets, dtype=np.float64)
        self.interval = np.full(buckets, 1e6, dtype=np.float64)  # unseen: rare
        self.step = 0

    def update(self, item_ids: np.ndarray) -> np.ndarray:
        """Record one batch (one step) and return p for its items."""
        self.step += 1
        h = np.asarray(item_ids, dtype=np.int64) % self.buckets
        seen = self.last[h] > 0
        gap = self.step - self.last[h]
        # first sighting: the best guess for its interval is the steps elapsed so far
        self.interval[h] = np.where(seen, (1 - self.alpha) * self.interval[h] + self.alpha * gap, self.step)
        self.last[h] = self.step
        return 1.0 / np.maximum(self.interval[h], 1.0)
