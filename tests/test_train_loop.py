"""The training loop reads what each tower declares (mer/stages/model/tower_spec.py), never a model name; every
way to end up with nothing to train on or nothing to keep is a clear one-line error; the item encoder keeps
no hidden module state."""
from __future__ import annotations

import ast
import gc
import math
import shutil
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mer.base.config import MerConfig
from mer.base.errors import ConfigError, ContractError, MerError
from mer.base.io import latest_partition, read_partition, write_partition
from tests.model_fixture import DS, build, small_cfg


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> MerConfig:
    cfg = small_cfg(MerConfig(root=tmp_path_factory.mktemp("loop") / "var"))
    cfg.train = cfg.train.model_copy(update={"epochs": 1})
    build(cfg)
    return cfg


@pytest.fixture
def cfg(built, tmp_path) -> MerConfig:
    """A private copy of the built fixture, free to damage."""
    shutil.copytree(built.root, tmp_path / "var")
    return built.model_copy(update={"root": tmp_path / "var"})


def _strip_conditions(cfg: MerConfig, split: str) -> None:
    """training_examples with condition_id nulled on every row of one split."""
    t = read_partition(cfg.table("training_examples"), DS)
    cond = pc.if_else(pc.equal(t.column("split"), split), pa.scalar(None, pa.int64()), t.column("condition_id"))
    write_partition(cfg.table("training_examples"), DS, t.set_column(t.schema.get_field_index("condition_id"),
                                                                     "condition_id", cond))


# ------------------------------------------------------------------------------------- declarations, not names
def test_the_training_loop_names_no_model():
    from mer.stages.model import train
    from mer.stages.model.names import ALL_MODELS

    tree = ast.parse(Path(train.__file__).read_text())
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in ALL_MODELS}
    assert not named, f"train.py branches on model names {sorted(named)}: declare it on the tower (TowerSpec)"


def test_every_tower_declares_exactly_the_variants_it_is_offered_with():
    from mer.stages.model.names import ALL_MODELS, DEFAULT_VARIANT, TRAINED, VARIANTS
    from mer.stages.model.zoo import FITTERS, TOWERS

    assert set(TOWERS) == set(TRAINED)
    for m in TRAINED:
        plain = set() if m in DEFAULT_VARIANT else {None}  # a model with a default variant has no plain form
        assert set(TOWERS[m].SPECS) == set(VARIANTS.get(m, ())) | plain, m
    assert set(FITTERS) == set(ALL_MODELS) - set(TRAINED)  # everything else is fitted, not trained


def test_a_tower_trains_from_its_declaration_alone(cfg, monkeypatch):
    """A tower the loop has never heard of, declaring logged conditions, trains on the conditioned rows only."""
    from mer.stages.model import zoo
    from mer.stages.model.single import SingleTower
    from mer.stages.model.tower_spec import TowerSpec
    from mer.stages.model.train import step_budget, train_tower

    class ConditionedSingle(SingleTower):
        SPECS = {None: TowerSpec(condition="logged")}

    monkeypatch.setitem(zoo.TOWERS, "condsingle", ConditionedSingle)
    fit = train_tower(cfg, DS, "condsingle", None)
    conditioned = step_budget(cfg, DS, ConditionedSingle.SPECS[None])
    assert fit["extra"]["step_budget"] == conditioned[1] < step_budget(cfg, DS, TowerSpec())[1]
    t = read_partition(cfg.table("training_examples"), DS).filter(pc.field("split") == "train")
    with_condition = t.filter(pc.field("condition_id").is_valid()).num_rows
    assert 0 < fit["train_examples_seen"] <= with_condition * len(fit["curve"])
    assert fit["net"].c.k == 1 and fit["net"].c.model == "condsingle"


def test_variant_overrides_reach_the_tower_config(built):
    from mer.stages.model.zoo import tower_config

    def conf(model, variant):
        return tower_config(built, model, variant, pre_dim=16, topic_vocab=[1, 2])

    assert conf("dcm", None).k == built.train.k_im and conf("dcm", "k2").k == 2 and conf("dcm", "k7").k == 7
    assert conf("dcm", "k4").k == 4  # the variant of the runs before session 20: their folders still load
    assert conf("dcm", "no-sar").sar is False and conf("dcm", "no-vafpi").va_fpi is False
    assert conf("single", None).k == 1 and conf("cr", "item").k == 1 and conf("token", None).k == built.train.k_im
    with pytest.raises(MerError, match="model 'single' has no variant 'k2'"):
        conf("single", "k2")


# ---------------------------------------------------------------------------------- the weights that are kept
@pytest.mark.parametrize("decay, kept", [(0.5, 2.25), (0.0, 3.0)])
def test_the_kept_weights_are_the_moving_average_of_the_trained_ones(cfg, monkeypatch, decay, kept):
    """Three steps that set every weight to 1, 2, 3: with decay 0.5 the scored and kept weights are the EMA
    (1 -> 0.5 * 1 + 0.5 * 2 = 1.5 -> 0.5 * 1.5 + 0.5 * 3 = 2.25); with decay 0 the last raw weights (3)."""
    import torch

    from mer.stages.model import train

    steps, scored = [], []

    def fake_step(net, *a, **k):
        steps.append(len(steps) + 1)
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(steps[-1]))
        return 1.0

    def fake_hr(net, *a, **k):
        scored.append(next(net.parameters()).flatten()[0].item())
        return 0.5

    monkeypatch.setattr(train, "train_step", fake_step)
    monkeypatch.setattr(train, "hr_at", fake_hr)
    cfg.train = cfg.train.model_copy(update={"ema_decay": decay, "max_steps_per_epoch": 3, "epochs": 1})
    fit = train.train_tower(cfg, DS, "single", None)
    assert steps == [1, 2, 3] and scored == [pytest.approx(kept)]  # one period; the EMA is what was scored
    for name, p in fit["net"].named_parameters():
        assert torch.allclose(p, torch.full_like(p, kept)), name


SCORES = {"rising": list(np.linspace(0.1, 0.9, 10)), "fell": [0.9, 0.1] + [0.1] * 8,
          "level": [0.5, 0.499] + [0.0] * 8}  # level: 0.001 below the best, within any sample's standard error


@pytest.mark.parametrize("epochs, curve, tolerance, max_cycles, frac, lr_frac, steps_run, cycles", [
    (2, "rising", 1.0, 2, 0.5, 0.5, 16, 2),  # two cycles of 4 steps
    (2, "rising", 1.0, 1, 1.0, 0.3, 16, 1),  # one cycle of 8 steps (extend_frac 1), restarted at 0.3 x lr
    (2, "rising", 1.0, 0, 0.5, 0.5, 8, 0),  # extensions off
    (2, "fell", 1.0, 2, 0.5, 0.5, 8, 0),  # the score fell far below its best: the budget was enough
    (2, "level", 1.0, 2, 0.5, 0.5, 12, 1),  # level within the noise: one cycle, and its period fell: no second
    (2, "level", 0.0, 2, 0.5, 0.5, 8, 0),  # tolerance 0: only a last period at the best extends
    (1, "rising", 1.0, 2, 0.5, 0.5, 4, 0),  # one period alone says nothing about a trend
])
def test_a_tower_still_gaining_at_the_end_of_its_budget_trains_another_cycle(cfg, monkeypatch, epochs, curve,
                                                                              tolerance, max_cycles, frac, lr_frac,
                                                                              steps_run, cycles):
    """Budget `epochs` periods x 4 steps. A validation score still at its best (within extend_tolerance standard
    errors) at the budget's end buys up to extend_cycles cycles of extend_frac x the budget (at least a period),
    each restarting the LR at extend_lr_frac x lr and decaying it to lr_final_frac x lr; a score that fell buys
    none."""
    from mer.stages.model import train

    lrs, scores = [], iter(SCORES[curve])

    def fake_step(net, batch, log_q, opt, *a, **k):
        lrs.append(opt.param_groups[0]["lr"])
        return 1.0

    monkeypatch.setattr(train, "train_step", fake_step)
    monkeypatch.setattr(train, "hr_at", lambda *a, **k: float(next(scores)))
    cfg.train = cfg.train.model_copy(update={
        "max_steps_per_epoch": 4, "epochs": epochs, "min_steps": 0, "lr": 1.0, "warmup_frac": 0.05, "lr_final_frac": 0.1,
        "extend_cycles": max_cycles, "extend_frac": frac, "extend_lr_frac": lr_frac, "extend_tolerance": tolerance,
        "patience": 5})
    fit = train.train_tower(cfg, DS, "single", None)
    budget = 4 * epochs
    assert len(lrs) == steps_run and len(fit["curve"]) == steps_run // 4
    assert (fit["extra"]["step_budget"], fit["extra"]["extended_steps"], fit["extra"]["extra_cycles"]) == (
        budget, steps_run - budget, cycles)
    assert lrs[0] == pytest.approx(1.0)
    if epochs == 2:
        assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 6 / 7)))
    if cycles:  # each cycle warms up (one step: 5% of its length rounds up to 1) to lr_frac x lr, then decays
        extra = (steps_run - budget) // cycles
        restarts = [lrs[budget + i * extra] for i in range(cycles)]
        assert restarts == pytest.approx([lr_frac] * cycles)
        assert lrs[budget + extra - 1] == pytest.approx(
            0.1 + (lr_frac - 0.1) * 0.5 * (1 + math.cos(math.pi * (extra - 2) / (extra - 1))))


def test_still_gaining_allows_the_best_periods_binomial_standard_error():
    from mer.stages.model.train import still_gaining

    # best 0.5 over 100 records: standard error sqrt(0.25 / 100) = 0.05
    assert still_gaining(0.46, 0.5, 100, 1.0) and not still_gaining(0.44, 0.5, 100, 1.0)
    assert still_gaining(0.41, 0.5, 100, 2.0) and not still_gaining(0.39, 0.5, 100, 2.0)
    assert still_gaining(0.5, 0.5, 100, 0.0) and not still_gaining(0.4999, 0.5, 100, 0.0)
    # best 0.9 over 400 records: sqrt(0.09 / 400) = 0.015
    assert still_gaining(0.886, 0.9, 400, 1.0) and not still_gaining(0.884, 0.9, 400, 1.0)
    # a perfect (or empty) best has no spread: only the best itself counts
    assert still_gaining(1.0, 1.0, 50, 1.0) and not still_gaining(0.99, 1.0, 50, 1.0)
    assert not still_gaining(-1.0, -1.0, 50, 1.0)  # the loop's "no score" (NaN) against no score


def test_an_extension_that_would_climb_instead_of_decay_is_a_config_error():
    from mer.base.config import TrainConfig

    with pytest.raises(ValueError, match=r"train.extend_lr_frac=0.05 must be above train.lr_final_frac=0.1"):
        TrainConfig(extend_lr_frac=0.05)
    assert TrainConfig(extend_lr_frac=0.05, extend_cycles=0).extend_cycles == 0  # off: nothing to check


def test_the_same_weights_get_the_same_model_version(cfg, monkeypatch):
    """The version is a digest of the weights, not of the file: safetensors orders the alias map of DCM's shared
    item tower differently from one save to the next, and two identical trainings got two versions."""
    import torch

    from mer.stages.model import train
    from mer.stages.model.zoo import TwoTower, tower_config

    monkeypatch.setattr(train, "export_user_tower", lambda *a, **k: None)  # the export is not what is tested
    torch.manual_seed(0)
    net = TwoTower(tower_config(cfg, "dcm", None, pre_dim=16, topic_vocab=list(range(100, 108))))

    def version() -> str:
        return train.save_artifacts(cfg, DS, "dcm", net, net.c, [], {})["model_version"]

    first = version()
    assert {version() for _ in range(4)} == {first}
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] += 1e-3
    assert version() != first


# ------------------------------------------------------------------------ nothing to train on, nothing to keep
def test_no_conditioned_validation_rows_is_a_clear_error(cfg):
    from mer.stages.model.train import run

    _strip_conditions(cfg, "val")
    with pytest.raises(ContractError, match=r"training_examples: no validation-day rows \(split='val'\) for model "
                                            rf"cr in ds={DS} with a condition_id"):
        run(cfg, DS, "cr")


def test_cr_source_without_logged_train_conditions_trains_on_item_topics(cfg):
    from mer.stages.model.train import run

    _strip_conditions(cfg, "train")  # no logged source interest in train: every row falls back to its item's topic
    out = run(cfg, DS, "cr", "source")
    assert out["steps"] > 0 and (cfg.run_dir(DS) / "models" / "cr" / "config.json").is_file()


def test_no_conditioned_train_rows_is_a_clear_error(cfg, monkeypatch):
    from mer.stages.model import train

    _strip_conditions(cfg, "train")  # nothing logged, and (below) no item has a topic to fall back to
    monkeypatch.setattr(train, "sample_item_conditions", lambda table, *a: np.full(table.num_rows, -1, np.int64))
    with pytest.raises(ContractError, match=r"training_examples: no usable train rows \(split='train'\) for "
                                            rf"model cr in ds={DS} \(it needs rows with a known condition_id\)"):
        train.run(cfg, DS, "cr", "source")
    assert not (cfg.run_dir(DS) / "models" / "cr").exists()


def test_a_zero_step_budget_is_a_config_error_not_a_type_error(cfg):
    from mer.stages.model.train import run

    cfg.train = cfg.train.model_copy(update={"epochs": 0, "min_steps": 0})
    with pytest.raises(ConfigError, match=r"train.epochs=0 and train.min_steps=0: the step budget is 0"):
        run(cfg, DS, "single")


def test_no_validation_score_in_any_period_is_a_clear_error(cfg, monkeypatch):
    """An HR that is NaN every period (e.g. an empty scored batch) leaves no best weights: said, not a TypeError."""
    from mer.stages.model import train

    monkeypatch.setattr(train, "hr_at", lambda *a, **k: math.nan)
    with pytest.raises(MerError, match=rf"training_examples: model single got no validation-day score "
                                       rf"\(split='val'\) in ds={DS}"):
        train.run(cfg, DS, "single")
    assert not (cfg.run_dir(DS) / "models" / "single").exists()


def test_a_nan_validation_score_buys_no_extension(cfg, monkeypatch):
    """NaN is no score: it is never "within the noise of the best", so the budget is not extended on it."""
    from mer.stages.model import train

    calls = []
    monkeypatch.setattr(train, "train_step", lambda *a, **k: 1.0)
    monkeypatch.setattr(train, "hr_at", lambda *a, **k: calls.append(1) or math.nan)
    cfg.train = cfg.train.model_copy(update={"max_steps_per_epoch": 4, "epochs": 2, "min_steps": 0, "patience": 5,
                                             "extend_cycles": 2, "extend_tolerance": 1.0})
    with pytest.raises(MerError, match="got no validation-day score"):
        train.train_tower(cfg, DS, "single", None)
    assert len(calls) == 2  # the budget's two periods, no cycle after them


# ------------------------------------------------------------------------------------ serving: no hidden state
@pytest.fixture(scope="module")
def two_versions(built, tmp_path_factory):
    """Two model folders of different versions (dcm, single) trained a few steps, and the item_features rows."""
    from mer.stages.model.train import run

    cfg = built.model_copy(update={"root": tmp_path_factory.mktemp("serve") / "var"})
    shutil.copytree(built.root, cfg.root)
    cfg.train = cfg.train.model_copy(update={"max_steps_per_epoch": 2})
    folders = []
    for m in ("dcm", "single"):
        run(cfg, DS, m)
        folders.append(cfg.run_dir(DS) / "models" / m)
    items = read_partition(cfg.raw_table("item_features"), latest_partition(cfg.raw_table("item_features"), DS))
    return folders, items


def _counting_extractions(monkeypatch) -> list[int]:
    from mer.stages.model import serving

    calls: list[int] = []
    real = serving.item_arrays

    def counted(table, *a, **k):
        calls.append(table.num_rows)
        return real(table, *a, **k)

    monkeypatch.setattr(serving, "item_arrays", counted)
    return calls


def test_encoders_of_different_versions_do_not_share_a_hidden_cache(two_versions, monkeypatch):
    from mer.stages.model.serving import FeatureCache, load_item_encoder

    folders, items = two_versions
    batch = items.to_batches()[0]
    fresh = [load_item_encoder(f).encode_arrow(batch) for f in folders]  # the reference, each from scratch
    calls = _counting_extractions(monkeypatch)
    a, b = (load_item_encoder(f) for f in folders)
    assert a.model_version != b.model_version
    out_a, out_b = a.encode_arrow(batch), b.encode_arrow(batch)
    assert len(calls) == 2, "the second model version reused the first one's features through module state"
    assert np.array_equal(out_a, fresh[0]) and np.array_equal(out_b, fresh[1])

    # Sharing is explicit: encoders handed one cache extract a batch's features once, with the same results.
    calls.clear()
    shared = FeatureCache()
    a, b = (load_item_encoder(f, features=shared) for f in folders)
    assert np.array_equal(a.encode_arrow(batch), fresh[0]) and np.array_equal(b.encode_arrow(batch), fresh[1])
    assert len(calls) == 1
    other = items.slice(0, 10).to_batches()[0]  # another snapshot's rows: extracted anew, not served stale
    assert np.allclose(a.encode_arrow(other), fresh[0][:10], atol=1e-6)  # (another batch shape: float rounding)
    assert len(calls) == 2


def test_an_encoded_batch_is_not_kept_alive(two_versions):
    from mer.stages.model.serving import load_item_encoder

    folders, items = two_versions
    enc = load_item_encoder(folders[0])
    batch = pa.RecordBatch.from_pylist(items.slice(0, 50).to_pylist(), schema=items.schema)
    enc.encode_arrow(batch)
    ref = weakref.ref(batch)
    del batch, enc
    gc.collect()
    assert ref() is None, "the item encoder's feature cache holds the last batch after the encoder is gone"
