"""Table contracts: the raw input contract (SPEC.md) and every table the pipeline produces.

Raw tables live under ``<root>/raw/<table>/ds=YYYY-MM-DD/`` (event day for logs, snapshot day
for snapshots). Derived tables live under ``<root>/warehouse/<table>/ds=YYYY-MM-DD/`` where
``ds`` is the *run's* logical date: a re-run of a date overwrites that partition only.
Timestamps are UTC, microsecond precision, stored without a zone (Spark runs with UTC session TZ).
"""
from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us")

# ---------------------------------------------------------------- raw input contract
ACTIONS = ("impression", "click", "save", "hide")
POSITIVE_ACTIONS = ("click", "save")
NEGATIVE_ACTIONS = ("hide",)
SURFACES = ("home_feed", "search", "related")
RETRIEVERS = ("followed_topic", "collaborative", "popular", "fresh")

ENGAGEMENT_LOG = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_ts", TS),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("action", pa.string()),
        ("request_id", pa.string()),
        ("surface", pa.string()),
    ]
)

SOURCE_INTEREST_LOG = pa.schema(
    [
        ("request_id", pa.string()),
        ("item_id", pa.int64()),
        ("retriever", pa.string()),
        ("source_interest_id", pa.int64()),  # nullable: only the followed-topic retriever sets it
    ]
)

USER_FOLLOWS = pa.schema(
    [
        ("user_id", pa.int64()),
        ("topic_id", pa.int64()),
        ("followed_ts", TS),
    ]
)

ITEM_FEATURES = pa.schema(
    [
        ("item_id", pa.int64()),
        ("pretrained_embedding", pa.list_(pa.float32())),  # fixed length per dataset; null = missing
        ("category_id", pa.int64()),
        ("creator_id", pa.int64()),
        ("topic_ids", pa.list_(pa.int64())),
        ("topic_scores", pa.list_(pa.float32())),
    ]
)

TOPICS = pa.schema(
    [
        ("topic_id", pa.int64()),
        ("name", pa.string()),
    ]
)

RAW_TABLES: dict[str, pa.Schema] = {
    "engagement_log": ENGAGEMENT_LOG,
    "source_interest_log": SOURCE_INTEREST_LOG,
    "user_follows": USER_FOLLOWS,
    "item_features": ITEM_FEATURES,
    "topics": TOPICS,
}
# Snapshot tables: the pipeline reads the latest partition <= the run's ds.
SNAPSHOT_TABLES = ("user_follows", "item_features", "topics")
LOG_TABLES = ("engagement_log", "source_interest_log")

# ---------------------------------------------------------------- derived tables (warehouse)
QUARANTINE = pa.schema(
    [
        ("source_table", pa.string()),
        ("source_ds", pa.string()),
        ("reason", pa.string()),  # e.g. null_id, unknown_item, unknown_action, ts_outside_ds, duplicate_event_id
        ("column", pa.string()),
        ("row_json", pa.string()),
    ]
)

CR_TRIPLES = pa.schema(
    [
        ("condition_id", pa.int64()),  # source_interest_id logged at serving time
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("event_ts", TS),
        ("action", pa.string()),
        ("request_id", pa.string()),
        ("event_date", pa.string()),
    ]
)

TRAINING_EXAMPLES = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),  # the target (positive engagement)
        ("event_ts", TS),
        ("action", pa.string()),
        ("event_date", pa.string()),
        ("hist_item_ids", pa.list_(pa.int64())),  # last N engaged items strictly before event_ts, oldest first
        ("hist_actions", pa.list_(pa.string())),
        ("hist_ts", pa.list_(TS)),
        ("hist_valid", pa.list_(pa.bool_())),  # item has valid features AND action is not negative
        ("condition_id", pa.int64()),  # nullable: source interest when a followed-topic retriever served it
        ("segment", pa.string()),  # core | non_core
        ("split", pa.string()),  # train | val (the day before the eval day) | eval
    ]
)

ITEM_FREQUENCY = pa.schema(
    [
        ("item_id", pa.int64()),
        ("count", pa.int64()),
        ("prob", pa.float64()),  # count / total positives in the train split (logQ correction)
    ]
)

EVAL_CORPUS = pa.schema(
    [
        ("item_id", pa.int64()),
        ("rank", pa.int64()),
        ("count", pa.int64()),
    ]
)

ITEM_NEIGHBORS = pa.schema(
    [
        ("item_id", pa.int64()),
        ("neighbor_id", pa.int64()),
        ("score", pa.float64()),  # cosine co-engagement over train-split users: c(i,j) / sqrt(n_i * n_j)
        ("rank", pa.int64()),  # 1 = best neighbour of item_id (top build.neighbors_top_m kept)
    ]
)

ITEM_EMBEDDINGS = pa.schema(
    [
        ("model_version", pa.string()),
        ("item_id", pa.int64()),
        ("embedding", pa.list_(pa.float32())),
    ]
)
# item_embeddings files are bucketed by index shard (mer.stages.index.shards.assign_shards of item_id
# modulo index.shards), one file per (inference task, shard), flat in the ds partition: a shard build
# opens only its bucket's files, while Spark / pyarrow / DuckDB still read the partition as one table.
# The shard count is in the name, so a build under another index.shards is refused, not mis-read.
ITEM_EMBEDDINGS_FILE = "shard-{shard:05d}-of-{shards:05d}.part-{part:05d}.parquet"

EVAL_METRICS = pa.schema(
    [
        ("model", pa.string()),
        ("variant", pa.string()),
        ("split", pa.string()),  # val (the day before ds: early stopping, bless) | eval (ds, scored once)
        ("metric", pa.string()),  # hr@K, hr_novel@K (target not in the user's history), filtered_hr@K, ...
        ("segment", pa.string()),
        ("value", pa.float64()),
    ]
)

EVAL_INTERVALS = pa.schema(
    [
        ("name", pa.string()),  # the model's artifact name (cr = CR with the source association, itemknn-sum, ...)
        ("model", pa.string()),
        ("variant", pa.string()),
        ("reference", pa.string()),  # single | best_baseline
        ("reference_model", pa.string()),  # the model that reference names (best_baseline: picked on the val day)
        ("metric", pa.string()),
        ("records", pa.string()),  # all | novel
        ("segment", pa.string()),
        ("n", pa.int64()),  # eval records both models were scored on
        ("value", pa.float64()),
        ("reference_value", pa.float64()),
        ("ratio", pa.float64()),  # value / reference_value
        ("lo", pa.float64()),  # paired bootstrap 95% interval of the ratio
        ("hi", pa.float64()),
    ]
)

TUNE_TRIALS = pa.schema(
    [
        ("model", pa.string()),  # artifact name (dcm, cr, cr-item, ...)
        ("trial", pa.int64()),
        ("params", pa.string()),  # JSON of the sampled settings (mer/base/config.py TrainConfig names)
        ("val_hr_at_100", pa.float64()),  # best validation-day HR@100 of the trial (the objective)
        ("steps", pa.int64()),
        ("seconds", pa.float64()),
    ]
)

# Validated logs (stage 1 output, what the build reads): the raw columns + the event's day.
# For source_interest_log the event day is its raw partition (the serving day).
CLEAN_ENGAGEMENT_LOG = ENGAGEMENT_LOG.append(pa.field("event_date", pa.string()))
CLEAN_SOURCE_INTEREST_LOG = SOURCE_INTEREST_LOG.append(pa.field("event_date", pa.string()))

DERIVED_TABLES: dict[str, pa.Schema] = {
    "clean_engagement_log": CLEAN_ENGAGEMENT_LOG,
    "clean_source_interest_log": CLEAN_SOURCE_INTEREST_LOG,
    "quarantine": QUARANTINE,
    "cr_triples": CR_TRIPLES,
    "training_examples": TRAINING_EXAMPLES,
    "item_frequency": ITEM_FREQUENCY,
    "eval_corpus": EVAL_CORPUS,
    "item_neighbors": ITEM_NEIGHBORS,
    "item_embeddings": ITEM_EMBEDDINGS,
    "eval_metrics": EVAL_METRICS,
    "eval_intervals": EVAL_INTERVALS,
    "tune_trials": TUNE_TRIALS,
}


# The command that writes each table, for "missing partition" messages that say what to run.
WRITTEN_BY: dict[str, str] = {
    **{t: "mer generate (synthetic) or mer ingest movielens, or land the upstream export" for t in RAW_TABLES},
    **{t: "mer validate" for t in ("clean_engagement_log", "clean_source_interest_log", "quarantine")},
    **{t: "mer build" for t in ("cr_triples", "training_examples", "item_frequency", "eval_corpus", "item_neighbors")},
    "item_embeddings": "mer infer",
    "eval_metrics": "mer evaluate",
    "eval_intervals": "mer evaluate",
    "tune_trials": "mer tune",
}


def missing_partition(table: str, ds: str | list[str], where: object) -> str:
    """One line naming the table, the missing day(s), where they were looked for and what writes them."""
    days = [ds] if isinstance(ds, str) else list(ds)
    which = f"partition ds={days[0]} is" if len(days) == 1 else f"{len(days)} partitions are ({', '.join(days)})"
    hint = WRITTEN_BY.get(table)
    return f"table {table}: {which} missing under {where}" + (f"; run `{hint}` for that day first" if hint else "")



# ---------------------------------------------------------------- analyst views
# What people query: the same tables as views with dates as DATE, no reserved-word column names and
# no pseudo rows; `<table>_latest` keeps only the newest run's partition (each ds partition of a derived
# table holds that run's whole window, so a query over every ds counts rows once per run).
# One definition, rendered for DuckDB (`mer sql`) and Spark SQL (the metastore / `mer serve-sql`).
DATE_COLUMNS = ("ds", "event_date", "source_ds")
RENAMED_COLUMNS = {"column": "bad_column"}  # `column` is reserved in SQL
PSEUDO_ROWS = {"eval_metrics": "model <> '_eval'"}  # evaluation-wide counts stored as a model named _eval


def analyst_view_sql(table: str, columns: list[str], source: str, *, quote: str = '"', latest: bool = False) -> str:
    """``SELECT ...`` over ``source`` (a table or file scan expression) for the view of ``table``.

    ``quote`` is the identifier quote of the dialect (DuckDB ``"``, Spark SQL a backtick)."""
    def q(name: str) -> str:
        return f"{quote}{name}{quote}"

    select = []
    for c in columns:
        expr = f"CAST({q(c)} AS DATE)" if c in DATE_COLUMNS else q(c)
        select.append(f"{expr} AS {q(RENAMED_COLUMNS.get(c, c))}")
    where = [PSEUDO_ROWS[table]] if table in PSEUDO_ROWS else []
    if latest and "ds" in columns:
        where.append(f"{q('ds')} = (SELECT max({q('ds')}) FROM {source})")
    return f"SELECT {', '.join(select)} FROM {source}" + (f" WHERE {' AND '.join(where)}" if where else "")
