"""Known answers for the building blocks (Eq 3, 6, 7, 9, HR@K, PinnerSage; the served merge: test_merge.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mer.stages.model.dcm import farthest_point_init, route, single_assignment
from mer.stages.model.item_tower import squash
from mer.stages.model.loss import (
    StreamingFrequency,
    sampled_softmax_loss,
    select_embedding,
)
from mer.stages.model.metrics import hit_rate, mean_pairwise_cosine, positive_ranks
from mer.stages.model.pinnersage import cluster_user


def _points():
    # slots (oldest -> newest): 0 padding, 1 A(+x), 2 B(+y), 3 invalid far (-x), 4 A'(+x), 5 C(-y), 6 newest A''(+x)
    x = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0.95, 0.05], [0, -1], [0.9, 0.1]], dtype=torch.float)
    mask = torch.tensor([False, True, True, True, True, True, True])
    valid = torch.tensor([False, True, True, False, True, True, True])
    return x[None], mask[None], valid[None]


def test_farthest_point_init_picks_the_expected_items_and_never_an_invalid_one():
    x, mask, valid = _points()
    idx, active = farthest_point_init(x, mask & valid, mask, 3)
    # first = most recent valid item (6); then the valid item least similar to it (5: -y, cos -0.11 vs B's 0.11);
    # then B (2), whose max similarity to {6, 5} is lowest. The invalid -x item (3) is never picked.
    assert idx[0].tolist() == [6, 5, 2]
    assert active[0].tolist() == [True, True, True]
    # plain FPI (no validity filter) picks the out-of-distribution item right away
    idx_plain, _ = farthest_point_init(x, mask, mask, 3)
    assert idx_plain[0].tolist()[:2] == [6, 3]


def test_farthest_point_init_marks_missing_centroids_inactive():
    x, mask, valid = _points()
    valid = torch.zeros_like(valid)
    valid[0, 2] = True  # a single valid item
    idx, active = farthest_point_init(x, mask & valid, mask, 3)
    assert idx[0].tolist() == [2, 2, 2]
    assert active[0].tolist() == [True, False, False]


def test_single_assignment_routing_masks_non_max_entries():
    logits = torch.tensor([[[2.0, 0.0, 1.0], [1.0, 3.0, 1.0], [0.0, 0.0, 0.5]]])  # [B=1, K=3, L=3]
    w = single_assignment(logits)
    soft = torch.softmax(logits, dim=1)
    expected = torch.zeros_like(soft)
    expected[0, 0, 0], expected[0, 1, 1], expected[0, 1, 2] = soft[0, 0, 0], soft[0, 1, 1], soft[0, 1, 2]
    # item 2 ties between centroids 0 and 1 (1.0 = 1.0): both keep their weight
    expected[0, 0, 2] = soft[0, 0, 2]
    assert torch.allclose(w, expected)
    assert (w > 0).sum() == 4


def test_route_assigns_each_item_to_its_nearest_centroid_with_sar():
    e = torch.tensor([[[1.0, 0], [0.9, 0.1], [0, 1.0]]])
    c0 = torch.tensor([[[1.0, 0], [0, 1.0]]])
    _, b = route(e, c0, torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool), 2, sar=True)
    assert (b[0, 1, :2] == 0).all() and (b[0, 0, 2] == 0).all()
    assert (b[0, 0, :2] > 0).all() and b[0, 1, 2] > 0


@pytest.mark.parametrize("v", [[3.0, 4.0], [0.1, 0.0], [1.0, 1.0, 1.0]])
def test_squash_norm(v):
    t = torch.tensor(v)
    n2 = float((t * t).sum())
    assert float(squash(t).norm()) == pytest.approx(n2 / (1 + n2), rel=1e-5)
    assert torch.allclose(squash(t) / squash(t).norm(), t / t.norm())


def test_eq9_matches_a_hand_computation():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    items = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    p = torch.tensor([0.5, 0.25, 0.25])
    ids = torch.tensor([10, 11, 12])
    loss = sampled_softmax_loss(u, items, torch.log(p), ids, temperature=1.0)
    total = 0.0
    for b in range(3):
        logits = [float(u[b] @ items[k]) - math.log(float(p[k])) for k in range(3)]
        total += -(logits[b] - math.log(sum(math.exp(x) for x in logits)))
    assert float(loss) == pytest.approx(total / 3, rel=1e-6)


def test_eq9_masks_in_batch_copies_of_the_positive():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    ids = torch.tensor([7, 7])  # the same item twice: neither is the other's negative
    loss = sampled_softmax_loss(u, items, torch.zeros(2), ids, temperature=1.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_argmax_association_uses_the_best_embedding_for_the_positive():
    user = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    item = torch.tensor([[0.1, 0.9]])
    chosen = select_embedding(user, item, torch.ones(1, 2, dtype=torch.bool), "argmax")
    assert chosen.tolist() == [[0.0, 1.0]]
    # an inactive embedding is never chosen even when it scores best
    chosen = select_embedding(user, item, torch.tensor([[True, False]]), "argmax")
    assert chosen.tolist() == [[1.0, 0.0]]
    # straight-through Gumbel: forward value is one embedding, gradient reaches all of them
    user.requires_grad_(True)
    g = select_embedding(user, item, torch.ones(1, 2, dtype=torch.bool), "gumbel")
    assert sorted(g.detach().tolist()[0]) in ([0.0, 1.0],)
    (g * torch.tensor([1.0, 0.0])).sum().backward()  # a loss whose value depends on which one is picked
    assert (user.grad.abs().sum(-1) > 0).all()


def test_streaming_frequency_ranks_frequent_items_higher():
    est = StreamingFrequency(buckets=1000, alpha=0.2)
    for step in range(200):
        ids = [1, 2] if step % 4 == 0 else [1]
        est.update(np.array(ids))
    p = est.update(np.array([1, 2]))
    assert p[0] > p[1] * 2


def test_hr_at_k_with_max_over_embeddings():
    # corpus of 4 items; user has two embeddings, one pointing at the positive
    corpus = torch.tensor([[1.0, 0], [0.8, 0.6], [0, 1.0], [-1.0, 0]])
    user = torch.tensor([[[1.0, 0], [0, 1.0]], [[1.0, 0], [0, 1.0]]])
    active = torch.tensor([[True, True], [True, False]])
    pos = torch.tensor([[0, 1.0], [0, 1.0]])
    ranks = positive_ranks(user, active, pos, corpus)
    # record 0: pos scores 1.0 with emb 2 -> only item 0 (1.0, tie) not above -> rank 0
    # record 1: only emb 1 active: pos scores 0; items 0 and 1 score above -> rank 2
    assert ranks.tolist() == [0, 2]
    assert hit_rate(ranks, 1) == 0.5 and hit_rate(ranks, 3) == 1.0
    allowed = torch.tensor([[True] * 4, [False, False, True, True]])
    assert positive_ranks(user, active, pos, corpus, allowed).tolist() == [0, 0]


def test_mean_pairwise_cosine_detects_collapse():
    same = torch.tensor([[[1.0, 0], [1.0, 0], [1.0, 0]]])
    apart = torch.tensor([[[1.0, 0], [0, 1.0], [-1.0, 0]]])
    act = torch.ones(1, 3, dtype=torch.bool)
    assert mean_pairwise_cosine(same, act) == pytest.approx(1.0)
    assert mean_pairwise_cosine(apart, act) == pytest.approx(-1 / 3)


def test_pinnersage_medoid_and_importance_on_six_points():
    emb = np.array([[1.0, 0], [0.98, 0.2], [0.98, -0.2], [0, 1.0], [0.2, 0.98], [-0.1, 0.99]])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    age = np.array([0.0, 1.0, 2.0, 10.0, 10.0, 10.0])
    med, imp, labels = cluster_user(emb, age, max_clusters=5, decay=0.1)
    assert len(med) == 2
    assert med.tolist() == [0, 5] or med.tolist() == [0, 3]  # the medoid of the y cluster is its middle point
    d = np.linalg.norm(emb[3:, None] - emb[None, 3:], axis=-1).sum(1)
    assert med[1] == 3 + int(np.argmin(d))
    assert imp[0] == pytest.approx(1 + math.exp(-0.1) + math.exp(-0.2))
    assert imp[1] == pytest.approx(3 * math.exp(-1.0))
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]
    med1, imp1, _ = cluster_user(emb, age, max_clusters=1, decay=0.1)
    assert med1.tolist() == [0]
