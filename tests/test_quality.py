"""Great Expectations gates: pass on good data, fail listing the expectation (type, column, observed) on bad."""
from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from mer.base.contract import ITEM_EMBEDDINGS
from mer.base.errors import ContractError, DataQualityError, MerError
from mer.base.io import read_partition, write_partition
from tests.raw_fixture import DS, built_small, write_snapshots  # noqa: F401 (fixture)


def test_raw_and_training_gates_pass_on_built_data(built_small):
    from mer.stages.quality.gates import data_docs_index, run

    cfg, _ = built_small
    raw = run(cfg, DS, "raw")
    assert raw["success"] and raw["tables"]["clean_engagement_log"]["rows"] == 12
    training = run(cfg, DS, "training")
    assert training["success"] and training["tables"]["training_examples"]["expectations"] >= 10
    saved = json.loads((cfg.quality_dir / f"ds={DS}" / "training.json").read_text())
    mean = next(r for r in saved["tables"]["training_examples"]["results"]
                if r["expectation"] == "expect_column_mean_to_be_between")
    assert mean["observed"] == pytest.approx(6 / 9)  # the join rate
    assert data_docs_index(cfg).is_file() and training["data_docs"] == str(data_docs_index(cfg))


def test_training_gate_lists_failed_expectations(built_small, cfg):
    from mer.stages.quality.gates import run

    good = read_partition(built_small[0].table("training_examples"), DS)
    segment = good["segment"].to_pylist()
    segment[0] = "vip"
    cond = good["condition_id"].to_pylist()
    cond[1] = 999
    hist_ts = good["hist_ts"].to_pylist()
    row = next(i for i, h in enumerate(hist_ts) if h)
    hist_ts[row] = [good["event_ts"][row].as_py() + timedelta(seconds=1)] * len(hist_ts[row])  # leaked future
    bad = (good.set_column(good.schema.get_field_index("segment"), "segment", pa.array(segment))
           .set_column(good.schema.get_field_index("condition_id"), "condition_id", pa.array(cond, pa.int64()))
           .set_column(good.schema.get_field_index("hist_ts"), "hist_ts",
                       pa.array(hist_ts, good.schema.field("hist_ts").type)))
    write_snapshots(cfg)
    write_partition(cfg.table("training_examples"), DS, bad)
    with pytest.raises(DataQualityError) as err:
        run(cfg, DS, "training")
    msg = str(err.value)
    assert "expect_column_values_to_be_in_set (column segment) observed {'unexpected_count': 1, 'examples': ['vip']}" in msg
    assert "(column condition_id) observed {'unexpected_count': 1, 'examples': [999]}" in msg
    assert "expect_column_values_to_be_in_set (column hist_before_event)" in msg
    assert "3 expectation(s)" in msg
    saved = json.loads((cfg.quality_dir / f"ds={DS}" / "training.json").read_text())
    assert saved["success"] is False and len(saved["failures"]) == 3


# The join rate collapsing is in tests/test_faults_data.py.


def _embeddings(ids, dim=64, seed=0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(len(ids), dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _write_embeddings(cfg, ids, vecs, version="dcm-v1"):
    table = pa.table({"model_version": [version] * len(ids), "item_id": ids,
                      "embedding": [list(map(float, v)) for v in vecs]}, schema=ITEM_EMBEDDINGS)
    write_partition(cfg.table("item_embeddings"), DS, table)


def test_embeddings_gate(cfg):
    from mer.stages.quality.gates import run

    write_snapshots(cfg)  # catalog: items 1..6
    ids = [1, 2, 3, 4, 5, 6]
    vecs = _embeddings(ids)
    _write_embeddings(cfg, ids, vecs)
    assert run(cfg, DS, "embeddings")["success"]

    broken = [list(v) for v in vecs[:5]]
    broken[0][3] = float("nan")
    broken[1] = [2 * x for x in broken[1]]
    broken[2] = broken[2][:63]
    _write_embeddings(cfg, ids[:5], broken)  # item 6 missing
    with pytest.raises(DataQualityError) as err:
        run(cfg, DS, "embeddings")
    msg = str(err.value)
    assert "expect_table_row_count_to_equal (column -) observed 5" in msg
    assert "(column emb_finite) observed {'unexpected_count': 1" in msg
    assert "(column emb_dim) observed {'unexpected_count': 1, 'examples': [63]}" in msg
    assert "expect_column_values_to_be_between (column emb_norm)" in msg


def test_gate_errors_are_clear(cfg):
    from mer.stages.quality.gates import run

    with pytest.raises(MerError, match="unknown quality stage 'model'"):
        run(cfg, DS, "model")
    write_snapshots(cfg)
    with pytest.raises(ContractError, match=r"table item_embeddings: partition ds=2026-01-15 is missing.*mer infer"):
        run(cfg, DS, "embeddings")
