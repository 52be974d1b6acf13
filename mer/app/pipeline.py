"""What the DAG needs besides wiring: config from run params, the raw-partition check, stage records.

Kept free of Airflow, Spark, torch and FAISS imports so the DAG file parses fast and the
helpers are testable on their own. Every stage the DAG runs goes through :func:`run_stage`,
which writes ``<run_dir>/stages/<task>.json`` (status, seconds, the stage's summary): the
run report is rendered from those records, and a re-run of a task overwrites its own record.
"""
from __future__ import annotations

import importlib
import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from mer.base.config import MerConfig, load_config
from mer.base.contract import LOG_TABLES, SNAPSHOT_TABLES
from mer.base.errors import MerError, NotApplicable, validate_ds
from mer.base.io import jsonable, list_partitions, write_json_atomic

# DAG param -> config fields it overrides. ``None`` (the param default) keeps the config value,
# so MER_* environment variables and MER_CONFIG_FILE still decide unless a run says otherwise.
PARAM_FIELDS: dict[str, tuple[str, ...]] = {
    "train_days": ("build.train_days",),
    "history_len": ("build.history_len",),
    "k_im": ("train.k_im",),
    "k_ex": ("train.k_ex",),
    "epochs": ("train.epochs",),
    "shards": ("index.shards",),
    "index_key": ("index.index_key",),
    "recall_target": ("index.recall_target",),
    "bless_margin": ("eval.bless_margin",),
    "bless_tolerance": ("eval.bless_tolerance",),
}

# The Spark stages, by the module the CLI fixes for each; the DAG and mer/app/spark_submit.py share it.
SPARK_JOBS: dict[str, str] = {
    "validate_raw": "mer.stages.spark_jobs.validate_raw",
    "training_data": "mer.stages.spark_jobs.training_data",
    "item_inference": "mer.stages.spark_jobs.item_inference",
}


def config_for(params: dict[str, Any] | None = None, **base: Any) -> MerConfig:
    """``load_config()`` with the run's params applied on top (unknown params are ignored)."""
    cfg = load_config(**base)
    sections: dict[str, dict[str, Any]] = {}
    for name, value in (params or {}).items():
        if value is None or name not in PARAM_FIELDS:
            continue
        for path in PARAM_FIELDS[name]:
            section, field = path.split(".")
            sections.setdefault(section, {})[field] = value
    for section, update in sections.items():
        current = getattr(cfg, section)
        # Validate through the model so a wrong type fails here, naming the param.
        try:
            setattr(cfg, section, type(current).model_validate({**current.model_dump(), **update}))
        except ValueError as err:
            raise MerError(f"DAG params: invalid value for {sorted(update)} in config section {section!r}: {err}") from None
    return cfg


def window(cfg: MerConfig, ds: str) -> list[str]:
    """Days of logs one run reads: its train days then its eval days (ending at ``ds``)."""
    from mer.stages.spark_jobs.warehouse import (
        window_days,  # the build's own definition (no Spark import)
    )

    train, evaluation = window_days(cfg, validate_ds(ds))
    return train + evaluation


def missing_raw(cfg: MerConfig, ds: str) -> list[str]:
    """``table/ds=...`` entries the run needs and does not find; empty when it can start.

    Logs need every day of the window; snapshots need one partition at or before ``ds``.
    """
    missing: list[str] = []
    days = window(cfg, ds)
    for table in LOG_TABLES:
        have = set(list_partitions(cfg.raw_table(table)))
        missing += [f"{table}/ds={d}" for d in days if d not in have]
    for table in SNAPSHOT_TABLES:
        if not any(p <= ds for p in list_partitions(cfg.raw_table(table))):
            missing.append(f"{table}/ds<={ds}")
    return missing


def generate_missing(cfg: MerConfig, ds: str) -> dict[str, Any]:
    """Synthetic raw input for the days of ``ds``'s window that have none (the DAG's ``generate_if_absent``).

    Only missing partitions are written: a partition that exists may already have been read by another
    run, so it is never replaced (a backfill or a later end date must not change an earlier run's input).
    """
    from datetime import date

    from mer.stages.datagen.synthetic import generate

    missing = missing_raw(cfg, ds)
    if not missing:
        return {"generated": False, "missing": 0}
    gen = cfg.generate.model_copy(update={"end_ds": date.fromisoformat(ds), "days": len(window(cfg, ds))})
    return {"generated": True, "missing": len(missing), **generate(cfg.model_copy(update={"generate": gen}), only_missing=True)}


def stages_dir(cfg: MerConfig, ds: str) -> Path:
    return cfg.run_dir(ds) / "stages"


def record_stage(cfg: MerConfig, ds: str, task: str, record: dict[str, Any]) -> None:
    write_json_atomic(stages_dir(cfg, ds) / f"{task}.json", {"task": task, "ds": ds, **record})


def read_stages(cfg: MerConfig, ds: str) -> dict[str, dict[str, Any]]:
    """Every stage record of one run, by task name (mapped tasks: ``build_shard.0`` ...)."""
    out: dict[str, dict[str, Any]] = {}
    folder = stages_dir(cfg, ds)
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            try:
                out[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a record being replaced right now; the report shows the others
    return out


def run_stage(cfg: MerConfig, ds: str, task: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(cfg, ds, *args)``, recording start, seconds, status and summary for the report."""
    started = time.time()
    status, error, result = "failed", None, None
    try:
        result = fn(cfg, ds, *args)
        status = "success"
        return result
    except BaseException as err:
        error = str(err) if isinstance(err, MerError) else "".join(traceback.format_exception_only(err)).strip()
        if isinstance(err, NotApplicable):
            status = "skipped"
        raise
    finally:
        record_stage(
            cfg,
            ds,
            task,
            {
                "status": status,
                "started": started,
                "seconds": round(time.time() - started, 3),
                "error": error,
                "summary": result if isinstance(result, dict) else {"result": result},
            },
        )


def stage_function(dotted: str) -> Callable[..., Any]:
    """``module:function`` -> the function, imported only when the task runs."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def task_name(context: dict[str, Any]) -> str:
    ti = context["ti"]
    index = getattr(ti, "map_index", -1)
    return ti.task_id if index is None or index < 0 else f"{ti.task_id}.{index}"


def airflow_stage(context: dict[str, Any], dotted: str, *args: Any) -> Any:
    """Run one stage for the Airflow task in ``context``: config from its params, keyed on its ``ds``.

    A data or gate failure (bad rows, failed expectations, refused gate, missing input) will fail
    the same way on every retry, so it fails the task at once with its message; a stage with nothing
    to do on this data (``NotApplicable``) skips the task with its message; anything else
    (an unreachable endpoint, a killed executor) is left to the task's retries.
    """
    from mer.base.errors import ContractError, DataQualityError, GateError

    cfg = config_for(dict(context["params"]))
    ds = validate_ds(context["ds"])
    try:
        return jsonable(run_stage(cfg, ds, task_name(context), stage_function(dotted), *args))
    except NotApplicable as err:
        from airflow.sdk.exceptions import AirflowSkipException

        # Skipped, not failed: downstream tasks with trigger rule none_failed (evaluate, report) still run.
        raise AirflowSkipException(str(err)) from err
    except (ContractError, DataQualityError, GateError) as err:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{type(err).__name__}: {err}") from err
