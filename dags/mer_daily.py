"""mer_daily: yesterday's logs -> validated training data -> blessed towers -> published index.

This file only wires tasks. Each task calls the stage function the CLI calls (one hop: the
``mer.app.cli`` command of the same name), keyed on the run's logical date ``ds``; heavy
libraries (pyspark, torch, faiss) are imported inside the stages when a task runs.

Knobs: DAG params below (None = keep the MER_* environment / config file value); the ``dag`` section
of the typed config (mer/base/config.py): catch-up with ``MER_DAG__CATCHUP=true`` (also
``MER_DAG__START_DATE``, ``MER_DAG__RETRY_DELAY_S``, ``MER_DAG__RAW_WAIT_TIMEOUT_S``);
Spark stages go to a cluster through SparkSubmitOperator when ``MER_DAG__SPARK_CONN`` names an
Airflow connection (e.g. ``spark_default``), else they run in-process.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import (
    Asset,
    CronDataIntervalTimetable,
    Param,
    dag,
    get_current_context,
    task,
)

from mer.app.pipeline import SPARK_JOBS, airflow_stage
from mer.app.raw_sensor import RawPartitionsSensor
from mer.base.config import REPO_ROOT, load_config
from mer.stages.model.names import IMPLICIT_COMPARATORS

_cfg = load_config()
SPARK_CONN = _cfg.dag.spark_conn.strip()
CATCHUP = _cfg.dag.catchup
START = pendulum.parse(_cfg.dag.start_date.isoformat(), tz="UTC")
RAW_WAIT_S = _cfg.dag.raw_wait_timeout_s
RETRY_DELAY_S = _cfg.dag.retry_delay_s
SUBMIT_APP = REPO_ROOT / "mer" / "app" / "spark_submit.py"
VALIDATED_TABLES = ("quarantine", "clean_engagement_log", "clean_source_interest_log")
TRAINING_TABLES = ("cr_triples", "training_examples", "item_frequency", "eval_corpus", "item_neighbors",
                   "item_factors")
# Fitted every run (seconds each): bless compares the candidate with the strongest of them; `inverted` is the
# explicit-interest control CR is compared with.
SIMPLE_BASELINES = [*_cfg.eval.simple_baselines, "inverted"]


def _table(name: str) -> Asset:
    return Asset(name=f"mer.{name}", uri=_cfg.table(name).as_uri(), group="mer-tables")


PUBLISHED_INDEX = Asset(
    name="mer.published_index", uri=f"s3://{_cfg.publish.bucket}/{_cfg.publish.prefix.strip('/')}", group="mer-index"
)


def _num(kind: str, description: str, **kw) -> Param:
    return Param(None, type=["null", kind], description=description, **kw)


PARAMS = {
    "train_days": _num("integer", "days of logs for training (eval day follows)", minimum=1),
    "history_len": _num("integer", "engaged items kept per user history", minimum=1),
    "k_im": _num("integer", "DCM implicit embeddings per user", minimum=1),
    "k_ex": _num("integer", "CR explicit embeddings (followed topics sampled) per user", minimum=1),
    "epochs": _num("integer", "training epochs per tower", minimum=1),
    "shards": _num("integer", "FAISS index shards", minimum=1),
    "index_key": Param(None, type=["null", "string"], description="FAISS index factory key, or 'auto'"),
    "recall_target": _num("number", "minimum recall@K of every shard vs exact search", minimum=0, maximum=1),
    "bless_margin": _num("number", "HR gain over the single-embedding baseline required to bless"),
    "bless_tolerance": _num("number", "HR drop vs the last blessed model that is tolerated", minimum=0),
    "extra_baselines": Param(list(IMPLICIT_COMPARATORS), type="array",
                             description="more towers to train in parallel: mind, sa, token (the simple baselines "
                                         "of eval.simple_baselines are always fitted: bless must beat them)"),
    "generate_if_absent": Param(False, type="boolean", description="write synthetic logs when raw input is missing"),
}

default_args = {
    "owner": "mer",
    "retries": 2,
    "retry_delay": timedelta(seconds=RETRY_DELAY_S),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=20),
    "execution_timeout": timedelta(hours=4),
}


def _stage(dotted: str, *args):
    return airflow_stage(get_current_context(), dotted, *args)


@dag(
    dag_id="mer_daily",
    # Data-interval schedule: the run for day D starts after D ends and its ds is D.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=START,
    catchup=CATCHUP,
    max_active_runs=1,
    default_args=default_args,
    params=PARAMS,
    tags=["mer", "retrieval"],
    doc_md=__doc__,
)
def mer_daily():
    @task
    def generate_if_absent() -> dict:
        """Synthetic logs for the window's days that have no raw input, when the run asks for them."""
        if not get_current_context()["params"]["generate_if_absent"]:
            return {"generated": False}
        return _stage("mer.app.pipeline:generate_missing")

    # A wait shorter than a minute is poked at its own pace, not after 60 s.
    wait_for_raw = RawPartitionsSensor(
        task_id="wait_for_raw", poke_interval=min(60, RAW_WAIT_S), timeout=RAW_WAIT_S, mode="reschedule"
    )

    if SPARK_CONN:
        from airflow.providers.apache.spark.operators.spark_submit import (
            SparkSubmitOperator,
        )

        @task
        def package_code() -> str:
            """Zip the project's packages for --py-files: executors import the same stage code."""
            from mer.app.spark_submit import package_code

            return str(package_code(load_config().root / "dist"))

        code_zip = package_code()

        def _submit(job: str, outlets: list[Asset]) -> SparkSubmitOperator:
            op = SparkSubmitOperator(
                task_id=job,
                conn_id=SPARK_CONN,
                application=str(SUBMIT_APP),
                py_files=code_zip,
                name=f"mer-{job}-{{{{ ds }}}}",
                application_args=[job, "--ds", "{{ ds }}", "--params", "{{ params.dump() | tojson }}"],
                env_vars={"MER_ROOT": str(_cfg.root)},
                outlets=outlets,
            )
            return op

        validate_raw = _submit("validate_raw", [_table(t) for t in VALIDATED_TABLES])
        training_data = _submit("training_data", [_table(t) for t in TRAINING_TABLES])
        item_inference = _submit("item_inference", [_table("item_embeddings")])
    else:

        @task(outlets=[_table(t) for t in VALIDATED_TABLES])
        def validate_raw() -> dict:
            return _stage(f"{SPARK_JOBS['validate_raw']}:run")

        @task(outlets=[_table(t) for t in TRAINING_TABLES])
        def training_data() -> dict:
            return _stage(f"{SPARK_JOBS['training_data']}:run")

        @task(outlets=[_table("item_embeddings")])
        def item_inference() -> dict:
            return _stage(f"{SPARK_JOBS['item_inference']}:run")

        validate_raw, training_data, item_inference = validate_raw(), training_data(), item_inference()

    @task
    def quality_gate(stage: str) -> dict:
        return _stage("mer.stages.quality.gates:run", stage)

    @task(map_index_template="{{ model }}")  # used where it is mapped (train_baselines, train_simple_baselines)
    def train(model: str, variant: str | None = None) -> dict:
        get_current_context()["model"] = model  # a mapped instance is named by its model in the UI
        return _stage("mer.stages.model.train:run", model, variant)

    @task
    def extra_baselines() -> list[str]:
        return list(get_current_context()["params"]["extra_baselines"] or [])

    @task(trigger_rule="none_failed", outlets=[_table("eval_metrics")])
    def evaluate() -> dict:
        # none_failed: an empty extra_baselines mapping is skipped, not failed.
        return _stage("mer.stages.model.evaluate:run")

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def bless() -> bool:
        """Not blessed: everything up to publish is skipped, LATEST stays; the report still runs."""
        result = _stage("mer.stages.model.bless:run")
        verdict = "blessed" if result.get("blessed") else "NOT blessed"
        print(f"model {verdict}: {result.get('reason', '')}")
        return bool(result.get("blessed"))

    @task
    def shard_numbers() -> list[int]:
        from mer.app.pipeline import config_for

        return list(range(config_for(dict(get_current_context()["params"])).index.shards))

    @task(map_index_template="shard {{ shard }}")
    def build_shard(shard: int) -> dict:
        get_current_context()["shard"] = shard
        return _stage("mer.stages.index.build:run", shard)

    @task
    def recall_gate() -> dict:
        return _stage("mer.stages.index.recall:run")

    @task(outlets=[PUBLISHED_INDEX], retries=4)
    def publish() -> dict:
        return _stage("mer.stages.index.publish:run", get_current_context()["run_id"])

    @task(trigger_rule="none_failed")
    def report() -> dict:
        # none_failed: also renders when bless skipped publishing, and says why.
        return _stage("mer.app.report.render:run")

    gate_raw = quality_gate.override(task_id="gate_raw")("raw")
    gate_training = quality_gate.override(task_id="gate_training")("training")
    gate_embeddings = quality_gate.override(task_id="gate_embeddings")("embeddings")

    extra = extra_baselines()
    trained = [
        train.override(task_id="train_dcm")("dcm"),
        train.override(task_id="train_cr")("cr", "source"),
        train.override(task_id="train_single")("single"),
        train.override(task_id="train_baselines").expand(model=extra),
        train.override(task_id="train_simple_baselines").expand(model=SIMPLE_BASELINES),
    ]
    blessed = bless()
    n_shards = shard_numbers()
    shards = build_shard.expand(shard=n_shards)
    published = publish()

    generate_if_absent() >> wait_for_raw >> validate_raw >> gate_raw >> training_data >> gate_training
    gate_training >> extra
    gate_training >> trained >> evaluate() >> blessed >> item_inference >> gate_embeddings
    gate_embeddings >> n_shards
    gate_embeddings >> shards >> recall_gate() >> published >> report()


mer_daily()
