"""The expectations of each gate, one function per table. Parameters come from the config and the frame."""
from __future__ import annotations

from mer.base.config import MerConfig
from mer.stages.quality.frames import Frame


def _gx():
    import great_expectations as gx

    return gx.expectations


def _not_null(columns):
    E = _gx()
    return [E.ExpectColumnValuesToNotBeNull(column=c) for c in columns]


def _true(column: str):
    """A derived boolean check column must be True on every row."""
    return _gx().ExpectColumnValuesToBeInSet(column=column, value_set=[True])


def clean_engagement_log(cfg: MerConfig, f: Frame) -> list:
    E = _gx()
    return [
        *_not_null(["event_id", "event_ts", "user_id", "item_id", "action", "request_id"]),
        E.ExpectColumnValuesToBeInSet(column="action", value_set=f.params["known_actions"]),
        E.ExpectColumnValuesToBeUnique(column="event_id"),
        _true("event_ts_in_ds"),
        _true("item_known"),
    ]


def clean_source_interest_log(cfg: MerConfig, f: Frame) -> list:
    E = _gx()
    return [
        *_not_null(["request_id", "item_id"]),
        E.ExpectColumnValuesToBeInSet(column="source_interest_id", value_set=f.params["topic_ids"]),
        E.ExpectCompoundColumnsToBeUnique(column_list=["request_id", "item_id"]),
    ]


def training_examples(cfg: MerConfig, f: Frame) -> list:
    E = _gx()
    b = cfg.build
    return [
        *_not_null(["event_id", "user_id", "item_id", "event_ts", "action", "segment", "split"]),
        E.ExpectColumnValuesToBeInSet(column="segment", value_set=["core", "non_core"]),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val", "eval"]),
        E.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train", "val", "eval"]),
        E.ExpectColumnValuesToBeInSet(column="action", value_set=f.params["positive_actions"]),
        # join rate of positives to source-interest rows = mean of the 0/1 has_condition column
        E.ExpectColumnMeanToBeBetween(column="has_condition", min_value=b.join_rate_min, max_value=b.join_rate_max),
        E.ExpectColumnValuesToBeInSet(column="condition_id", value_set=f.params["topic_ids"]),
        _true("hist_before_event"),
        _true("hist_aligned"),
        E.ExpectColumnValuesToBeBetween(column="hist_len", min_value=0, max_value=b.history_len),
    ]


def item_embeddings(cfg: MerConfig, f: Frame) -> list:
    E = _gx()
    return [
        *_not_null(["model_version", "item_id"]),
        E.ExpectTableRowCountToEqual(value=f.params["expected_rows"]),
        E.ExpectCompoundColumnsToBeUnique(column_list=["model_version", "item_id"]),
        _true("item_in_catalog"),
        E.ExpectColumnValuesToBeInSet(column="emb_dim", value_set=[f.params["embed_dim"]]),
        _true("emb_finite"),
        E.ExpectColumnValuesToBeBetween(column="emb_norm", min_value=1 - 1e-3, max_value=1 + 1e-3),
    ]


SUITES = {
    "clean_engagement_log": clean_engagement_log,
    "clean_source_interest_log": clean_source_interest_log,
    "training_examples": training_examples,
    "item_embeddings": item_embeddings,
}
