"""Pure metric functions: HR@K with max over a user's embeddings, collapse, topic diversity, overlap."""
from __future__ import annotations

import numpy as np
import torch

# Scores this close to the positive's count as ties (float noise between two encodings of the same item).
TIE_EPS = 1e-6


def max_rule_scores(user: torch.Tensor, active: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """[B, N]: each candidate scored by the max over the user's active embeddings, the rule retrieval ranks by
    (user [B, K, d], active [B, K] with at least one True per row, cands [N, d]). Differentiable: the max-rule
    loss term trains on it (loss.py)."""
    # An inactive slot takes a copy of the row's first active embedding: the max is the same without building and
    # back-propagating a [B, K, N] mask. amax, not max: on CPU max's indices cost ~15x the reduction, and amax
    # splits a tie's gradient evenly, so a copied slot hands its share back to the embedding it copies.
    first = active.to(torch.uint8).argmax(1)
    u = torch.where(active.unsqueeze(-1), user, user.gather(1, first.view(-1, 1, 1).expand(-1, 1, user.shape[2])))
    return (u.reshape(-1, u.shape[2]) @ cands.T).view(u.shape[0], u.shape[1], cands.shape[0]).amax(1)


@torch.no_grad()
def positive_ranks(user: torch.Tensor, active: torch.Tensor, pos: torch.Tensor, corpus: torch.Tensor,
                   pos_col: np.ndarray, allowed: torch.Tensor | None = None, chunk: int = 512) -> np.ndarray:
    """Rank of each record's positive among the corpus (0 = best), scoring items by max over embeddings.

    user [B, K, d], active [B, K] bool, pos [B, d] the positive item, corpus [N, d], pos_col [B] the
    positive's column in the corpus (-1 = not in it: ``corpus_columns``), allowed [B, N] optional per-record
    corpus filter (filtered HR). Ties (within TIE_EPS) count against the positive, as the baselines' rule
    breaks them (never in the positive's favour): a scorer that gives every item the same score (an
    all-zero user vector) must not hit. The positive is not its own competitor, and a record with no
    active embedding retrieves nothing (rank N).
    """
    out = []
    for s in range(0, user.shape[0], chunk):
        u, a = user[s:s + chunk], active[s:s + chunk]
        pscore = torch.einsum("bkd,bd->bk", u, pos[s:s + chunk]).masked_fill(~a, float("-inf")).max(1).values  # [b]
        cscore = max_rule_scores(u, a, corpus)  # [b, N]
        if allowed is not None:
            cscore = cscore.masked_fill(~allowed[s:s + chunk], float("-inf"))
        col = torch.from_numpy(np.asarray(pos_col[s:s + chunk], dtype=np.int64))
        inside = torch.nonzero(col >= 0).squeeze(1)
        cscore[inside, col[inside]] = float("-inf")
        r = (cscore >= pscore.unsqueeze(1) - TIE_EPS).sum(1)
        r[~a.any(1)] = corpus.shape[0]
        out.append(r.cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def corpus_columns(rows: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Column of each catalog row in ``corpus`` (an array of distinct catalog rows, any order), -1 when absent."""
    rows = np.asarray(rows, dtype=np.int64)
    corpus = np.asarray(corpus, dtype=np.int64)
    if len(corpus) == 0:
        return np.full(len(rows), -1, dtype=np.int64)
    order = np.argsort(corpus, kind="stable")
    j = np.clip(np.searchsorted(corpus[order], rows), 0, len(corpus) - 1)
    return np.where(corpus[order][j] == rows, order[j], -1)


def hit_rate(ranks: np.ndarray, k: int, where: np.ndarray | None = None) -> float:
    """HR@K: share of records whose positive ranks in the top K (NaN when no record is selected)."""
    r = ranks if where is None else ranks[where]
    return float(np.mean(r < k)) if len(r) else float("nan")


def mean_pairwise_cosine(user: torch.Tensor, active: torch.Tensor) -> float:
    """Mean cosine between distinct active embeddings of the same user (1.0 = collapsed into one)."""
    u = torch.nn.functional.normalize(user, dim=-1)
    sims = torch.einsum("bkd,bjd->bkj", u, u)
    pair = active.unsqueeze(2) & active.unsqueeze(1)
    pair = pair & ~torch.eye(u.shape[1], dtype=torch.bool).unsqueeze(0)
    n = pair.sum()
    return float((sims * pair).sum() / n) if n > 0 else float("nan")


def topic_diversity(topics: np.ndarray) -> tuple[float, float]:
    """Mean distinct primary topics and mean topic entropy (nats) of each retrieved set.

    topics [R, k]: the primary topic of each retrieved item (0: none, or no item); a set without one is left out."""
    topics = np.asarray(topics, dtype=np.int64)
    if len(topics) == 0:  # a segment without records (no core user in a log without saves)
        return float("nan"), float("nan")
    topics = topics.reshape(len(topics), -1)
    n_t = int(topics.max(initial=0)) + 1
    # [R, topics]: how many of the set's items have it (one count over (row, topic) keys)
    keys = (np.arange(len(topics))[:, None] * n_t + topics).ravel()
    counts = np.bincount(keys, minlength=len(topics) * n_t).reshape(len(topics), n_t)[:, 1:]
    total = counts.sum(1)
    has = total > 0
    if not has.any():
        return float("nan"), float("nan")
    p = counts[has] / total[has, None]
    entropy = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(1)
    return float((counts[has] > 0).sum(1).mean()), float(entropy.mean())


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |A ∩ B| / min(|A|, |B|) over users: share of candidates two retrievers have in common.

    a, b [R, k]: each user's retrieved items (ids >= 0; -1 pads); a user with an empty set on either side is left
    out."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    # (user, item) keys: one set operation over every user at once
    width = int(max(a.max(initial=0), b.max(initial=0))) + 1
    key_a = np.unique((np.arange(len(a))[:, None] * width + a)[a >= 0])
    key_b = np.unique((np.arange(len(b))[:, None] * width + b)[b >= 0])
    common = np.bincount(np.intersect1d(key_a, key_b) // width, minlength=len(a))
    size_a = np.bincount(key_a // width, minlength=len(a))
    size_b = np.bincount(key_b // width, minlength=len(b))
    both = (size_a > 0) & (size_b > 0)
    return float(np.mean(common[both] / np.minimum(size_a, size_b)[both])) if both.any() else float("nan")
