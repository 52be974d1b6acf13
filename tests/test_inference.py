"""Stage 5 on a real local Spark session with the fixture item tower."""
from __future__ import annotations

import numpy as np
import pytest

from mer.base.errors import ContractError, MerError
from mer.base.io import read_partition
from tests import item_tower_fixture as fx

DS = "2026-01-15"
pytestmark = pytest.mark.spark


def test_inference_matches_eager_tower(cfg, spark, towers_env):
    from mer.stages.spark_jobs.item_inference import run

    fx.make_models(cfg, DS)
    cfg.train = cfg.train.model_copy(update={"embed_dim": 16})  # the fixture tower's dimension, checked by the gate
    feats = fx.write_item_features(cfg, "2026-01-14", n=300)  # snapshot older than ds: latest <= ds is used
    out = run(cfg, DS)

    assert out["snapshot_ds"] == "2026-01-14"
    assert out["rows"] == {"dcm": 300, "cr": 300}
    assert max(out["max_abs_diff_vs_eager"].values()) < 1e-5
    table = read_partition(cfg.table("item_embeddings"), DS)
    assert set(table.column("model_version").to_pylist()) == {"dcm-2026-01-15-fx", "cr-2026-01-15-fx"}
    # Known answer: an independent eager pass over every item equals the table.
    enc = fx.load_item_encoder(fx.model_dir(cfg, DS, "dcm"))
    want = dict(zip(feats.column("item_id").to_pylist(), enc.encode(feats.to_pandas())))
    dcm = table.filter(table.column("model_version").to_numpy(zero_copy_only=False) == "dcm-2026-01-15-fx")
    got = np.stack(dcm.column("embedding").to_numpy(zero_copy_only=False))
    exp = np.stack([want[i] for i in dcm.column("item_id").to_pylist()])
    assert np.abs(got - exp).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    # Re-run replaces its own partition (no duplicated rows) and leaves other dates alone.
    out2 = run(cfg, DS)
    assert out2["rows"] == {"dcm": 300, "cr": 300}
    assert read_partition(cfg.table("item_embeddings"), DS).num_rows == 600


def test_inference_without_snapshot_names_table(cfg, spark, towers_env):
    from mer.stages.spark_jobs.item_inference import run

    fx.make_models(cfg, DS)
    with pytest.raises(ContractError, match="item_features"):
        run(cfg, DS)


def test_inference_without_models_is_clear(cfg, towers_env):
    from mer.stages.spark_jobs.item_inference import run

    with pytest.raises(MerError, match="no served model"):
        run(cfg, DS)
