"""Shared building blocks and the item tower psi(i).

TowerConfig is saved as config.json next to the weights, so serving rebuilds the exact modules.
Every item (a history slot or a candidate) is described by the same fields: pretrained embedding
(zeroed, with a missing flag, when invalid), hashed category, hashed creator, primary topic and, when
the model has an id vocabulary, a learned item-id embedding (the collaborative signal: items engaged by
the same users move together). The vocabulary (items with >= id_min_count train positives) is a buffer
of the weights, so a served item tower maps ids exactly as in training; an item outside it (new, rare)
gets the zero row and is described by its content fields alone.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class TowerConfig:
    model: str = "dcm"
    variant: str | None = None
    pre_dim: int = 32
    n_topics: int = 16  # topic vocab size (index 0 = none)
    cat_buckets: int = 1024
    creator_buckets: int = 4096
    field_dim: int = 32
    hidden_dim: int = 128
    dim: int = 64  # output embedding dim d
    k: int = 1  # embeddings per user (K_im for implicit towers; 1 per condition for CR)
    routing_iters: int = 3
    history_len: int = 50
    va_fpi: bool = True
    sar: bool = True
    gumbel_tau: float = 1.0
    seed: int = 13
    # DHEN feature crossing (appendix A); "cpu" preset by default, "paper" sizes in PRESETS
    dhen_layers: int = 1
    dhen_dim: int = 32
    dhen_heads: int = 2
    dhen_mlp: int = 128
    masknet_blocks: int = 2
    masknet_hidden: int = 64
    masknet_ratio: float = 0.5
    topic_vocab: list[int] = field(default_factory=list)
    id_vocab_size: int = 0  # items with their own learned id embedding (0 = content fields only)
    route_valid: bool = True  # DCM: route only valid, non-negative history items into the clusters
    history_encoder: str = "item_tower"  # "item_tower": history items are encoded by psi itself; "summarize": Eq 4
    recency: bool = False  # single / DCM: a learned weight per history position (slot L-1 = most recent)
    # Defaults False = the architecture before these existed, so a saved config.json without them rebuilds the
    # exact modules its weights were trained with; training sets them from cfg.train (zoo.tower_config).
    pre_skip: bool = False  # item tower: + a linear map of the pretrained embedding into the output
    residual: bool = False  # single: output = normalize(attended history + MLP(...)) instead of normalize(MLP(...))
    anchor: bool = False  # DCM: every interest = normalize(w_g g + w_c c_j + MLP([c_j, g])), g the attended history
    # A user none of whose engaged history items has a pretrained embedding is described by those items (their id
    # embedding and other fields) instead of by nothing (single, CR) or by every slot, hides included (DCM).
    featureless_fallback: bool = False
    # Interest-token: the decoder reads the history scaled by sqrt(dim) (interest_token.py says why). False = the
    # unscaled tower saved before session 17, so its weights are scored as they were trained.
    scaled_memory: bool = False
    # Training only (no module depends on it): the share of the loss scored by the max-rule (train.max_rule_weight).
    max_rule_weight: float = 0.0
    # DCM at inference: besides its k interests, the user's most recent valid history items (their item-tower
    # embeddings, scaled by recent_scale) are served as embeddings of their own (dcm.recent_items). 0 = k interests
    # only, the tower saved before session 26.
    recent_queries: int = 0
    recent_scale: float = 1.0

    @property
    def n_embeddings(self) -> int:
        """Embeddings per user the tower outputs at inference (k interests + recent items)."""
        return self.k + self.recent_queries

    def to_dict(self) -> dict:
        return asdict(self)


DHEN_PRESETS = {
    # appendix A: 2-layer transformer (256 dims, 4 heads) + 2-layer MLP (1024); 4-block MaskNet (128, 0.5) + MLP (1024)
    "paper": dict(dhen_layers=2, dhen_dim=256, dhen_heads=4, dhen_mlp=1024, masknet_blocks=4, masknet_hidden=128,
                  masknet_ratio=0.5),
    "cpu": dict(dhen_layers=1, dhen_dim=32, dhen_heads=2, dhen_mlp=128, masknet_blocks=2, masknet_hidden=64,
                masknet_ratio=0.5),
}


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def squash(v: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Eq 3: squash(v) = |v|^2 / (1 + |v|^2) * v / |v|."""
    sq = (v * v).sum(-1, keepdim=True)
    return sq / (1.0 + sq) * v / torch.sqrt(sq + eps)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over allowed entries; a slice with nothing allowed gives zeros (not NaN)."""
    logits = logits.masked_fill(~mask, -1e9)
    w = torch.softmax(logits, dim=dim) * mask
    return w / w.sum(dim, keepdim=True).clamp_min(1e-9)


PerItem = Callable[[torch.Tensor], torch.Tensor]  # a function of one item's encoding: [n, d] -> [n, m]


def attention_logit(attn: nn.Linear) -> PerItem:
    """The per-item attention logit attn(tanh e) [..., 1]: a function of the item alone, so the history encoder
    computes it once per distinct item of a training batch (`per_item`) rather than for every history slot."""
    return lambda e: attn(torch.tanh(e))


def attention_pool(e: torch.Tensor, use: torch.Tensor, logit: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    """History reps [B, L, d] pooled over `use` [B, L] by softmax(logit + a bias per position) -> [B, d].

    logit [B, L, 1]: attention_logit's value for each slot (the history encoder's `per_item` output).
    pos [history_len] (recency) aligns with the last slots: slot L-1 is the most recent item. Single's pooling
    and the history DCM anchors its interests on.
    """
    logits = logit.squeeze(-1)
    if pos is not None:
        logits = logits + pos[-e.shape[1]:]
    return weighted_sum(masked_softmax(logits, use, dim=1), e)


def weighted_sum(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_l w[b, l] x[b, l] -> [B, d] as one batched matrix product: the broadcast multiply-and-sum it replaces
    made a [B, L, d] temporary forward and two backward (with the tanh of the logits, ~40% of single's step)."""
    return torch.bmm(w.unsqueeze(1).to(x.dtype), x).squeeze(1)


def history_use(c: TowerConfig, mask: torch.Tensor, engaged: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """[B, L] the history slots single and CR pool and DCM clusters: the paper's valid items (engaged, i.e. not a
    negative action, and with a pretrained embedding); with ``c.featureless_fallback``, a user who has none reads
    its engaged items without one (their id embedding and other fields describe them). Without the fallback,
    single and CR saw no history at all on a data set without pretrained embeddings (HR@100 at popularity's
    level). Pooling every engaged item, featureless or not, was measured too: level on MovieLens, lower on
    synthetic (validation day, single 0.546 -> 0.542, CR 0.493 -> 0.481), so the valid items come first."""
    engaged = mask & engaged
    valid = engaged & (missing == 0)
    if not c.featureless_fallback:
        return valid
    return torch.where(valid.any(1, keepdim=True), valid, engaged)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of [B, L, d] where mask [B, L]."""
    m = mask.to(x.dtype)
    return weighted_sum(m, x) / m.sum(1, keepdim=True).clamp_min(1.0)


class ItemFields(nn.Module):
    """Item input fields, each projected to field_dim: [..., n_fields, field_dim]."""

    def __init__(self, c: TowerConfig):
        super().__init__()
        self.pre = nn.Linear(c.pre_dim + 1, c.field_dim)  # + missing flag
        self.cat = nn.Embedding(c.cat_buckets + 1, c.field_dim)
        self.creator = nn.Embedding(c.creator_buckets + 1, c.field_dim)
        self.topic = nn.Embedding(c.n_topics + 1, c.field_dim)
        self.n_fields = 4
        if c.id_vocab_size:
            self.n_fields = 5
            self.register_buffer("id_vocab", torch.zeros(c.id_vocab_size, dtype=torch.int64))  # sorted item ids
            # Row 0 (outside the vocabulary) is fixed at zero: such an item is described by its content alone.
            self.ids = nn.Embedding(c.id_vocab_size + 1, c.field_dim, padding_idx=0)
            nn.init.normal_(self.ids.weight, std=0.1)
            with torch.no_grad():
                self.ids.weight[0].zero_()

    def id_rows(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.searchsorted(self.id_vocab, ids).clamp_max(self.id_vocab.shape[0] - 1)
        return torch.where(self.id_vocab[pos] == ids, pos + 1, torch.zeros_like(pos))

    def forward(self, pre, missing, cat, creator, topic, ids) -> torch.Tensor:
        p = self.pre(torch.cat([pre, missing.unsqueeze(-1)], dim=-1))
        f = [p, self.cat(cat), self.creator(creator), self.topic(topic)]
        if self.n_fields == 5:
            f.append(self.ids(self.id_rows(ids)))
        return torch.stack(f, dim=-2)


class Summarize(nn.Module):
    """Eq 4: e_i = W2^T GELU(W1^T concat(f_i1, ..., f_iN))."""

    def __init__(self, c: TowerConfig):
        super().__init__()
        self.fields = ItemFields(c)
        self.mlp = mlp(self.fields.n_fields * c.field_dim, c.hidden_dim, c.dim)

    def forward(self, pre, missing, cat, creator, topic, ids, per_item: PerItem | None = None):
        f = self.fields(pre, missing, cat, creator, topic, ids)
        e = self.mlp(f.flatten(-2))
        return e if per_item is None else (e, per_item(e))


class ItemTower(nn.Module):
    """psi(i): item fields -> MLP, plus (pre_skip) a linear map of the pretrained embedding -> L2-normalised [.., d].

    The linear path keeps the pretrained space's geometry within reach of every tower (where the pretrained
    embeddings carry the signal, the mean of a history's pretrained embeddings is a strong baseline that the
    field MLP alone approximates poorly). Validation day, single: synthetic 0.525 -> 0.541, MovieLens level
    (0.317 -> 0.314); DCM 0.611 -> 0.623 / 0.283 -> 0.293 (bench/RESULTS.md).
    """

    def __init__(self, c: TowerConfig):
        super().__init__()
        self.summarize = Summarize(c)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(c.dim, c.dim))
        # zeros (a missing embedding) map to zero
        self.pre_skip = nn.Linear(c.pre_dim, c.dim, bias=False) if c.pre_skip else None

    def forward(self, pre, missing, cat, creator, topic, ids, per_item: PerItem | None = None):
        """[..., d]; with per_item (a function of one item's encoding, [n, d] -> [n, m]), also its value for every
        item, computed once per distinct item in training as the encoding is."""
        if self.training and ids.numel() > 1:
            # A training batch repeats items (a user's history slots, popular items, padding): every input
            # field is a function of the item, so each distinct id is encoded once and gathered back. Same
            # values, a fraction of the forward and backward work. Eval mode (scoring, export) is unchanged.
            flat = ids.reshape(-1)
            uniq, inv = torch.unique(flat, return_inverse=True)
            if len(uniq) < len(flat):
                first = torch.full((len(uniq),), len(flat), dtype=torch.long).scatter_reduce_(
                    0, inv, torch.arange(len(flat)), reduce="amin")  # each id's first slot: deterministic
                lead = ids.dim()
                rows = [x.reshape(len(flat), *x.shape[lead:])[first] for x in (pre, missing, cat, creator, topic, flat)]
                enc = self._encode(*rows)

                def back(v: torch.Tensor) -> torch.Tensor:  # [distinct, m] -> [..., m], one row per slot
                    # F.embedding's backward sums the repeats deterministically (indexing's backward does not)
                    return F.embedding(inv, v).reshape(*ids.shape, -1)

                return back(enc) if per_item is None else (back(enc), back(per_item(enc)))
        e = self._encode(pre, missing, cat, creator, topic, ids)
        return e if per_item is None else (e, per_item(e))

    def _encode(self, pre, missing, cat, creator, topic, ids) -> torch.Tensor:
        e = self.summarize(pre, missing, cat, creator, topic, ids)
        e = e + self.out(e)
        if self.pre_skip is not None:
            e = e + self.pre_skip(pre)
        return F.normalize(e, dim=-1)


def history_encoder(c: TowerConfig, item: nn.Module | None) -> nn.Module:
    """How a user tower encodes its history items: psi itself (the items a user engaged live in the space the
    user is scored against, so a tower starts from "near what you engaged") or its own Eq 4 summariser."""
    if c.history_encoder == "item_tower" and item is not None:
        return item
    return Summarize(c)
