"""One place that builds the SparkSession, so local runs, tests and spark-submit agree on settings."""
from __future__ import annotations

import os
import sys

from mer.base.config import MerConfig


def project_defaults(cfg: MerConfig) -> dict[str, str]:
    """The session settings the project wants when nobody said otherwise.

    UTC session time zone: the raw contract stores naive UTC timestamps and a day boundary
    must not move with the machine's zone. Dynamic partition overwrite: re-running a ds
    replaces only that ds.
    """
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.warehouse.dir": str(cfg.root / "spark-warehouse"),
    }


def hive_defaults(cfg: MerConfig) -> dict[str, str]:
    """The persistent Hive metastore of ``mer serve-sql``: embedded Derby under the data root (bundled in the
    pyspark wheel; one JVM at a time). A launcher conf wins, e.g. ``--conf
    spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:postgresql://...`` for a shared metastore."""
    db = str(cfg.root / "metastore_db")
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={db};create=true",
    }


def get_spark(cfg: MerConfig, app_name: str = "mer", *, hive: bool = False, extra: dict[str, str] | None = None):
    """The session, with the project defaults filling in only what the launcher left unset.

    ``SparkSession.builder.config`` overrides everything, ``spark-submit --conf`` included, so each
    default is set only when the driver JVM's conf (spark-submit's --master/--conf, spark-defaults.conf,
    PYSPARK_SUBMIT_ARGS, all visible as ``SparkConf()`` once the JVM runs) does not already hold the key.
    ``hive``: the persistent metastore (hive_defaults), only for the SQL server and registration, so the
    jobs and tests pay no Derby start-up. ``extra``: settings the caller requires (the SQL server's plugin
    and the ports its command line names), set even when the launcher gave the key.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    # Python workers (UDFs, mapInArrow) must run this interpreter, with pyarrow/torch installed,
    # not whatever `python3` is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Start (or, under spark-submit, attach to: PYSPARK_GATEWAY_PORT) the driver JVM before building the
    # session, so its conf can be read. The master, the driver heap and the app name are fixed at launch;
    # they go first on the launcher's command line and PYSPARK_SUBMIT_ARGS (--master, --driver-memory,
    # --name, --conf) comes after them and wins. Under spark-submit the JVM already runs and this is unused.
    # (spark-defaults.conf fills only keys the command line left unset, so it loses on these three.)
    launch = SparkConf(loadDefaults=False).setAll([
        ("spark.master", cfg.spark.master),
        ("spark.driver.memory", cfg.spark.driver_memory),
        ("spark.app.name", app_name),
    ])
    SparkContext._ensure_initialized(conf=launch)
    preset = SparkConf()  # loadDefaults: the JVM's spark.* properties, i.e. what the launcher was given
    builder = SparkSession.builder
    defaults = project_defaults(cfg) | (hive_defaults(cfg) if hive else {})
    if hive:
        # Derby writes derby.log (and resolves relative paths) in the JVM's working directory unless told:
        # keep both under the root. System properties, read when Derby boots at the first metastore call.
        system = SparkContext._jvm.java.lang.System
        system.setProperty("derby.system.home", str(cfg.root))
        system.setProperty("derby.stream.error.file", str(cfg.root / "derby.log"))
    for key, value in defaults.items():
        if not preset.contains(key):
            builder = builder.config(key, value)
    for key, value in (extra or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
