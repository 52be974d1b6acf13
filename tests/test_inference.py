"""Stage 5 on a real local Spark session with the fixture item tower; the mapInArrow bodies and the
parity gate also run in-process (a Python worker is a Python process)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mer.base.errors import ContractError, GateError, MerError
from mer.base.io import partition_dir, read_partition
from tests import item_tower_fixture as fx

DS = "2026-01-15"
MODULE = "tests.item_tower_fixture"


@pytest.mark.spark
def test_inference_matches_eager_tower(cfg, spark, towers_env):
    from mer.stages.spark_jobs.item_inference import run

    fx.make_models(cfg, DS)
    cfg.train = cfg.train.model_copy(update={"embed_dim": 16})  # the fixture tower's dimension, checked by the gate
    feats = fx.write_item_features(cfg, "2026-01-14", n=300)  # snapshot older than ds: latest <= ds is used
    out = run(cfg, DS)

    assert out["snapshot_ds"] == "2026-01-14"
    assert out["rows"] == {"dcm": 300, "cr": 300}
    assert max(out["max_abs_diff_vs_eager"].values()) < 1e-5
    assert out["shards"] == cfg.index.shards
    names = sorted(p.name for p in partition_dir(cfg.table("item_embeddings"), DS).glob("*.parquet"))
    assert names and all(n.startswith(("shard-00000-of-00002.", "shard-00001-of-00002.")) for n in names)
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


@pytest.mark.spark
def test_stage_fails_when_spark_rows_disagree_with_eager_tower(cfg, spark, towers_env):
    from mer.stages.spark_jobs.item_inference import run

    fx.make_models(cfg, DS)
    cfg.train = cfg.train.model_copy(update={"embed_dim": 16})
    fx.write_item_features(cfg, DS, n=200)
    run(cfg, DS)  # the honest tower's partition
    before = read_partition(cfg.table("item_embeddings"), DS)

    cfg.index.serving_module = "tests.corrupt_tower_fixture"
    with pytest.raises(GateError, match=r"item inference parity failed over 200 sampled items, index.parity_tolerance=0.0001: "
                                        r"model dcm \(model_version dcm-2026-01-15-fx\): max \|spark - eager\| = 0.01; "
                                        r"model cr \(model_version cr-2026-01-15-fx\): max \|spark - eager\| = 0.01$"):
        run(cfg, DS)
    # The disagreeing rows never replaced the partition.
    assert read_partition(cfg.table("item_embeddings"), DS).equals(before)


@pytest.mark.spark
def test_inference_without_snapshot_names_table(cfg, spark, towers_env):
    from mer.stages.spark_jobs.item_inference import run

    fx.make_models(cfg, DS)
    with pytest.raises(ContractError, match="item_features"):
        run(cfg, DS)


def test_inference_without_models_is_clear(cfg, towers_env):
    from mer.stages.spark_jobs.item_inference import run

    with pytest.raises(MerError, match="no served model"):
        run(cfg, DS)


# ---------------------------------------------------------------- in-process: worker cache, parity gate
def _models(cfg):
    """What ``run`` ships to the workers: name -> (folder, model_version, content digest)."""
    from mer.stages.spark_jobs.item_inference import model_digest

    out = {}
    for m in fx.SERVED_MODELS:
        folder = fx.model_dir(cfg, DS, m)
        out[m] = (str(folder), fx.load_item_encoder(folder).model_version, model_digest(folder))
    return out


def _emb(batch) -> np.ndarray:
    return np.stack(batch.column("embedding").to_numpy(zero_copy_only=False))


def _written(out_dir, version) -> dict[int, np.ndarray]:
    """item_id -> embedding of one model_version in the files a run staged."""
    table = pq.read_table(sorted(out_dir.glob("*.parquet")))
    rows = table.filter(pc.equal(table.column("model_version"), version))
    return dict(zip(rows.column("item_id").to_pylist(), _emb(rows)))


def test_reused_worker_serves_retrained_weights(cfg, tmp_path):
    fx.make_models(cfg, DS)
    feats = fx.write_item_features(cfg, DS, n=40)
    folder = fx.model_dir(cfg, DS, "dcm")
    version = fx.load_item_encoder(folder).model_version
    (tmp_path / "before").mkdir()
    _write_like_spark(cfg, tmp_path / "before")
    before = _written(tmp_path / "before", version)

    # Retrained into the same folder (new weights); this process plays the reused Python worker.
    conf = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**conf, "seed": conf["seed"] + 1}))
    (tmp_path / "after").mkdir()
    _write_like_spark(cfg, tmp_path / "after")
    after = _written(tmp_path / "after", version)

    retrained = dict(zip(feats.column("item_id").to_pylist(), fx.load_item_encoder(folder).encode(feats.to_pandas())))
    assert sorted(after) == sorted(before) == sorted(retrained)
    assert max(np.abs(after[i] - retrained[i]).max() for i in retrained) < 1e-6
    assert max(np.abs(before[i] - retrained[i]).max() for i in retrained) > 1e-2


def _write_like_spark(cfg, out_dir, shards=2):
    """The Spark job's task body over every slice, run here: the bucketed files a run would stage."""
    from mer.stages.spark_jobs.item_inference import encode_slices, encoder_columns, plan_slices

    models = _models(cfg)
    columns = encoder_columns([fx.load_item_encoder(d) for d, _, _ in models.values()])
    slices, _ = plan_slices(partition_dir(cfg.raw_table("item_features"), DS), DS, columns, parallelism=2)
    fn = encode_slices(MODULE, models, slices, columns, str(out_dir), batch_rows=16, shards=shards)
    list(fn(iter([pa.record_batch([pa.array(range(len(slices)), pa.int64())], names=["id"])])))
    return models


def test_parity_gate_fails_on_a_corrupted_embedding_row(cfg, tmp_path):
    from mer.stages.index.shards import bucket_paths
    from mer.stages.spark_jobs.item_inference import check_parity, eager_max_abs_diff

    fx.make_models(cfg, DS)
    fx.write_item_features(cfg, DS, n=60)
    out = tmp_path / "staging"
    out.mkdir()
    models = _write_like_spark(cfg, out)
    versions = {m: v for m, (_, v, _) in models.items()}
    assert len(list(out.glob("*.parquet"))) == 2 * len(bucket_paths(out, 0, 2))  # one file per (slice, shard)
    diffs = eager_max_abs_diff(cfg, out, DS, MODULE, models, n=60, seed=0)
    assert max(diffs.values()) < 1e-5
    check_parity(diffs, versions, 60, cfg.index.parity_tolerance)  # the honest output passes

    # One written dcm row off by 0.01 in one value.
    f = next(p for p in bucket_paths(out, 1, 2) if pq.read_metadata(p).num_rows)
    t = pq.read_table(f)
    row = next(i for i, v in enumerate(t.column("model_version").to_pylist()) if v == versions["dcm"])
    emb = t.column("embedding").to_pylist()
    emb[row] = [emb[row][0] + 0.01] + emb[row][1:]
    pq.write_table(t.set_column(2, "embedding", pa.array(emb, t.schema.field("embedding").type)), f)

    diffs = eager_max_abs_diff(cfg, out, DS, MODULE, models, n=60, seed=0)
    assert diffs["dcm"] == pytest.approx(0.01, abs=1e-5) and diffs["cr"] < 1e-5
    with pytest.raises(GateError, match=r"parity failed over 60 sampled items, index.parity_tolerance=0.0001: "
                                        r"model dcm \(model_version dcm-2026-01-15-fx\): max \|spark - eager\| = 0.01$"):
        check_parity(diffs, versions, 60, cfg.index.parity_tolerance)
