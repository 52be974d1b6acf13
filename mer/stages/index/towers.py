"""The one door to the trained towers (``mer.stages.model.serving``) used by inference, index and publish.

``index.serving_module`` (``MER_INDEX__SERVING_MODULE``) names another module with the same interface
(``SERVED_MODELS``, ``model_dir``, ``load_item_encoder``, ``user_embeddings``); tests use it to plug in a
tiny seeded tower. Spark workers receive the module name explicitly (the JVM's environment is
fixed when the session starts).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from mer.base.config import MerConfig
from mer.base.errors import MerError


def serving(cfg: MerConfig) -> ModuleType:
    name = cfg.index.serving_module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MerError(f"serving module {name!r} cannot be imported ({exc}); train the models first") from None


def served_models(cfg: MerConfig, ds: str) -> dict[str, Path]:
    """Served model name -> its model folder, for the models trained for this run."""
    srv = serving(cfg)
    found = {m: Path(srv.model_dir(cfg, ds, m)) for m in srv.SERVED_MODELS}
    found = {m: p for m, p in found.items() if p.exists()}
    if not found:
        raise MerError(f"no served model ({', '.join(srv.SERVED_MODELS)}) trained for ds={ds} under {cfg.run_dir(ds)}")
    return found
