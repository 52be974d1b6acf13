"""Model names -> user-tower classes, variants, and the two-tower container saved as one state dict."""
from __future__ import annotations

from collections.abc import Callable

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
from mer.stages.model.tower_spec import TowerSpec

TOWERS = {"single": SingleTower, "dcm": DCMTower, "mind": MINDTower, "sa": SelfAttentionTower,
          "token": InterestTokenTower, "cr": CRTower}


def _fit_pinnersage(cfg: MerConfig, ds: str, model: str, variant: str | None) -> dict:
    from mer.stages.model.pinnersage import run

    return run(cfg, ds)


def _fit_baseline(cfg: MerConfig, ds: str, model: str, variant: str | None) -> dict:
    from mer.stages.model.baselines import fit_baseline

    return fit_baseline(cfg, ds, model, variant)


# Models fitted without the training loop: name -> fit(cfg, ds, model, variant) writing the model folder.
# (Imported on call: the clustering and sparse-matrix libraries load only for the model that needs them.)
FITTERS: dict[str, Callable[[MerConfig, str, str, str | None], dict]] = {
    "pinnersage": _fit_pinnersage, **{b: _fit_baseline for b in BASELINES}}


def tower_spec(model: str, variant: str | None) -> TowerSpec:
    """What the tower (and variant) declares about its training data: the training loop reads this."""
    if model not in TOWERS:
        raise MerError(f"model {model!r} is not a trained tower: expected one of {', '.join(TOWERS)}")
    specs = TOWERS[model].SPECS
    if variant not in specs:
        allowed = ", ".join(str(v) for v in specs)
        raise MerError(f"model {model!r} has no variant {variant!r} (allowed: {allowed})")
    return specs[variant]


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
                    recency=t.recency, pre_skip=t.pre_skip, residual=t.residual, anchor=t.anchor,
                    max_rule_weight=t.max_rule_weight, featureless_fallback=t.featureless_fallback, scaled_memory=True,
                    topic_vocab=[int(x) for x in topic_vocab], **DHEN_PRESETS[t.preset])
    spec = tower_spec(model, variant)
    if spec.multi_interest:
        c.k = t.k_im
    if model == "dcm" and t.history_encoder == "item_tower":  # the history's encodings are then item embeddings
        c.recent_queries, c.recent_scale = t.recent_queries, t.recent_scale
    for key, value in spec.overrides.items():  # the variant's ablation (after k_im: "k2" sets k itself)
        setattr(c, key, value)
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
