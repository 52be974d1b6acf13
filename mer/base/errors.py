"""Errors that carry a message meant for people, not a stack trace.

The CLI prints ``str(err)`` and exits non-zero; Airflow shows it as the task failure reason.
"""
from __future__ import annotations

import re
from datetime import date


class MerError(Exception):
    """Base class: the message names what was wrong (table, column, value)."""


class ConfigError(MerError):
    """The typed config refused its input: names the variable or config-file key and the value."""


class DataQualityError(MerError):
    """Bad rows over threshold, or a failed Great Expectations suite."""


class ContractError(MerError):
    """Input does not match the raw input contract (schema drift, missing partition)."""


class GateError(MerError):
    """A quality gate (blessing, recall) refused to let the run continue."""


class NotApplicable(MerError):
    """The stage has nothing to do on this data (CR on a data set that logs no explicit interests): Airflow marks
    the task skipped with this message, ``mer compare`` leaves the model out and says why, the CLI exits 2."""


class StorageError(MerError):
    """Object storage: missing credentials, checksum mismatch, unreachable endpoint."""


_DS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+\-]{0,127}$")


def validate_ds(ds: str) -> str:
    """A logical date 'YYYY-MM-DD'; anything else (e.g. '../x') is refused before it reaches a path."""
    if not isinstance(ds, str) or not _DS_RE.fullmatch(ds):
        raise MerError(f"invalid ds {ds!r}: expected YYYY-MM-DD")
    try:
        date.fromisoformat(ds)
    except ValueError as exc:
        raise MerError(f"invalid ds {ds!r}: {exc}") from None
    return ds


def validate_run_id(run_id: str) -> str:
    """Run ids become object-key segments: no slashes, no '..', bounded length."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id) or ".." in run_id:
        raise MerError(f"invalid run id {run_id!r}: letters, digits and _.:+- only, no '..' or '/'")
    return run_id
