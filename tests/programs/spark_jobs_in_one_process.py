"""Several Spark jobs in one process (one JVM) through the spark-submit entry point: <ds> <job> [<job> ...]."""
import sys

from mer.app.spark_submit import main

ds, jobs = sys.argv[1], sys.argv[2:]
for job in jobs:
    if main([job, "--ds", ds]) != 0:
        raise SystemExit(f"job {job} failed")
