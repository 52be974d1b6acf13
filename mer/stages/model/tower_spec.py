"""What a user tower declares about its training data and configuration, so the training loop (train.py) and
the config builder (zoo.tower_config) read declarations instead of branching on model names.

Each tower class carries ``SPECS``: variant (None = the plain model) -> TowerSpec. A new tower plugs in by
declaring its specs and joining zoo.TOWERS (and names.py for the CLI); train.py does not change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class TowerSpec:
    # Where a training row's condition comes from: None = the tower takes no condition; "logged" = the row's
    # logged condition_id (the train split and the step budget are read for rows that have one); "item" = a
    # topic sampled from the target item's topics (Lin et al.). A conditioned tower trains only on rows with a
    # known condition and is early-stopped on validation rows with a logged condition_id. "logged_or_item" = the
    # logged condition where the row has one, else an item-sampled topic: every row trains, and the rows
    # the logging knows about carry what the user actually came for.
    condition: Literal["logged", "item", "logged_or_item"] | None = None
    multi_interest: bool = False  # K = train.k_im embeddings per user (else one; CR: one per condition)
    overrides: dict = field(default_factory=dict)  # TowerConfig fields the variant sets (e.g. {"sar": False})

    @property
    def conditioned(self) -> bool:
        return self.condition is not None

    @property
    def logged_condition_only(self) -> bool:
        """Only rows with a logged condition_id are train rows (they make the step budget too)."""
        return self.condition == "logged"
