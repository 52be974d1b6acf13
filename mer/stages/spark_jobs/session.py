"""One place that builds the SparkSession, so local runs, tests and spark-submit agree on settings."""
from __future__ import annotations

import os
import sys

from mer.base.config import MerConfig


def get_spark(cfg: MerConfig, app_name: str = "mer"):
    """Local session by default; under spark-submit the master comes from the submit conf.

    UTC session time zone: the raw contract stores naive UTC timestamps and a day boundary
    must not move with the machine's zone. Dynamic partition overwrite: re-running a ds
    replaces only that ds.
    """
    from pyspark.sql import SparkSession

    # Python workers (UDFs, mapInArrow) must run this interpreter, with pyarrow/torch installed,
    # not whatever `python3` is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    # Under spark-submit (PythonRunner sets PYSPARK_GATEWAY_PORT for the driver) the master comes from
    # --master; setting one here would silently run a cluster submission in local mode.
    submitted = bool(os.environ.get("SPARK_SUBMIT_MODE") or os.environ.get("PYSPARK_GATEWAY_PORT"))
    if not submitted and "spark.master" not in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
        builder = builder.master(os.environ.get("MER_SPARK_MASTER", cfg.build.spark_master))
    spark = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.shuffle.partitions", str(cfg.build.shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", os.environ.get("MER_SPARK_DRIVER_MEMORY", "2g"))
        .config("spark.sql.warehouse.dir", str(cfg.root / "spark-warehouse"))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark
