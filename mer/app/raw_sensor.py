"""An Airflow sensor that waits until every raw partition a run needs has landed.

On timeout it fails naming what is still missing (``engagement_log/ds=2026-01-15``...), which
Airflow's own timeout message cannot do.
"""
from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from mer.app.pipeline import config_for, missing_raw
from mer.base.errors import ContractError


class RawInputTimeout(ContractError, AirflowFailException):
    """Raw partitions still missing at the sensor's timeout: a MerError (clear message, no
    stack trace needed) that Airflow also treats as a failure not worth retrying."""


class RawPartitionsSensor(BaseSensorOperator):
    template_fields = ("ds",)
    ui_color = "#e8f4fa"

    def __init__(self, *, ds: str = "{{ ds }}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ds = ds
        self._missing: list[str] = []

    def poke(self, context: Any) -> bool:
        cfg = config_for(dict(context["params"]))
        self._missing = missing_raw(cfg, self.ds)
        if self._missing:
            self.log.info("waiting for %d raw partitions under %s: %s", len(self._missing), cfg.raw_dir, _short(self._missing))
        return not self._missing

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            raise RawInputTimeout(
                f"raw input for ds={self.ds} still missing after {self.timeout:g}s: {_short(self._missing)}"
            ) from err


def _short(items: list[str], n: int = 8) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more
