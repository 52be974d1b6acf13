"""The one door to the trained towers (``mer.stages.model.serving``) used by inference, index and publish.

``MER_SERVING_MODULE`` names another module with the same interface (``SERVED_MODELS``,
``model_dir``, ``load_item_encoder``, ``user_embeddings``); tests use it to plug in a tiny
seeded tower. Spark workers receive the module name explicitly (the JVM's environment is
fixed when the session starts).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from mer.base.config import MerConfig
from mer.base.errors import MerError

SERVING_ENV = "MER_SERVING_MODULE"
DEFAULT_SERVING = "mer.stages.model.serving"


def serving_module_name() -> str:
    return os.environ.get(SERVING_ENV, DEFAULT_SERVING)


def serving(name: str | None = None) -> ModuleType:
    name = name or serving_module_name()
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MerError(f"serving module {name!r} cannot be imported ({exc}); train the models first") from None


def served_models(cfg: MerConfig, ds: str, name: str | None = None) -> dict[str, Path]:
    """Served model name -> its model folder, for the models trained for this run."""
    srv = serving(name)
    found = {m: Path(srv.model_dir(cfg, ds, m)) for m in srv.SERVED_MODELS}
    found = {m: p for m, p in found.items() if p.exists()}
    if not found:
        raise MerError(f"no served model ({', '.join(srv.SERVED_MODELS)}) trained for ds={ds} under {cfg.run_dir(ds)}")
    return found
