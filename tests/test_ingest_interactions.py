"""`mer ingest interactions`: any (user, item, time[, rating]) log and item table -> the raw contract."""
from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mer.app.cli import app
from mer.base.config import MerConfig
from mer.base.contract import RAW_TABLES
from mer.base.errors import ContractError
from mer.base.io import list_partitions, read_partition
from mer.stages.datagen.interactions import InteractionsSource, epoch_seconds, ingest


def cfg_days(tmp_path, days: int, name: str = "var") -> MerConfig:
    cfg = MerConfig(root=tmp_path / name)
    cfg.generate = cfg.generate.model_copy(update={"days": days})
    return cfg


def rows(cfg: MerConfig, table: str, ds: str) -> list[dict]:
    return read_partition(cfg.raw_table(table), ds).to_pylist()


def test_string_ids_iso_times_and_ratings_become_known_rows(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("user,item,when,stars\n"
                 "alice,B07,2024-03-01T10:00:00Z,5\n"
                 "bob,A01,2024-03-01T09:00:00Z,2\n"
                 "alice,A01,2024-03-02T12:00:00Z,3.5\n"
                 "carol,B07,2024-03-03T08:00:00Z,4\n")
    cfg = cfg_days(tmp_path, 2)
    out = ingest(cfg, InteractionsSource(path=f, user_col="user", item_col="item", time_col="when", rating_col="stars"))
    assert out["days"] == ["2026-01-14", "2026-01-15"] and out["rejected"] == 0
    assert out["actions"] == {"impression": 4, "save": 2, "hide": 1, "click": 1}
    # ids: sorted source ids -> 1..n, with the maps written beside the raw tables
    users = pq.read_table(cfg.root / "ingest" / "user_ids.parquet").to_pylist()
    items = pq.read_table(cfg.root / "ingest" / "item_ids.parquet").to_pylist()
    assert users == [{"source_id": "alice", "id": 1}, {"source_id": "bob", "id": 2}, {"source_id": "carol", "id": 3}]
    assert items == [{"source_id": "A01", "id": 1}, {"source_id": "B07", "id": 2}]
    # two equal-count days in time order; inside a day the first time maps to 00:00:01, the last to 23:59:57
    day0 = rows(cfg, "engagement_log", "2026-01-14")
    assert [(r["user_id"], r["item_id"], r["action"]) for r in day0] == [
        (2, 1, "impression"), (2, 1, "hide"), (1, 2, "impression"), (1, 2, "save")]
    assert [r["event_ts"] for r in day0] == [datetime(2026, 1, 14, 0, 0, 1), datetime(2026, 1, 14, 0, 0, 2),
                                             datetime(2026, 1, 14, 23, 59, 57), datetime(2026, 1, 14, 23, 59, 58)]
    day1 = rows(cfg, "engagement_log", "2026-01-15")
    assert [(r["user_id"], r["item_id"], r["action"]) for r in day1 if r["action"] != "impression"] == [
        (1, 1, "click"), (3, 2, "save")]
    assert len({r["request_id"] for r in day0}) == 2  # one request per (user, session)
    # no item table: every item is featureless, nothing to follow
    feats = rows(cfg, "item_features", "2026-01-15")
    assert [(r["item_id"], r["pretrained_embedding"], r["topic_ids"]) for r in feats] == [(1, None, []), (2, None, [])]
    assert out["follows"] == 0 and {r["retriever"] for r in rows(cfg, "source_interest_log", "2026-01-15")} == {
        "collaborative"}
    assert "MER_BUILD__JOIN_RATE_MIN=0" in out["next"]  # what the DAG's join-rate gate then needs


def test_implicit_parquet_with_an_item_table_of_topics_brands_and_embeddings(tmp_path):
    n = 60
    rng = np.random.default_rng(3)
    log = pa.table({"user_id": rng.integers(1, 6, n), "item_id": rng.integers(10, 14, n),
                    "ts": 1_700_000_000_000 + np.arange(n) * 3_600_000})  # epoch milliseconds, hourly
    pq.write_table(log, tmp_path / "plays.parquet")
    # item 13 is engaged but not listed; item 99 is listed but never engaged
    items = pa.table({"item_id": [10, 11, 12, 99],
                      "tags": [["rock", "jazz"], ["jazz"], None, ["pop"]],
                      "brand": ["zeta", "acme", None, "acme"],
                      "vec": [[1.0, 0.0], [0.0, 2.0], [float("nan"), 1.0], [3.0, 3.0]]})
    pq.write_table(items, tmp_path / "items.parquet")
    cfg = cfg_days(tmp_path, 3)
    out = ingest(cfg, InteractionsSource(path=tmp_path / "plays.parquet", items=tmp_path / "items.parquet",
                                         time_col="ts", implicit_action="save", topics_col="tags",
                                         creator_col="brand", embedding_col="vec"))
    assert out["actions"] == {"impression": n, "save": n} and out["id_maps"] == []
    assert [ds for ds in list_partitions(cfg.raw_table("engagement_log"))] == ["2026-01-13", "2026-01-14", "2026-01-15"]
    assert sum(len(rows(cfg, "engagement_log", d)) for d in ("2026-01-13", "2026-01-14", "2026-01-15")) == 2 * n
    assert rows(cfg, "topics", "2026-01-15") == [{"topic_id": 1, "name": "jazz"}, {"topic_id": 2, "name": "pop"},
                                                 {"topic_id": 3, "name": "rock"}]
    feats = {r["item_id"]: r for r in rows(cfg, "item_features", "2026-01-15")}
    assert sorted(feats) == [10, 11, 12, 13, 99]
    assert feats[10]["topic_ids"] == [1, 3] and feats[10]["topic_scores"] == [0.5, 0.5]
    assert feats[10]["pretrained_embedding"] == [1.0, 0.0] and feats[99]["pretrained_embedding"] == [3.0, 3.0]
    assert feats[12]["pretrained_embedding"] is None  # a non-finite component: an item without features
    assert feats[13]["pretrained_embedding"] is None and feats[13]["topic_ids"] == []  # engaged, not listed
    assert (feats[10]["creator_id"], feats[11]["creator_id"], feats[99]["creator_id"], feats[12]["creator_id"]) == (
        2, 1, 1, 0)  # acme 1, zeta 2, missing 0
    # simulated explicit interests: a followed_topic row names a topic of its item the user follows by then
    follows = {(r["user_id"], r["topic_id"]): r["followed_ts"] for r in rows(cfg, "user_follows", "2026-01-15")}
    assert out["follows"] == len(follows) > 0 and "next" not in out
    eng = [r for d in list_partitions(cfg.raw_table("engagement_log")) for r in rows(cfg, "engagement_log", d)]
    by_request_item = {(r["request_id"], r["item_id"]): r for r in eng if r["action"] == "impression"}
    logged = [r for d in list_partitions(cfg.raw_table("source_interest_log"))
              for r in rows(cfg, "source_interest_log", d) if r["retriever"] == "followed_topic"]
    assert logged
    for s in logged:
        e = by_request_item[(s["request_id"], s["item_id"])]
        assert s["source_interest_id"] in feats[s["item_id"]]["topic_ids"]
        assert follows[(e["user_id"], s["source_interest_id"])] <= e["event_ts"]


def test_unplaceable_rows_are_quarantined_with_their_reason(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("user_id,item_id,timestamp,rating\n"
                 "1,1,1700000000,4\n,2,1700000100,4\n1,3,soon,4\n2,1,1700000300,n/a\n2,2,1700000400,1\n"
                 "3,,1700000500,5\n")
    cfg = cfg_days(tmp_path, 1)
    out = ingest(cfg, InteractionsSource(path=f, rating_col="rating"))
    assert out["rejected"] == 4 and out["actions"] == {"impression": 2, "save": 1, "hide": 1}
    rejected = pq.read_table(out["rejected_file"]).to_pylist()
    assert [(r["timestamp"], r["reason"]) for r in rejected] == [
        ("1700000100", "user_id: missing"), ("soon", "timestamp: not a time"), ("1700000300", "rating: not a number"),
        ("1700000500", "item_id: missing")]


@pytest.mark.parametrize("content, items, kwargs, message", [
    ("u,i,t\n1,1,5\n", None, {}, r"log.csv has no column\(s\) user_id, item_id, timestamp \(found u, i, t\)"),
    ("user_id,item_id,timestamp\n1,1,5\n", None, {"topics_col": "tags"}, "pass it with --items"),
    ("user_id,item_id,timestamp\n1,1,when\n", None, {}, "no usable row"),
    ("user_id,item_id,timestamp\n1,1,5\n", "item_id,vec\n1,0.1 0.2\n2,0.5 0.1 0.3\n", {"embedding_col": "vec"},
     "column vec: item 2 has an embedding of length 3, item 1 one of length 2"),
])
def test_bad_input_names_the_file_and_column(tmp_path, content, items, kwargs, message):
    f = tmp_path / "log.csv"
    f.write_text(content)
    if items is not None:
        (tmp_path / "items.csv").write_text(items)
        kwargs = {**kwargs, "items": tmp_path / "items.csv"}
    with pytest.raises(ContractError, match=message):
        ingest(cfg_days(tmp_path, 1), InteractionsSource(path=f, **kwargs))
    assert not (tmp_path / "var").exists()  # nothing half-written, the root not claimed


def test_a_root_another_source_wrote_is_never_overwritten(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("user_id,item_id,timestamp\n1,1,100\n2,1,200\n")
    b.write_text("user_id,item_id,timestamp\n7,7,100\n8,7,200\n")
    cfg = cfg_days(tmp_path, 1)
    ingest(cfg, InteractionsSource(path=a))
    before = rows(cfg, "engagement_log", "2026-01-15")
    with pytest.raises(ContractError, match="ingested from .*a.csv with other settings"):
        ingest(cfg, InteractionsSource(path=b))
    with pytest.raises(ContractError, match="with other settings"):
        ingest(cfg, InteractionsSource(path=a, implicit_action="save"))
    assert rows(cfg, "engagement_log", "2026-01-15") == before
    assert ingest(cfg, InteractionsSource(path=a))["rows"]["engagement_log"] == 4  # the same source re-ingests
    other = cfg_days(tmp_path, 1, "generated")  # raw tables nobody ingested (e.g. `mer generate`)
    (other.raw_table("engagement_log") / "ds=2026-01-15").mkdir(parents=True)
    with pytest.raises(ContractError, match="no ingest of .* wrote"):
        ingest(other, InteractionsSource(path=a))


def test_epoch_units_are_read_from_their_size():
    import pandas as pd

    for scale in (1, 1_000, 1_000_000, 1_000_000_000):
        secs, bad = epoch_seconds(pd.Series([1_700_000_000 * scale, 1_700_000_060 * scale], dtype="int64"))
        assert secs.tolist() == [1_700_000_000.0, 1_700_000_060.0] and not bad.any()
    secs, bad = epoch_seconds(pd.Series(["2023-11-14T22:13:20+00:00", "2023-11-14 23:13:20+01:00", "x"]))
    assert secs[:2].tolist() == [1_700_000_000.0, 1_700_000_000.0] and bad.tolist() == [False, False, True]


def test_cli_typed_choice_and_json_summary(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("user_id,item_id,timestamp\n" + "".join(f"{k % 3 + 1},{k % 5 + 1},{100 * k}\n" for k in range(30)))
    res = CliRunner().invoke(app, ["ingest", "interactions", str(f), "--implicit-action", "view",
                                   "--root", str(tmp_path / "var")])
    assert res.exit_code == 2 and "'view' is not one of" in " ".join(res.output.split()).replace("│", "")
    assert not (tmp_path / "var" / "raw").exists()
    res = CliRunner().invoke(app, ["ingest", "interactions", str(f), "--implicit-action", "save",
                                   "--root", str(tmp_path / "var")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["rows"]["engagement_log"] == 60 and out["actions"] == {"impression": 30, "save": 30}


@pytest.mark.spark
def test_an_ingested_log_passes_validation_whole(spark, tmp_path):
    """The raw tables the ingest writes follow the contract: stage 1 keeps every row (string ids, no features)."""
    from mer.stages.spark_jobs import validate_raw
    from tests.raw_fixture import DS, small_cfg

    n = 300
    rng = np.random.default_rng(5)
    f = tmp_path / "events.tsv"
    f.write_text("visitor\tsku\ttime\n" + "".join(
        f"v{u}\tsku-{i}\t2025-06-{1 + k // 100:02d}T{(k % 100) // 5:02d}:{k % 60:02d}:00Z\n"
        for k, (u, i) in enumerate(zip(rng.integers(0, 20, n), rng.integers(0, 40, n)))))
    cfg = small_cfg(cfg_days(tmp_path, 3))
    out = ingest(cfg, InteractionsSource(path=f, user_col="visitor", item_col="sku", time_col="time"))
    assert out["rejected"] == 0 and set(out["rows"]) == set(RAW_TABLES)
    validate_raw.run(cfg, DS)
    assert read_partition(cfg.table("clean_engagement_log"), DS).num_rows == 2 * n  # the window: all 3 days
    assert read_partition(cfg.table("quarantine"), DS).to_pylist() == []
