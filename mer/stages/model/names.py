"""Model and variant names, torch-free so the CLI can offer them as choices without loading the towers."""
from __future__ import annotations

TRAINED = ("single", "dcm", "mind", "sa", "token", "cr")  # user towers (mer/stages/model/zoo.py TOWERS)
# Non-neural baselines (mer/stages/model/baselines.py): fitted on the train split, scored and compared like the towers.
BASELINES = ("popularity", "itemknn", "pretrained", "als", "inverted")
ALL_MODELS = TRAINED + ("pinnersage",) + BASELINES
# The paper's implicit multi-interest comparators (Table 1): the candidate tower (DCM) is compared with each.
IMPLICIT_COMPARATORS = ("mind", "sa", "token")
VARIANTS = {"cr": ("source", "item", "logged"), "dcm": ("no-vafpi", "no-sar", "k2", "k4", "k7", "no-recent"),
            "itemknn": ("sum", "max"),
            "pretrained": ("mean", "max")}
DEFAULT_VARIANT = {"cr": "source", "itemknn": "sum", "pretrained": "mean"}
