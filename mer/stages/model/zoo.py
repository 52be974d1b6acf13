"""Model names -> user-tower classes, variants, and the two-tower container saved as one state dict."""
from __future__ import annotations

import torch.nn as nn

from mer.base.config import MerConfig
from mer.base.errors import MerError
from mer.stages.model.cr import CRTower
from mer.stages.model.dcm import DCMTower
from mer.stages.model.interest_token import InterestTokenTower
from mer.stages.model.item_tower import DHEN_PRESETS, ItemTower, TowerConfig
from mer.stages.model.mind import MINDTower
from mer.stages.model.names import ALL_MODELS, BASELINES, DEFAULT_VARIANT, TRAINED, VARIANTS  # noqa: F401 (re-exported)
from mer.stages.model.self_attention import SelfAttentionTower
from mer.stages.model.single import SingleTower

TOWERS = {"single": SingleTower, "dcm": DCMTower, "mind": MINDTower, "sa": SelfAttentionTower,
          "token": InterestTokenTower, "cr": CRTower}
IMPLICIT = ("dcm", "mind", "sa", "token", "pinnersage")  # multi-embedding models with K_im embeddings


def check_variant(model: str, variant: str | None) -> str | None:
    if model not in ALL_MODELS:
        raise MerError(f"unknown model {model!r}: expected one of {', '.join(ALL_MODELS)}")
    variant = variant or DEFAULT_VARIANT.get(model)
    if variant is not None and variant not in VARIANTS.get(model, ()):
        allowed = ", ".join(VARIANTS.get(model, ())) or "none"
        raise MerError(f"model {model!r} has no variant {variant!r} (allowed: {allowed})")
    return variant


def artifact_name(model: str, variant: str | None) -> str:
    """Folder name; CR's default (source) association is the served 'cr'."""
    if variant is None or (model == "cr" and variant == "source"):
        return model
    return f"{model}-{variant}"


def tower_config(cfg: MerConfig, model: str, variant: str | None, *, pre_dim: int, topic_vocab: list[int],
                 id_vocab_size: int = 0) -> TowerConfig:
    t = cfg.train
    c = TowerConfig(model=model, variant=variant, pre_dim=pre_dim, n_topics=len(topic_vocab),
                    id_vocab_size=id_vocab_size, history_encoder=t.history_encoder, route_valid=t.route_valid,
                    cat_buckets=t.cat_buckets, creator_buckets=t.creator_buckets, field_dim=t.field_dim,
                    hidden_dim=t.hidden_dim, dim=t.embed_dim, k=1, routing_iters=t.routing_iters,
                    history_len=cfg.build.history_len, va_fpi=t.va_fpi, sar=t.sar, gumbel_tau=t.gumbel_tau, seed=t.seed,
                    topic_vocab=[int(x) for x in topic_vocab], **DHEN_PRESETS[t.preset])
    if model in ("dcm", "mind", "sa", "token"):
        c.k = t.k_im
    if model == "dcm":
        if variant == "no-vafpi":
            c.va_fpi = False
        elif variant == "no-sar":
            c.sar = False
        elif variant in ("k2", "k4"):
            c.k = int(variant[1:])
    return c


class TwoTower(nn.Module):
    def __init__(self, c: TowerConfig):
        super().__init__()
        self.c = c
        self.item = ItemTower(c)
        self.user = TOWERS[c.model](c, self.item)  # shares psi when the history is encoded by the item tower

    @property
    def association(self) -> str:
        return self.user.association
