"""An item tower whose bulk (Arrow) path disagrees with its eager path on some items: what a badly
exported or mis-batched tower looks like to the parity gate of ``mer infer``. Plugged in with
``cfg.index.serving_module = "tests.corrupt_tower_fixture"``; Spark workers import it by name.
"""
from __future__ import annotations

import numpy as np

from tests import item_tower_fixture as _fx
from tests.item_tower_fixture import (  # noqa: F401 (the serving interface)
    SERVED_MODELS,
    K,
    make_models,
    model_dir,
    user_embeddings,
)

EVERY = 17  # items whose id is a multiple of this come out of the Arrow path off by OFFSET
OFFSET = 0.01


class CorruptItemEncoder(_fx.ItemEncoder):
    def encode_arrow(self, batch) -> np.ndarray:
        y = super().encode_arrow(batch)
        y[batch.column("item_id").to_numpy() % EVERY == 0, 0] += OFFSET
        return y


def load_item_encoder(folder) -> CorruptItemEncoder:
    return CorruptItemEncoder(folder)
