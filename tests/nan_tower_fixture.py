"""A broken item tower for the fault suite: ``tests.item_tower_fixture`` whose encoder emits NaN
for every 7th item (a diverged or badly exported tower). Plugged in with
``index.serving_module = "tests.nan_tower_fixture"``; Spark workers import it by name.
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

NAN_EVERY = 7


class NanItemEncoder(_fx.ItemEncoder):
    def forward(self, x: np.ndarray) -> np.ndarray:
        y = super().forward(x)
        y[::NAN_EVERY] = np.nan
        return y


def load_item_encoder(folder) -> NanItemEncoder:
    return NanItemEncoder(folder)
