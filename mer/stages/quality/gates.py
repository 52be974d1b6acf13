"""`mer check STAGE`: Great Expectations gates for raw | training | embeddings.

- raw: the validated logs of the run (``clean_engagement_log``, ``clean_source_interest_log``,
  what the build reads): ids not null, actions known, event_ts on its day, items in the
  catalog, source-interest ids known topics, keys unique.
- training: ``training_examples``: ids not null, enums (segment, split, action), join rate of
  positives to source-interest rows within [join_rate_min, join_rate_max], condition ids known
  topics, every history timestamp before its event.
- embeddings: ``item_embeddings``: one row per catalog item (per model version), finite values,
  L2 norm within 1e-3 of 1, dimension == train.embed_dim.

GX runs in a file-backed context under ``<root>/gx`` over pandas frames (mer/stages/quality/frames.py
says what is derived and sampled). Results: ``<quality_dir>/ds=<ds>/<stage>.json``; GX keeps every
gate's validation results (one per suite and ds) and builds one Data Docs site over all of them at
``<root>/gx/uncommitted/data_docs/local_site/index.html``. A failed suite raises DataQualityError listing every failed
expectation with its column and observed value.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from mer.base.config import MerConfig
from mer.base.errors import DataQualityError, MerError, validate_ds
from mer.base.io import jsonable, write_json_atomic
from mer.stages.quality import STAGES



GX_PROJECT = "gx"  # <root>/gx: GX's file-backed project (suites, checkpoints, validation results, Data Docs)
SITE = "local_site"  # the Data Docs site a file context configures by default


def gx_dir(cfg: MerConfig) -> Path:
    return cfg.root / GX_PROJECT


def data_docs_index(cfg: MerConfig) -> Path:
    """The Data Docs site's index page: every gate's validation results, all runs and ds."""
    return gx_dir(cfg) / "uncommitted" / "data_docs" / SITE / "index.html"


@contextmanager
def _locked(cfg: MerConfig) -> Iterator[None]:
    # Gates of different ds (backfills) may run at once; GX rewrites great_expectations.yml and the
    # Data Docs index on every run, so one gate at a time edits the project.
    path = gx_dir(cfg) / ".mer.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _context(cfg: MerConfig):
    """GX's file-backed context under the data root, so results of every gate, run and ds accumulate."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="file", project_root_dir=str(cfg.root))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    sites = ctx.list_data_docs_sites()
    if sites.get(SITE) != site_config():
        (ctx.update_data_docs_site if SITE in sites else ctx.add_data_docs_site)(SITE, site_config())
    return ctx


def site_config() -> dict:
    """The Data Docs site, rendered by views that fetch nothing from the network (docs_site.py says why)."""
    view = {"module_name": "mer.stages.quality.docs_site", "class_name": "OfflinePageView"}
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": f"uncommitted/data_docs/{SITE}/"},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": view | {"class_name": "OfflineIndexPageView"}},
        "site_section_builders": {"expectations": {"view": view}, "validations": {"view": view}},
    }


def _observed(result: dict) -> object:
    if result.get("observed_value") is not None:
        return result["observed_value"]
    if "unexpected_count" in result:
        return {"unexpected_count": result.get("unexpected_count"),
                "examples": list(result.get("partial_unexpected_list") or [])[:5]}
    return None


# Derived check columns (mer/stages/quality/frames.py) in words, and the config knob behind a bound.
MEANING = {
    "has_condition": "join rate of positive engagements to source_interest_log",
    "emb_finite": "embeddings with NaN/inf values",
    "emb_norm": "embedding L2 norm",
    "emb_dim": "embedding dimension",
}
BOUND_NAMES = {"has_condition": ("build.join_rate_min", "build.join_rate_max")}


def describe_failure(table: str, r: dict) -> str:
    column = r.get("column") or ",".join(r.get("column_list") or []) or "-"
    out = f"{table}: {r['expectation']} (column {column}) observed {r['observed']}"
    meaning = MEANING.get(column)
    lo, hi = r.get("min_value"), r.get("max_value")
    if lo is not None or hi is not None:
        lo_name, hi_name = BOUND_NAMES.get(column, ("min", "max"))
        bounds = f"expected {lo_name}={lo} <= value <= {hi_name}={hi}"
        meaning = f"{meaning}; {bounds}" if meaning else bounds
    return f"{out} [{meaning}]" if meaning else out


def validate_frame(ctx, stage: str, frame, expectations: list, ds: str) -> list[dict]:
    """One table through one suite via a Checkpoint (which also updates Data Docs)."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    name = f"{stage}-{frame.table}"
    # Get-or-create the data wiring (a re-run must not fail on "already exists"); the suite, validation
    # definition and checkpoint are replaced, since a suite's parameters (known ids, counts) follow the ds.
    sources = ctx.data_sources.all()
    source = sources["mer"] if "mer" in sources else ctx.data_sources.add_pandas("mer")
    asset = source.get_asset(name) if name in source.get_asset_names() else source.add_dataframe_asset(name)
    names = {b.name for b in asset.batch_definitions}
    batch = asset.get_batch_definition("frame") if "frame" in names else asset.add_batch_definition_whole_dataframe("frame")
    suite = gx.ExpectationSuite(name=name, expectations=list(expectations))
    vd = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[vd],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=[SITE])],
            result_format={"result_format": "SUMMARY"},
        )
    )
    # One result per (suite, ds): run time = the ds, so a re-run of a ds replaces its result.
    run_id = RunIdentifier(run_name=f"ds={ds}", run_time=datetime.fromisoformat(ds).replace(tzinfo=timezone.utc))
    run = checkpoint.run(batch_parameters={"dataframe": frame.df}, run_id=run_id)
    out = []
    for vr in run.run_results.values():
        for r in vr.results:
            kw = r.expectation_config.kwargs
            out.append(
                jsonable(
                    {
                        "expectation": r.expectation_config.type,
                        "column": kw.get("column"),
                        "column_list": kw.get("column_list"),
                        "min_value": kw.get("min_value"),
                        "max_value": kw.get("max_value"),
                        "success": bool(r.success),
                        "observed": _observed(r.result or {}),
                    }
                )
            )
    return out


def run(cfg: MerConfig, ds: str, stage: str) -> dict:
    from mer.stages.quality.frames import FRAMES
    from mer.stages.quality.suites import SUITES

    validate_ds(ds)
    if stage not in STAGES:
        raise MerError(f"unknown quality stage {stage!r}: expected one of {', '.join(STAGES)}")
    t0 = time.perf_counter()
    frames = FRAMES[stage](cfg, ds)
    tables, failures = {}, []
    with _locked(cfg):
        ctx = _context(cfg)
        for frame in frames:
            results = validate_frame(ctx, stage, frame, SUITES[frame.table](cfg, frame), ds)
            failed = [r for r in results if not r["success"]]
            failures += [describe_failure(frame.table, r) for r in failed]
            tables[frame.table] = {
                "rows": frame.rows,
                "checked_rows": len(frame.df),
                "expectations": len(results),
                "failed": len(failed),
                "results": results,
            }
    summary = {
        "ds": ds,
        "stage": stage,
        "success": not failures,
        "tables": tables,
        "failures": failures,
        "data_docs": str(data_docs_index(cfg)),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json_atomic(cfg.quality_dir / f"ds={ds}" / f"{stage}.json", summary)
    if failures:
        raise DataQualityError(
            f"quality gate {stage!r} failed for ds={ds} ({len(failures)} expectation(s)): " + "; ".join(failures)
        )
    return {k: v for k, v in summary.items() if k != "tables"} | {
        "tables": {t: {k: v for k, v in d.items() if k != "results"} for t, d in tables.items()}
    }
