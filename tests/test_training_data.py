"""Stage 2 on a hand-built log whose every output row is known (tests/raw_fixture.py)."""
from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from mer.base.contract import DERIVED_TABLES
from mer.base.errors import ContractError
from mer.base.io import list_partitions, read_partition
from tests.raw_fixture import DS, EXPECTED_TRIPLES, built_small, small_cfg, write_raw  # noqa: F401 (fixture)


def _rows(cfg, name, ds=DS) -> list[dict]:
    return read_partition(cfg.table(name), ds).to_pylist()


def _types_match(table: pa.Table, name: str) -> None:
    expected = DERIVED_TABLES[name]
    assert table.schema.names == expected.names, name
    for f in expected:
        assert table.schema.field(f.name).type == f.type, (name, f.name)


def test_known_answers(built_small):
    cfg, summary = built_small
    triples = _rows(cfg, "cr_triples")
    by_event = {(r["user_id"], r["event_ts"]): r for r in triples}
    assert len(triples) == len(EXPECTED_TRIPLES) == summary["cr_triples"] == 6
    got = {(r["condition_id"], r["user_id"], r["item_id"]) for r in triples}
    assert got == {t[:3] for t in EXPECTED_TRIPLES}
    # the hide on (r1, item 3) was served by topic 200 but is not a positive: no triple
    assert all(r["action"] in ("click", "save") for r in triples)
    assert by_event[(2, datetime(2026, 1, 15, 8, 31))]["request_id"] == "r6"

    ex = {r["event_id"]: r for r in _rows(cfg, "training_examples")}
    assert sorted(ex) == ["e02", "e03", "e05", "e06", "e07", "e09", "e10", "e11", "e12"]
    # history of 3, oldest first; e06/e07 share an instant so neither sees the other
    assert ex["e02"]["hist_item_ids"] == []
    assert ex["e03"]["hist_item_ids"] == [1]
    assert ex["e06"]["hist_item_ids"] == [1, 2, 3]
    assert ex["e07"]["hist_item_ids"] == [1, 2, 3]
    assert ex["e10"]["hist_item_ids"] == [3, 4, 5]  # truncated to the last 3
    assert ex["e10"]["hist_actions"] == ["hide", "click", "save"]
    # hide -> invalid; item 5 has a zero embedding -> invalid
    assert ex["e10"]["hist_valid"] == [False, True, False]
    assert ex["e12"]["hist_item_ids"] == [2, 3, 1]
    assert ex["e12"]["hist_ts"] == [datetime(2026, 1, 13, 11), datetime(2026, 1, 14, 12, 5), datetime(2026, 1, 15, 8, 30)]
    assert {k: v["condition_id"] for k, v in ex.items()} == {
        "e02": 100, "e03": None, "e05": 200, "e06": 100, "e07": None, "e09": 100, "e10": 200, "e11": None, "e12": 100,
    }
    # 01-15 is the eval day, 01-14 the validation day, earlier days train
    assert {k: v["split"] for k, v in ex.items()} == {
        k: ("eval" if k in ("e10", "e11", "e12") else "val" if k in ("e06", "e07", "e09") else "train") for k in ex}
    # user 1 saved twice before the eval day (core with the fixture's 2+ rule); user 2 once (its eval-day save
    # doesn't count)
    assert {v["user_id"]: v["segment"] for v in ex.values()} == {1: "core", 2: "non_core"}
    assert summary["join_rate"] == pytest.approx(6 / 9, abs=1e-6)

    # logQ from the train split only (e02 item 1, e03 and e05 item 2): the val and eval days stay unseen
    freq = {r["item_id"]: (r["count"], r["prob"]) for r in _rows(cfg, "item_frequency")}
    assert freq == {2: (2, pytest.approx(2 / 3)), 1: (1, pytest.approx(1 / 3))}
    # the candidates: positives before the eval day (train + val), so the eval day picks nothing it is scored on
    corpus = sorted((r["rank"], r["item_id"], r["count"]) for r in _rows(cfg, "eval_corpus"))
    assert corpus == [(1, 2, 2), (2, 1, 1), (3, 3, 1)]  # size 3, ties broken by item id

    for name in ("cr_triples", "training_examples", "item_frequency", "eval_corpus", "quarantine"):
        _types_match(read_partition(cfg.table(name), DS), name)


def test_no_history_at_or_after_the_event(built_small):
    cfg, _ = built_small
    rows = _rows(cfg, "training_examples")
    assert rows
    for r in rows:
        assert all(t < r["event_ts"] for t in r["hist_ts"]), r["event_id"]
        assert len(r["hist_item_ids"]) == len(r["hist_actions"]) == len(r["hist_ts"]) == len(r["hist_valid"]) <= 3
        assert r["hist_ts"] == sorted(r["hist_ts"])
        assert "impression" not in r["hist_actions"]


def test_rerun_is_idempotent_and_leaves_other_ds_alone(cfg, spark):
    from mer.stages.spark_jobs import training_data, validate_raw

    cfg = small_cfg(cfg)
    write_raw(cfg)
    other = "2026-01-14"  # window 01-12 .. 01-14
    validate_raw.run(cfg, other)
    training_data.run(cfg, other)
    validate_raw.run(cfg, DS)
    training_data.run(cfg, DS)
    tables = ("cr_triples", "training_examples", "item_frequency", "eval_corpus", "clean_engagement_log")
    first = {n: read_partition(cfg.table(n), DS) for n in tables}
    other_files = {n: sorted((p.name, p.stat().st_mtime_ns) for p in (cfg.table(n) / f"ds={other}").iterdir())
                   for n in tables}
    other_rows = read_partition(cfg.table("training_examples"), other).num_rows

    validate_raw.run(cfg, DS)
    training_data.run(cfg, DS)
    for n in tables:
        assert list_partitions(cfg.table(n)) == [other, DS]
        key = [(c, "ascending") for c in first[n].column_names if not pa.types.is_list(first[n].schema.field(c).type)]
        again = read_partition(cfg.table(n), DS)
        assert again.sort_by(key).equals(first[n].sort_by(key)), n
        assert sorted((p.name, p.stat().st_mtime_ns) for p in (cfg.table(n) / f"ds={other}").iterdir()) == other_files[n]
    # the 01-14 run's eval day is 01-14: e06, e07, e09 are its eval rows
    assert other_rows == 6
    assert {r["split"] for r in _rows(cfg, "training_examples", other) if r["event_date"] == other} == {"eval"}


def test_build_before_validate_says_what_to_run(cfg, spark):
    from mer.stages.spark_jobs import training_data

    cfg = small_cfg(cfg)
    write_raw(cfg)
    with pytest.raises(ContractError, match=r"clean_engagement_log.*ds=2026-01-15.*mer validate"):
        training_data.run(cfg, DS)


def test_generated_dataset_end_to_end(cfg, spark):
    """Stage 1 + gate + stage 2 + gate on a tiny synthetic dataset from mer.stages.datagen.synthetic."""
    import numpy as np
    import pyarrow.compute as pc

    from mer.stages.datagen.synthetic import generate
    from mer.stages.quality.gates import run as gate
    from mer.stages.spark_jobs import training_data, validate_raw

    cfg.generate = cfg.generate.model_copy(update={"n_users": 60, "n_items": 600, "duplicate_fraction": 0.02})
    generate(cfg)
    ds = cfg.generate.end_ds.isoformat()
    checked = validate_raw.run(cfg, ds)
    raw = pa.concat_tables(read_partition(cfg.raw_table("engagement_log"), d) for d in list_partitions(
        cfg.raw_table("engagement_log")))
    dups = raw.num_rows - len(pc.unique(raw["event_id"]))
    assert dups > 0
    assert checked["tables"]["engagement_log"]["reasons"]["duplicate_event_id"]["count"] == dups
    assert gate(cfg, ds, "raw")["success"]

    built = training_data.run(cfg, ds)
    assert gate(cfg, ds, "training")["success"]
    clean = read_partition(cfg.table("clean_engagement_log"), ds)
    positives = pc.sum(pc.is_in(clean["action"], pa.array(cfg.build.positive_actions))).as_py()
    ex = read_partition(cfg.table("training_examples"), ds)
    assert ex.num_rows == built["training_examples"] == positives
    assert built["cr_triples"] == pc.sum(pc.is_valid(ex["condition_id"])).as_py() > 0
    assert set(pc.unique(pc.filter(ex["event_date"], pc.equal(ex["split"], "eval"))).to_pylist()) == {ds}
    for hist, ts in zip(ex["hist_ts"].to_pylist(), ex["event_ts"].to_pylist()):
        assert len(hist) <= cfg.build.history_len and all(t < ts for t in hist)
    freq = read_partition(cfg.table("item_frequency"), ds)
    assert np.isclose(pc.sum(freq["prob"]).as_py(), 1.0)
