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
# What each column means: DESCRIPTIONS (below the tables).
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
        ("source_interest_id", pa.int64()),
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
        ("pretrained_embedding", pa.list_(pa.float32())),
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
        ("reason", pa.string()),
        ("column", pa.string()),
        ("row_json", pa.string()),
    ]
)

CR_TRIPLES = pa.schema(
    [
        ("condition_id", pa.int64()),
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
        ("item_id", pa.int64()),
        ("event_ts", TS),
        ("action", pa.string()),
        ("event_date", pa.string()),
        ("hist_item_ids", pa.list_(pa.int64())),
        ("hist_actions", pa.list_(pa.string())),
        ("hist_ts", pa.list_(TS)),
        ("hist_valid", pa.list_(pa.bool_())),
        ("condition_id", pa.int64()),
        ("segment", pa.string()),
        ("split", pa.string()),
    ]
)

ITEM_FREQUENCY = pa.schema(
    [
        ("item_id", pa.int64()),
        ("count", pa.int64()),
        ("prob", pa.float64()),
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
        ("score", pa.float64()),
        ("rank", pa.int64()),
    ]
)

ITEM_FACTORS = pa.schema(
    [
        ("item_id", pa.int64()),
        ("factors", pa.list_(pa.float32())),
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
        ("split", pa.string()),
        ("metric", pa.string()),
        ("segment", pa.string()),
        ("value", pa.float64()),
    ]
)

EVAL_INTERVALS = pa.schema(
    [
        ("name", pa.string()),
        ("model", pa.string()),
        ("variant", pa.string()),
        ("reference", pa.string()),
        ("reference_model", pa.string()),
        ("metric", pa.string()),
        ("records", pa.string()),
        ("segment", pa.string()),
        ("n", pa.int64()),
        ("users", pa.int64()),
        ("value", pa.float64()),
        ("reference_value", pa.float64()),
        ("ratio", pa.float64()),
        ("lo", pa.float64()),
        ("hi", pa.float64()),
    ]
)

TUNE_TRIALS = pa.schema(
    [
        ("model", pa.string()),
        ("trial", pa.int64()),
        ("params", pa.string()),
        ("val_hr_at_100", pa.float64()),
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
    "item_factors": ITEM_FACTORS,
    "item_embeddings": ITEM_EMBEDDINGS,
    "eval_metrics": EVAL_METRICS,
    "eval_intervals": EVAL_INTERVALS,
    "tune_trials": TUNE_TRIALS,
}


# The command that writes each table, for "missing partition" messages that say what to run.
WRITTEN_BY: dict[str, str] = {
    **{t: "mer generate (synthetic) or mer ingest movielens, or land the upstream export" for t in RAW_TABLES},
    **{t: "mer validate" for t in ("clean_engagement_log", "clean_source_interest_log", "quarantine")},
    **{t: "mer build" for t in ("cr_triples", "training_examples", "item_frequency", "eval_corpus", "item_neighbors",
                                   "item_factors")},
    "item_embeddings": "mer infer",
    "eval_metrics": "mer evaluate",
    "eval_intervals": "mer evaluate",
    "tune_trials": "mer tune",
}


# ---------------------------------------------------------------- what each table and column means
# Shown by `mer tables` and rendered into README.md by scripts/schema_md.py; a test requires a
# non-empty entry for every column of every table above.
TABLE_DESCRIPTIONS: dict[str, str] = {
    "engagement_log": "One row per user action on an item (impressions included); partition = event day.",
    "source_interest_log": "Which retriever served each (request, item); partition = serving day.",
    "user_follows": "Topics each user follows; daily snapshot.",
    "item_features": "Catalog features per item; daily snapshot.",
    "topics": "Topic names; daily snapshot.",
    "clean_engagement_log": "engagement_log rows of the run's window that passed validation (`mer validate`).",
    "clean_source_interest_log": "source_interest_log rows of the run's window that passed validation.",
    "quarantine": "Raw rows rejected by validation, with the reason.",
    "cr_triples": "Positive engagements served by a followed topic: (condition, user, item) for the CR model.",
    "training_examples": "One row per positive engagement of the window with the user's history before it.",
    "item_frequency": "Positives per item over the train split (logQ sampling correction).",
    "eval_corpus": "The items with the most positives before the eval day: the candidate set scored in evaluation.",
    "item_neighbors": "Item-kNN over the train split (the itemknn baseline).",
    "item_factors": "Implicit-ALS item factors over the train split (Spark MLlib): the als baseline; optionally "
                    "where the towers' item-id embeddings start (train.id_init).",
    "item_embeddings": "Item tower output per blessed model (Spark inference); input of the index build. Files are "
                       "bucketed by index shard (`shard-SSSSS-of-NNNNN.part-PPPPP.parquet`), so shard i's build reads "
                       "only its own files; together they read as one table.",
    "eval_metrics": "Offline retrieval metrics per model, variant, split and segment (`mer evaluate`).",
    "eval_intervals": "Each model's metric relative to a reference model with a paired bootstrap interval.",
    "tune_trials": "Hyper-parameter search trials (`mer tune`).",
}

_EVENT_DATE = "the event's UTC day (YYYY-MM-DD; DATE in the SQL views)"
_CLEAN_EVENT_DATE = _EVENT_DATE + "; for source_interest_log the serving day (its raw partition)"

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "engagement_log": {
        "event_id": "unique id of the event (duplicates are quarantined)",
        "event_ts": "when the action happened (UTC)",
        "user_id": "the acting user",
        "item_id": "the item acted on",
        "action": "impression | click | save | hide (click and save are positives, hide is negative)",
        "request_id": "the serving request that showed the item; joins source_interest_log",
        "surface": "home_feed | search | related",
    },
    "source_interest_log": {
        "request_id": "the serving request",
        "item_id": "an item the request returned",
        "retriever": "followed_topic | collaborative | popular | fresh",
        "source_interest_id": "the followed topic that retrieved the item; null unless retriever = followed_topic",
    },
    "user_follows": {
        "user_id": "the follower",
        "topic_id": "the followed topic (topics.topic_id)",
        "followed_ts": "when the user followed it (UTC)",
    },
    "item_features": {
        "item_id": "the item",
        "pretrained_embedding": "content embedding; the same length for every item of a dataset, null = missing",
        "category_id": "the item's category",
        "creator_id": "who made the item",
        "topic_ids": "the item's topics (topics.topic_id)",
        "topic_scores": "how strongly the item belongs to each of topic_ids, same order",
    },
    "topics": {
        "topic_id": "the topic",
        "name": "human-readable topic name",
    },
    "quarantine": {
        "source_table": "the raw table the rejected row came from",
        "source_ds": "the raw partition it came from (DATE in the SQL views)",
        "reason": "why it was rejected: null_id, unknown_item, unknown_action, ts_outside_ds, duplicate_event_id, ...",
        "column": "the offending column (`bad_column` in the SQL views: `column` is a reserved word)",
        "row_json": "the whole rejected row as JSON",
    },
    "cr_triples": {
        "condition_id": "the followed topic (source_interest_id) that served the item at serving time",
        "user_id": "the engaging user",
        "item_id": "the engaged item",
        "event_ts": "when the positive engagement happened (UTC)",
        "action": "click | save",
        "request_id": "the serving request",
        "event_date": _EVENT_DATE,
    },
    "training_examples": {
        "event_id": "the positive engagement this example is built from",
        "user_id": "the user",
        "item_id": "the target item (the positive engagement)",
        "event_ts": "when it happened (UTC)",
        "action": "click | save",
        "event_date": _EVENT_DATE,
        "hist_item_ids": "the user's last history_len engaged items strictly before event_ts, oldest first",
        "hist_actions": "the action of each hist_item_ids entry (click | save | hide)",
        "hist_ts": "the time of each hist_item_ids entry (UTC)",
        "hist_valid": "per history entry: the item has usable features AND the action is not negative",
        "condition_id": "the source interest when a followed-topic retriever served the target; else null",
        "segment": "core (the user's train-day saves exceed 4 per 28 days, scaled) | non_core",
        "split": "train | val (the day(s) before the eval day) | eval (the run's ds)",
    },
    "item_frequency": {
        "item_id": "the item",
        "count": "positives of the item in the train split",
        "prob": "count / total positives in the train split (logQ correction)",
    },
    "eval_corpus": {
        "item_id": "a candidate item of the evaluation",
        "rank": "1 = the item with the most positives before the eval day (ties by item_id)",
        "count": "its positives before the eval day",
    },
    "item_neighbors": {
        "item_id": "the item",
        "neighbor_id": "a neighbouring item",
        "score": "cosine co-engagement over train-split users: c(i,j) / sqrt(n_i * n_j)",
        "rank": "1 = best neighbour of item_id (the top build.neighbors_top_m are kept)",
    },
    "item_factors": {
        "item_id": "an item with train-split positives",
        "factors": "its implicit-ALS factor row (build.als_rank floats; confidence 1 + build.als_alpha x positives)",
    },
    "item_embeddings": {
        "model_version": "the model artifact that produced the embedding",
        "item_id": "the item",
        "embedding": "the item tower's output vector",
    },
    "eval_metrics": {
        "model": "model name (rows with model _eval hold evaluation-wide counts; the SQL views drop them)",
        "variant": "model variant",
        "split": "val (the day before ds; its users that early stopping did not read: bless, the best baseline) | eval (ds, scored once)",
        "metric": "hr@K, hr_novel@K (target not in the user's history), filtered_hr@K, ...",
        "segment": "all | core | non_core",
        "value": "the metric's value",
    },
    "eval_intervals": {
        "name": "the model's artifact name (cr = CR with the source association, itemknn-sum, ...)",
        "model": "model name",
        "variant": "model variant",
        "reference": "single | best_baseline | inverted | cr-item (CR) | mind | sa | token (the candidate only)",
        "reference_model": "the model the reference names (best_baseline: picked on the val day)",
        "metric": "the metric compared (hr@K, ...)",
        "records": "all | novel (target not in the user's history)",
        "segment": "all | core | non_core",
        "n": "eval records both models were scored on",
        "users": "distinct users among those records: the bootstrap resamples users, a user's records together",
        "value": "the model's metric value",
        "reference_value": "the reference model's metric value",
        "ratio": "value / reference_value",
        "lo": "lower end of the paired (user-level) bootstrap 95% interval of ratio",
        "hi": "upper end of the paired (user-level) bootstrap 95% interval of ratio",
    },
    "tune_trials": {
        "model": "artifact name (dcm, cr, cr-item, ...)",
        "trial": "trial number",
        "params": "JSON of the sampled settings (mer/base/config.py TrainConfig names)",
        "val_hr_at_100": "the trial's HR@100 on the validation day's users that early stopping did not read (the objective)",
        "steps": "training steps the trial ran",
        "seconds": "wall-clock seconds the trial took",
    },
}
DESCRIPTIONS["clean_engagement_log"] = {**DESCRIPTIONS["engagement_log"], "event_date": _EVENT_DATE}
DESCRIPTIONS["clean_source_interest_log"] = {**DESCRIPTIONS["source_interest_log"], "event_date": _CLEAN_EVENT_DATE}


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
