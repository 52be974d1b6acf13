"""Parse the DAG folder with a real DagBag and print its shape as one JSON line (@@...)."""
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.perf_counter()
dag = bag.dags.get("mer_daily")
out = {
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "parse_s": t2 - t1,
    "import_s": t1 - t0,
    "heavy": sorted(m for m in ("torch", "pyspark", "faiss", "great_expectations", "sklearn") if m in sys.modules),
}
if dag is not None:
    out.update(
        schedule=str(getattr(dag.timetable, "_expression", dag.timetable)), catchup=dag.catchup, max_active_runs=dag.max_active_runs,
        params=sorted(dag.params.keys()),
        tasks={t.task_id: {"type": type(t).__name__, "up": sorted(t.upstream_task_ids), "retries": t.retries,
                           "backoff": t.retry_exponential_backoff, "trigger": getattr(t.trigger_rule, "value", t.trigger_rule),
                           "outlets": [getattr(o, "name", str(o)) for o in t.outlets],
                           "args": getattr(t, "application_args", None) or getattr(t, "_application_args", None),
                           "conn": getattr(t, "_conn_id", None),
                           "map_index_template": getattr(t, "map_index_template", None),
                           "poke_interval": getattr(t, "poke_interval", None)}
               for t in dag.tasks},
    )
print("@@" + json.dumps(out, default=str))
