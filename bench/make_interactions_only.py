"""A raw root like SRC that keeps only the interactions (a robustness check for issue 10).

    .venv/bin/python bench/make_interactions_only.py SRC DST   # SRC: a root with raw/ (e.g. a kept MovieLens bench root)
    .venv/bin/python bench/bench_quality.py DST --root DST_RUN --keep --no-ablations

Why: most public interaction logs have no pretrained item embeddings, no topics and no explicit interests, and
the data set a reviewer brings may be one of them. DST keeps every engagement (same users, items, times,
actions, requests) and drops the rest: every item's pretrained embedding is null, its topic lists empty, its
category and creator 0; no user follows anything; the source-interest log keeps its rows (the eval day's
partition must not be empty) but every row says the item came from the ``popular`` retriever with no source
interest. What the towers can learn from is then co-engagement alone, as item-kNN and ALS do.
"""
from __future__ import annotations

import pyarrow as pa
from derived_root import source_and_destination, write_derived  # bench/ (the script's folder)


def strip_item_features(t: pa.Table) -> pa.Table:
    n = t.num_rows
    cols = {}
    for f in t.schema:
        if f.name == "pretrained_embedding":
            cols[f.name] = pa.nulls(n, f.type)
        elif f.name in ("topic_ids", "topic_scores"):
            cols[f.name] = pa.array([[]] * n, f.type)
        elif f.name in ("category_id", "creator_id"):
            cols[f.name] = pa.array([0] * n, f.type)
        else:
            cols[f.name] = t.column(f.name)
    return pa.table(cols, schema=t.schema)


def strip_source_interests(t: pa.Table) -> pa.Table:
    i = t.schema.get_field_index("retriever")
    t = t.set_column(i, t.schema.field(i), pa.array(["popular"] * t.num_rows, t.schema.field(i).type))
    i = t.schema.get_field_index("source_interest_id")
    return t.set_column(i, t.schema.field(i), pa.nulls(t.num_rows, t.schema.field(i).type))


STRIP = {"item_features": strip_item_features, "source_interest_log": strip_source_interests,
         "user_follows": lambda t: t.slice(0, 0)}


def main() -> None:
    src, dst = source_and_destination("make_interactions_only", __doc__, ("engagement_log", *STRIP))
    write_derived(src, dst, STRIP)
    print(f"{dst}: interactions only (no pretrained embeddings, topics, follows or source interests)")


if __name__ == "__main__":
    main()
