"""Known answers for the building blocks (Eq 3, 6, 7, 9, HR@K, PinnerSage; the served merge: test_merge.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mer.stages.model.dcm import farthest_point_init, route, single_assignment
from mer.stages.model.item_tower import squash
from mer.stages.model.loss import StreamingFrequency, sampled_softmax_loss, select_embedding
from mer.stages.model.metrics import (
    corpus_columns,
    hit_rate,
    max_rule_scores,
    mean_pairwise_cosine,
    overlap,
    positive_ranks,
    topic_diversity,
)
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


def test_route_weights_positions_in_the_centroid_not_in_the_assignment():
    # one centroid takes all three items (iters=1: the assignment is from c0); with weights (1, 1, 2) the
    # centroid before squash is e0 + e1 + 2 e2 = (1.9, 2.1) instead of (1.9, 1.1); b is unchanged.
    e = torch.tensor([[[1.0, 0], [0.9, 0.1], [0, 1.0]]])
    c0 = torch.tensor([[[1.0, 1.0]]])
    ones, one = torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 1, dtype=torch.bool)
    c_plain, b_plain = route(e, c0, ones, one, 1, sar=True)
    c_w, b_w = route(e, c0, ones, one, 1, sar=True, weight=torch.tensor([1.0, 1.0, 2.0]))
    assert torch.equal(b_plain, b_w)
    w = b_plain[0, 0]  # softmax over one centroid: 1 for every item
    assert torch.allclose(c_plain[0, 0], squash(torch.tensor([1.9, 1.1]) * w[0]))
    assert torch.allclose(c_w[0, 0], squash(torch.tensor([1.9, 2.1]) * w[0]))


@pytest.mark.parametrize("model", ["single", "dcm"])
def test_recency_weights_start_neutral(model):
    # recency adds a parameter that starts at "every position counts the same": the first forward pass equals
    # the tower without it (same seed, same other weights); moving the parameter changes the output.
    from mer.stages.model.item_tower import TowerConfig
    from mer.stages.model.zoo import TwoTower

    c = TowerConfig(model=model, k=3 if model == "dcm" else 1, history_len=6, pre_dim=4)
    torch.manual_seed(0)
    plain = TwoTower(c)
    torch.manual_seed(0)
    rec = TwoTower(TowerConfig(**{**c.to_dict(), "recency": True}))
    rec.load_state_dict(plain.state_dict(), strict=False)
    B, L = 5, 6
    g = torch.Generator().manual_seed(1)
    inputs = (torch.randn(B, L, 4, generator=g), torch.zeros(B, L), torch.randint(0, 8, (B, L), generator=g),
              torch.randint(0, 8, (B, L), generator=g), torch.randint(0, 4, (B, L), generator=g),
              torch.randint(0, 9, (B, L), generator=g), torch.ones(B, L, dtype=torch.bool),
              torch.ones(B, L, dtype=torch.bool), torch.zeros(B, dtype=torch.long))
    with torch.no_grad():
        assert torch.allclose(plain.user(*inputs)[0], rec.user(*inputs)[0], atol=1e-6)
        param = rec.user.pos_bias if model == "single" else rec.user.pos
        param.copy_(torch.linspace(-3, 3, L))
        assert not torch.allclose(plain.user(*inputs)[0], rec.user(*inputs)[0], atol=1e-4)


def test_item_tower_encodes_each_distinct_item_once_in_training_with_the_same_values_and_gradients():
    from mer.stages.model.item_tower import ItemTower, TowerConfig

    torch.manual_seed(0)
    c = TowerConfig(pre_dim=4, id_vocab_size=3, pre_skip=True)  # every path the trained towers run
    tower = ItemTower(c)
    tower.summarize.fields.id_vocab.copy_(torch.tensor([5, 7, 9]))
    # [B=3, L=4] slots of 4 distinct items (ids 5, 7, 11 and -1 padding), each id with its own fixed features
    ids = torch.tensor([[5, 7, 5, -1], [7, 7, 11, -1], [5, 11, -1, -1]])
    feats = {5: (0.1, 1, 2, 1), 7: (-0.3, 2, 3, 2), 11: (0.7, 3, 1, 0), -1: (0.0, 0, 0, 0)}
    pre = torch.stack([torch.full((4,), feats[int(i)][0]) for i in ids.flatten()]).view(3, 4, 4)
    missing = (ids == -1).float()
    cat, creator, topic = (torch.tensor([[feats[int(i)][k] for i in row] for row in ids]) for k in (1, 2, 3))
    args = (pre, missing, cat, creator, topic, ids)
    calls = []
    hook = tower.summarize.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    tower.train()
    out_train = tower(*args)
    assert calls == [4]  # 12 slots, 4 distinct ids: encoded once each
    (out_train * torch.arange(64.0)).sum().backward()
    g_train = {n: p.grad.clone() for n, p in tower.named_parameters() if p.grad is not None}
    tower.zero_grad()
    tower.eval()  # eval mode encodes every slot (what scoring and export run)
    out_eval = tower(*args)
    assert calls[-1] == 3 and out_eval.shape == out_train.shape == (3, 4, 64)
    assert torch.allclose(out_train, out_eval, atol=1e-6)
    (out_eval * torch.arange(64.0)).sum().backward()
    for n, p in tower.named_parameters():
        if n in g_train:
            assert torch.allclose(g_train[n], p.grad, rtol=1e-4, atol=1e-4), n
    hook.remove()


def test_history_encoder_computes_a_per_item_function_once_per_distinct_item_with_the_same_values_and_gradients():
    # single's and DCM's attention logit attn(tanh e) is a function of the item alone: in training it runs on each
    # distinct item's encoding (4 rows here, not 12 slots) and is gathered back like the encoding itself.
    from mer.stages.model.item_tower import ItemTower, TowerConfig, attention_logit, attention_pool

    torch.manual_seed(0)
    c = TowerConfig(pre_dim=4, id_vocab_size=3, pre_skip=True)
    tower = ItemTower(c)
    tower.summarize.fields.id_vocab.copy_(torch.tensor([5, 7, 9]))
    attn = torch.nn.Linear(c.dim, 1)
    ids = torch.tensor([[5, 7, 5, -1], [7, 7, 11, -1], [5, 11, -1, -1]])
    g = torch.Generator().manual_seed(1)
    table = {i: torch.randn(4, generator=g) for i in (5, 7, 11, -1)}  # each id's own pretrained features
    pre = torch.stack([table[int(i)] for i in ids.flatten()]).view(3, 4, 4)
    args = (pre, (ids == -1).float(), ids.clamp_min(0) % 3, ids.clamp_min(0) % 5, ids.clamp_min(0) % 2, ids)
    use = ids >= 0
    rows_seen = []

    def logit(e):
        rows_seen.append(e.shape[:-1])
        return attention_logit(attn)(e)

    outs, grads = [], []
    for train in (True, False):
        tower.train(train)
        tower.zero_grad()
        attn.zero_grad()
        e, lg = tower(*args, per_item=logit)
        assert lg.shape == (3, 4, 1)
        pooled = attention_pool(e, use, lg, None)
        (pooled * torch.arange(64.0)).sum().backward()
        outs.append(pooled.detach())
        grads.append({n: p.grad.clone() for n, p in [*tower.named_parameters(), *attn.named_parameters()]
                      if p.grad is not None})
    assert rows_seen == [torch.Size([4]), torch.Size([3, 4])]  # distinct items in training; every slot in eval
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert set(grads[0]) == set(grads[1]) and "weight" in grads[0]  # attn's weight got its gradient
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-4), n
    # the pool itself: softmax over the used slots of the logits, then the weighted sum of those slots
    e = torch.arange(24.0).view(2, 3, 4)
    lg = torch.log(torch.tensor([[1.0, 3.0, 100.0], [2.0, 2.0, 2.0]])).unsqueeze(-1)
    out = attention_pool(e, torch.tensor([[True, True, False], [True, True, True]]), lg, None)
    assert torch.allclose(out[0], 0.25 * e[0, 0] + 0.75 * e[0, 1]) and torch.allclose(out[1], e[1].mean(0))


def _zero_last_layers(*seqs):
    with torch.no_grad():
        for seq in seqs:
            seq[-1].weight.zero_()
            seq[-1].bias.zero_()


def test_item_tower_pretrained_path_alone_gives_the_pretrained_cosines():
    # With the field MLP's output layers at zero, psi(i) = normalize(W pre_i): with W the identity, two items
    # score exactly their pretrained cosine, and an item with no pretrained embedding (zeros) maps to zero.
    from mer.stages.model.item_tower import ItemTower, TowerConfig

    c = TowerConfig(pre_dim=4, dim=4, pre_skip=True)
    tower = ItemTower(c).eval()
    _zero_last_layers(tower.summarize.mlp, tower.out)
    with torch.no_grad():
        tower.pre_skip.weight.copy_(torch.eye(4))
    pre = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    z = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        e = tower(pre, torch.tensor([0.0, 0.0, 1.0]), z, z, z, z)
    assert torch.allclose(e[0], torch.tensor([0.6, 0.8, 0.0, 0.0]), atol=1e-6)
    assert float(e[0] @ e[1]) == pytest.approx(0.8, abs=1e-6)  # cos((3, 4), (0, 1))
    assert torch.allclose(e[2], torch.zeros(4))


def test_single_tower_is_a_residual_on_the_attended_history():
    # With its MLP's output layer at zero and flat attention, single's user embedding is the normalised mean of
    # its valid history items' embeddings (padding and hidden/invalid slots excluded).
    from mer.stages.model.item_tower import TowerConfig
    from mer.stages.model.zoo import TwoTower

    net = TwoTower(TowerConfig(model="single", k=1, history_len=3, pre_dim=4, dim=4, history_encoder="item_tower",
                               pre_skip=True, residual=True))
    net.eval()
    _zero_last_layers(net.item.summarize.mlp, net.item.out, net.user.head)
    with torch.no_grad():
        net.item.pre_skip.weight.copy_(torch.eye(4))
        net.user.attn.weight.zero_()
    pre = torch.tensor([[[9.0, 9.0, 9.0, 9.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])
    z = torch.zeros(1, 3, dtype=torch.long)
    mask = torch.tensor([[False, True, True]])
    with torch.no_grad():
        o, imp = net.user(pre, torch.zeros(1, 3), z, z, z, z, mask, torch.ones(1, 3, dtype=torch.bool),
                          torch.zeros(1, dtype=torch.long))
    s = 0.5 ** 0.5
    assert torch.allclose(o[0, 0], torch.tensor([s, s, 0.0, 0.0]), atol=1e-6)
    assert imp.tolist() == [[1.0]]


def _featureless_net(n_ids: int = 4, **tower):
    """A tiny tower (eval mode) whose items 1..n_ids have id embeddings and, in the tests below, no pretrained one;
    `tower` overrides the TowerConfig defaults here."""
    from mer.stages.model.item_tower import TowerConfig
    from mer.stages.model.zoo import TwoTower

    conf = {"pre_dim": 4, "dim": 4, "history_encoder": "item_tower", "pre_skip": True, "featureless_fallback": True,
            **tower}
    net = TwoTower(TowerConfig(id_vocab_size=n_ids, **conf))
    net.eval()
    with torch.no_grad():
        net.item.summarize.fields.id_vocab.copy_(torch.arange(1, n_ids + 1))
    return net


def test_history_use_falls_back_to_featureless_engaged_items():
    """Defect: single and CR pooled only items with a pretrained embedding, so a user none of whose items has one
    (every user, on a data set without pretrained embeddings) had no history: single scored at popularity's level."""
    from mer.stages.model.item_tower import TowerConfig, history_use

    mask = torch.tensor([[False, True, True, True], [True, True, True, True]])
    engaged = torch.tensor([[True, True, False, True], [True, False, True, True]])  # False = hidden
    missing = torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # user 1: no item has an embedding
    old = history_use(TowerConfig(), mask, engaged, missing)
    new = history_use(TowerConfig(featureless_fallback=True), mask, engaged, missing)
    assert old.tolist() == [[False, False, False, True], [False] * 4]
    # user 0 has a valid item: unchanged; user 1 reads its engaged items (not the hidden one)
    assert new.tolist() == [[False, False, False, True], [True, False, True, True]]

    torch.manual_seed(0)  # the gap asserted below depends on the random weights (smallest over 300 seeds: 0.002)
    net = _featureless_net(model="single", k=1, history_len=3, residual=True)
    z = torch.zeros(2, 3, dtype=torch.long)
    ids = torch.tensor([[1, 2, 3], [4, 4, 4]])
    m, e = torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)
    args = (torch.zeros(2, 3, 4), torch.ones(2, 3), z, z, z, ids, m, e, torch.zeros(2, dtype=torch.long))
    with torch.no_grad():
        o, _ = net.user(*args)
        net.user.c.featureless_fallback = False
        o_old, _ = net.user(*args)
    assert not torch.allclose(o[0], o[1], atol=1e-4)  # two featureless histories of different items differ
    assert torch.allclose(o_old[0], o_old[1])  # without the fallback both users read nothing: the same vector


def test_dcm_seeds_several_interests_from_a_featureless_history():
    """Defect: VA-FPI seeded centroids from valid items only, so a user none of whose items has a pretrained
    embedding (every user of an interactions-only log) got one active interest: DCM was a one-embedding tower."""
    # One routing pass: each seed item keeps its own centroid (cosine 1). With three passes on random weights the
    # encodings are nearly one vector (mostly the MLP's biases) and routing could hand every item to one cluster:
    # the test failed about one run in three, whatever the seeding.
    torch.manual_seed(0)
    net = _featureless_net(model="dcm", k=3, history_len=4, anchor=True, routing_iters=1)
    z = torch.zeros(1, 4, dtype=torch.long)
    engaged = torch.tensor([[True, True, False, True]])  # the hidden item seeds nothing
    args = (torch.zeros(1, 4, 4), torch.ones(1, 4), z, z, z, torch.tensor([[1, 2, 3, 4]]),
            torch.ones(1, 4, dtype=torch.bool), engaged, torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        _, importance = net.user(*args)
    assert int((importance > 0).sum()) == 3  # three engaged distinct items: three interests


def test_anchored_dcm_interests_start_from_the_attended_history():
    # With its MLP's output layer at zero, flat attention and the centroid weight at zero, every DCM interest is
    # the normalised mean of the user's valid history (as single's known answer); with the centroid weight back
    # at 1 each interest moves towards its own cluster, so two separated clusters give two different interests.
    from mer.stages.model.item_tower import TowerConfig
    from mer.stages.model.zoo import TwoTower

    net = TwoTower(TowerConfig(model="dcm", k=2, history_len=3, pre_dim=4, dim=4, history_encoder="item_tower",
                               pre_skip=True, anchor=True, recency=True))
    net.eval()
    _zero_last_layers(net.item.summarize.mlp, net.item.out, net.user.head)
    with torch.no_grad():
        net.item.pre_skip.weight.copy_(torch.eye(4))
        net.user.anchor_attn.weight.zero_()
        net.user.centroid_w.zero_()
    pre = torch.tensor([[[9.0, 9.0, 9.0, 9.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])
    z = torch.zeros(1, 3, dtype=torch.long)
    mask = torch.tensor([[False, True, True]])
    args = (pre, torch.zeros(1, 3), z, z, z, z, mask, torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        o, imp = net.user(*args)
    s = 0.5 ** 0.5
    assert float(imp[0, 0]) == pytest.approx(float(imp[0, 1])) and float(imp[0, 0]) > 0  # one item per cluster
    assert torch.allclose(o[0], torch.tensor([[s, s, 0.0, 0.0]] * 2), atol=1e-6)
    with torch.no_grad():
        net.user.centroid_w.fill_(1.0)
        o, _ = net.user(*args)
    # interest 0 holds the most recent item (axis 1), interest 1 the other: each is g = (1/2, 1/2) plus its own
    # centroid, so it leans to its item's axis, and the two mirror each other
    a, b = o[0, 0, :2].tolist()
    assert b > a > 0 and o[0, 0, 2:].abs().max() < 1e-6
    assert torch.allclose(o[0, 1], o[0, 0][[1, 0, 2, 3]], atol=1e-6)


def test_a_saved_config_without_the_newer_switches_rebuilds_the_older_architecture():
    # config.json files written before pre_skip / residual existed lack the keys: they must rebuild the modules
    # their weights were trained with (no pre_skip weight; single's output is normalize(MLP) alone), while
    # training turns both on from cfg.train.
    from mer.base.config import load_config
    from mer.stages.model.item_tower import TowerConfig
    from mer.stages.model.zoo import TwoTower, tower_config

    newer = ("pre_skip", "residual", "anchor")
    old = {k: v for k, v in TowerConfig(model="single", pre_dim=4).to_dict().items() if k not in newer}
    net = TwoTower(TowerConfig(**old))
    assert not any("pre_skip" in n for n in net.state_dict())
    new = tower_config(load_config(), "single", None, pre_dim=4, topic_vocab=[1, 2])
    assert new.pre_skip and new.residual
    assert any("pre_skip" in n for n in TwoTower(new).state_dict())
    # DCM likewise: an old config has no anchor (its head reads c_j alone); training anchors the interests
    old_dcm = {k: v for k, v in TowerConfig(model="dcm", k=3, pre_dim=4).to_dict().items() if k not in newer}
    names = TwoTower(TowerConfig(**old_dcm)).state_dict()
    assert not any("anchor" in n for n in names) and names["user.head.0.weight"].shape[1] == old_dcm["dim"]
    new_dcm = tower_config(load_config(), "dcm", None, pre_dim=4, topic_vocab=[1, 2])
    assert new_dcm.anchor and "user.anchor_w" in TwoTower(new_dcm).state_dict()
    # the older single: with its MLP's output at zero the user embedding is zero (no residual to fall back on)
    net.eval()
    _zero_last_layers(net.user.head)
    z = torch.zeros(1, 50, dtype=torch.long)
    with torch.no_grad():
        o, _ = net.user(torch.randn(1, 50, 4), torch.zeros(1, 50), z, z, z, z, torch.ones(1, 50, dtype=torch.bool),
                        torch.ones(1, 50, dtype=torch.bool), torch.zeros(1, dtype=torch.long))
    assert torch.allclose(o, torch.zeros_like(o))


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


def test_max_rule_scores_gradient_reaches_only_each_candidates_best_active_embedding():
    # Inactive slots must neither score nor take gradient, even one that would win (user 0's slot 1 scores item 0
    # at 2) and even where the row's first slot is inactive (user 1); the winning active slot takes all of it.
    user = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], [[5.0, 5.0], [0.0, 1.0], [1.0, 0.0]]],
                        requires_grad=True)
    active = torch.tensor([[True, False, True], [False, True, True]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], requires_grad=True)
    scores = max_rule_scores(user, active, items)
    assert torch.allclose(scores, torch.tensor([[1.0, 1.0, 0.8], [1.0, 1.0, 0.8]]))
    weights = torch.tensor([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0]])
    (scores * weights).sum().backward()
    # d/d user[b, k] = sum of weight * item over the candidates that slot wins
    want_user = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [2.4, 5.2]], [[0.0, 0.0], [19.2, 41.6], [8.0, 0.0]]])
    assert torch.allclose(user.grad, want_user)
    want_items = torch.tensor([[1.0 + 8.0, 0.0], [0.0, 2.0 + 16.0], [0.0, 4.0 + 32.0]])
    assert torch.allclose(items.grad, want_items)


def test_max_rule_loss_scores_every_candidate_by_the_users_best_embedding():
    # user 0 has two embeddings (the second inactive for nothing), user 1 one active of two.
    user = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [-1.0, 0.0]]])
    active = torch.tensor([[True, True], [True, False]])
    items = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    p = torch.tensor([0.5, 0.5])
    ids = torch.tensor([1, 2])
    # max rule: user 0 scores item 0 max(0.8, 0.6) = 0.8, item 1 max(0, 1) = 1; user 1 (inactive -1 ignored):
    # item 0 0.96, item 1 0.8
    assert torch.allclose(max_rule_scores(user, active, items), torch.tensor([[0.8, 1.0], [0.96, 0.8]]))
    loss = sampled_softmax_loss(None, items, torch.log(p), ids, temperature=0.5, max_rule=(user, active))
    s = [[0.8, 1.0], [0.96, 0.8]]
    want = sum(-(s[b][b] / 0.5 - math.log(sum(math.exp(x / 0.5) for x in s[b]))) for b in range(2)) / 2
    assert float(loss) == pytest.approx(want, rel=1e-6)  # log Q is the same for both items: it cancels
    # the associated-embedding loss (Eq 9) differs: user 0's positive picks embedding 0, which scores item 1 at 0
    u = select_embedding(user, items, active, "argmax")
    assert float(sampled_softmax_loss(u, items, torch.log(p), ids, temperature=0.5)) != pytest.approx(want)


def test_batch_loss_adds_the_max_rule_term_to_every_multi_embedding_tower():
    from types import SimpleNamespace

    from mer.stages.model.train import batch_loss

    user = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [-1.0, 0.0]]])
    items = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    log_q, ids = torch.log(torch.tensor([0.5, 0.5])), torch.tensor([1, 2])
    batch = SimpleNamespace(inputs=(), catalog_inputs=(), target_rows=ids)

    def loss(k: int, association: str, w: float) -> float:
        u = user[:, :k]
        net = SimpleNamespace(user=lambda *a: (u, torch.ones(u.shape[:2])), item=lambda *a: items,
                              association=association, c=SimpleNamespace(gumbel_tau=1.0, max_rule_weight=w, k=k))
        torch.manual_seed(0)  # the Gumbel draw
        return float(batch_loss(net, batch, log_q, 0.5))

    active = torch.ones(2, 2, dtype=torch.bool)
    eq9 = float(sampled_softmax_loss(select_embedding(user, items, active, "argmax"), items, log_q, ids, 0.5))
    on_max = float(sampled_softmax_loss(None, items, log_q, ids, 0.5, max_rule=(user, active)))
    assert loss(2, "argmax", 0.0) == pytest.approx(eq9)
    assert loss(2, "argmax", 0.5) == pytest.approx(0.5 * eq9 + 0.5 * on_max)
    assert loss(2, "argmax", 1.0) == pytest.approx(on_max)
    assert loss(1, "argmax", 0.5) == pytest.approx(loss(1, "argmax", 0.0))  # one embedding (single, CR): no term
    # SA, interest-token (Gumbel association) too: with Eq 9 alone they learned K user-independent interests on
    # data with nothing but interactions (the defect this assertion was turned round for, session 9)
    gumbel_eq9 = loss(2, "gumbel", 0.0)
    assert gumbel_eq9 != pytest.approx(on_max)
    assert loss(2, "gumbel", 0.5) == pytest.approx(0.5 * gumbel_eq9 + 0.5 * on_max)
    # on the max-rule loss alone (the default for DCM, MIND, SA) the association is not drawn: no Gumbel noise is
    # consumed and no Eq 9 is scored, so the loss is the max-rule loss whatever the association
    assert loss(2, "gumbel", 1.0) == pytest.approx(on_max)
    torch.manual_seed(0)
    want_next = torch.rand(3)
    loss(2, "gumbel", 1.0)  # seeds 0 itself, then must leave the generator where the seed put it
    assert torch.equal(torch.rand(3), want_next)


@pytest.mark.parametrize("seed", range(3))
def test_interest_tokens_move_with_the_history_from_the_start(seed):
    # The decoder's queries leave LayerNorm at norm ~sqrt(d) while the item tower's outputs are unit vectors:
    # unscaled, two users whose histories differ got interests differing by ~5% of their histories' difference
    # (the tokens dominated; interest-token sat near popularity on an interactions-only log). The memory is
    # scaled by sqrt(d), as a Transformer's input embeddings are: ~30-40%. A config saved before the change
    # (no scaled_memory) rebuilds the unscaled tower its weights were trained as.
    from mer.base.config import MerConfig
    from mer.stages.model.zoo import tower_config

    assert tower_config(MerConfig(), "token", None, pre_dim=8, topic_vocab=[1, 2]).scaled_memory  # what training builds

    def moved(scaled: bool) -> torch.Tensor:
        torch.manual_seed(seed)
        net = _featureless_net(n_ids=20, model="token", k=4, pre_dim=8, dim=64, n_topics=3, history_len=6, seed=seed,
                               pre_skip=False, featureless_fallback=False, scaled_memory=scaled)
        ids = torch.tensor([[1, 2, 3, 4, 5, 6], [11, 12, 13, 14, 15, 16]])  # two users, no item in common
        zeros, mask = torch.zeros(2, 6, dtype=torch.long), torch.ones(2, 6, dtype=torch.bool)
        pre, missing = torch.zeros(2, 6, 8), torch.ones(2, 6)  # items told apart by their id embedding alone
        with torch.no_grad():
            interests, _ = net.user(pre, missing, zeros, zeros, zeros, ids, mask, mask,
                                    torch.zeros(2, dtype=torch.long))
            items = net.item(pre, missing, zeros, zeros, zeros, ids)
        return (interests[0] - interests[1]).norm(dim=-1) / (items[0].mean(0) - items[1].mean(0)).norm()

    assert bool((moved(True) > 0.2).all()), moved(True)
    assert bool((moved(False) < 0.1).all()), moved(False)


def test_only_the_max_rule_loss_gives_user_independent_interests_no_credit():
    # Why SA and MIND train on the max-rule term alone (train.by_model): K interests that are the same for every
    # user, one per item, are exactly what a target-conditioned association rewards (each positive picks the
    # interest on it, and Eq 9 scores the negatives with that interest only), while retrieval, ranking by the
    # max over the interests, gets the same list for every user. The max-rule loss scores every candidate by
    # that max, so such interests earn it nothing: log B, the loss of knowing nothing.
    B = 4
    items = torch.eye(B)  # four orthogonal items, every in-batch item equally likely (log Q cancels)
    user = items.unsqueeze(0).expand(B, B, B)  # every user holds the same four interests: one on each item
    active = torch.ones(B, B, dtype=torch.bool)
    log_q, ids = torch.log(torch.full((B,), 1.0 / B)), torch.arange(1, B + 1)
    T = 0.1
    for association in ("argmax", "gumbel"):
        torch.manual_seed(0)
        u = select_embedding(user, items, active, association, temperature=T)
        assert torch.equal(u, items)  # the positive's own interest, whichever association picks it
        eq9 = float(sampled_softmax_loss(u, items, log_q, ids, T))
        # positive at 1 / T, each negative at 0: log(1 + (B - 1) e^(-1/T)), next to nothing
        assert eq9 == pytest.approx(math.log(1 + (B - 1) * math.exp(-1 / T)), rel=1e-3)  # float32
    on_max = float(sampled_softmax_loss(None, items, log_q, ids, T, max_rule=(user, active)))
    assert on_max == pytest.approx(math.log(B), rel=1e-6)


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
    # corpus of 4 items; user has two embeddings, one pointing at the positive (corpus item 2)
    corpus = torch.tensor([[1.0, 0], [0.8, 0.6], [0, 1.0], [-1.0, 0]])
    user = torch.tensor([[[1.0, 0], [0, 1.0]], [[1.0, 0], [0, 1.0]]])
    active = torch.tensor([[True, True], [True, False]])
    pos = torch.tensor([[0, 1.0], [0, 1.0]])
    cols = corpus_columns(np.array([12, 12]), np.array([10, 11, 12, 13]))
    assert cols.tolist() == [2, 2]
    ranks = positive_ranks(user, active, pos, corpus, cols)
    # record 0: pos scores 1.0 with emb 2; item 0 ties at 1.0 with emb 1 and counts against it -> rank 1
    # record 1: only emb 1 active: pos scores 0; items 0 and 1 score above -> rank 2
    assert ranks.tolist() == [1, 2]
    assert hit_rate(ranks, 1) == 0.0 and hit_rate(ranks, 2) == 0.5 and hit_rate(ranks, 3) == 1.0
    allowed = torch.tensor([[True] * 4, [False, False, True, True]])
    assert positive_ranks(user, active, pos, corpus, cols, allowed).tolist() == [1, 0]


def test_ranks_never_reward_ties_or_users_without_embeddings():
    """Defect: ties counted in the positive's favour, so an all-zero user vector (PinnerSage for a user with no
    usable history item) and a user with no active embedding ranked every positive first: HR@100 1.0 on a data
    set without pretrained embeddings."""
    corpus = torch.eye(4)
    pos = corpus[[1, 1, 3]]
    user = torch.zeros(3, 2, 4)
    user[2, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    active = torch.tensor([[True, False], [False, False], [True, True]])
    cols = corpus_columns(np.array([21, 21, 99]), np.array([20, 21, 22, 23]))
    assert cols.tolist() == [1, 1, -1]
    ranks = positive_ranks(user, active, pos, corpus, cols)
    # 0: every item scores 0 = the positive's score: the 3 other corpus items tie and count against it
    # 1: no active embedding: nothing retrieved (rank = corpus size)
    # 2: the positive is outside the corpus; item 3 has the same vector, a tie -> rank 1 (embedding 2 is zero)
    assert ranks.tolist() == [3, 4, 1]
    assert hit_rate(ranks, 1) == 0.0


def test_topic_diversity_known_answer():
    # Rows of retrieved items' primary topics (0: no item or no topic). Row 0: topics 1, 1, 2 -> 2 distinct,
    # entropy -(2/3 ln 2/3 + 1/3 ln 1/3); row 1 has none and is left out; row 2: one topic, entropy 0.
    distinct, entropy = topic_diversity(np.array([[1, 1, 2, 0], [0, 0, 0, 0], [3, 3, 3, 3]]))
    assert distinct == pytest.approx(1.5)
    assert entropy == pytest.approx(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)) / 2)
    assert all(np.isnan(topic_diversity(np.zeros((2, 3), dtype=np.int64))))
    # A segment with no record (no core user in a log without saves) has no diversity either, not an error.
    assert all(np.isnan(topic_diversity(np.zeros((0, 3), dtype=np.int64))))
    assert np.isnan(overlap(a=np.zeros((0, 3), dtype=np.int64), b=np.zeros((0, 3), dtype=np.int64)))


def test_overlap_known_answer():
    # Row 0: {1, 2, 3} and {2, 3, 9} share 2 of 3; row 1: {4} and {5, 6} share 0 of 1; row 2: A is empty, left out.
    a = np.array([[1, 2, 3], [4, -1, -1], [-1, -1, -1]])
    b = np.array([[2, 3, 9], [5, 6, -1], [7, -1, -1]])
    assert overlap(a, b) == pytest.approx((2 / 3 + 0) / 2)
    assert np.isnan(overlap(a[2:], b[2:]))


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


def test_recent_items_known_answer():
    """The latest member slots first (slot L-1 is the most recent), each item's encoding x scale; past the user's
    members and past the history's length the embeddings are empty (zero, importance 0)."""
    from mer.stages.model.dcm import recent_items

    e = torch.arange(1, 9, dtype=torch.float32).view(1, 4, 2)  # slot l holds (2l+1, 2l+2)
    members = torch.tensor([[False, True, True, False]])  # slot 3 is a hide, slot 0 empty
    q, imp = recent_items(e, members, 3, 0.5)
    assert torch.equal(q, torch.tensor([[[2.5, 3.0], [1.5, 2.0], [0.0, 0.0]]]))
    assert torch.equal(imp, torch.tensor([[0.5, 0.5, 0.0]]))
    q, imp = recent_items(e, torch.ones(1, 4, dtype=torch.bool), 6, 1.0)  # longer than the history: padded
    assert torch.equal(q[0, :4], e[0].flip(0)) and torch.equal(imp, torch.tensor([[1.0] * 4 + [0.0] * 2]))


def test_dcm_serves_its_recent_items_after_its_interests_at_inference_only():
    from mer.stages.model.item_tower import TowerConfig
    from mer.stages.model.zoo import TwoTower

    torch.manual_seed(0)
    c = TowerConfig(model="dcm", k=2, history_len=4, pre_dim=4, dim=8, history_encoder="item_tower", anchor=True,
                    recent_queries=3, recent_scale=0.7)
    net = TwoTower(c)
    pre = torch.randn(2, 4, 4)
    z = torch.zeros(2, 4, dtype=torch.long)
    mask = torch.tensor([[True, True, True, True], [False, False, True, True]])
    args = (pre, torch.zeros(2, 4), z, z, z, torch.arange(8).view(2, 4), mask, torch.ones(2, 4, dtype=torch.bool),
            torch.zeros(2, dtype=torch.long))
    net.train()
    o, imp = net.user(*args)
    assert o.shape == (2, 2, 8) and imp.shape == (2, 2)  # training scores the interests only
    net.eval()
    with torch.no_grad():
        o, imp = net.user(*args)
        items = net.item(pre, torch.zeros(2, 4), z, z, z, torch.arange(8).view(2, 4))  # psi of each history slot
    assert o.shape == (2, 5, 8) and c.n_embeddings == 5
    assert torch.allclose(o[0, 2:], 0.7 * items[0, [3, 2, 1]], atol=1e-6)  # most recent first
    assert torch.allclose(o[1, 2:4], 0.7 * items[1, [3, 2]], atol=1e-6) and torch.equal(o[1, 4], torch.zeros(8))
    assert torch.allclose(imp[:, 2:], torch.tensor([[0.7, 0.7, 0.7], [0.7, 0.7, 0.0]]))
    c.recent_queries = 0  # the interests alone (the tower saved before recent items, the no-recent ablation)
    with torch.no_grad():
        o0, _ = net.user(*args)
    assert torch.allclose(o0, o[:, :2])
