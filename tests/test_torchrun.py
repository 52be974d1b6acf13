"""Data-parallel training: DCM on the tiny model fixture, single process vs ``torchrun --nproc_per_node 2``
(gloo on CPU). The two-process run must reach about the same eval HR, both must beat a random tower,
and the artifacts rank 0 writes must load back and reproduce the recorded HR.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mer.base.config import REPO_ROOT, MerConfig
from tests.model_fixture import DS, build, small_cfg

TORCHRUN = Path(sys.executable).with_name("torchrun")
HR_TOLERANCE = 0.08  # absolute HR@100; the 2-process run takes half the optimizer steps of twice the batch


def env_for(root: Path, cfg: MerConfig) -> dict[str, str]:
    """The test's config for a subprocess: a YAML file (JSON is YAML) named by MER_CONFIG_FILE."""
    conf = root / "mer.yaml"
    data = cfg.model_dump(mode="json")
    data["train"]["epochs"] = cfg.train.epochs
    conf.write_text(json.dumps(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MER_")}
    env.update({"MER_CONFIG_FILE": str(conf), "MER_ROOT": str(root), "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO_ROOT)})
    return env


def val_hr(cfg: MerConfig, net) -> float:
    from mer.stages.model.data import (
        corpus_rows,
        load_catalog,
        load_topic_vocab,
        read_eval,
    )
    from mer.stages.model.scoring import eval_batch, hr_at

    catalog = load_catalog(cfg, DS, load_topic_vocab(cfg, DS))
    # the records early stopping scores: the validation day's "stop" users (data.validation_part)
    ev = eval_batch(read_eval(cfg, DS, cfg.train.early_stop_records, cfg.train.seed, split="val", part="stop"),
                    catalog, net.c.history_len)
    with torch.no_grad():
        return hr_at(net, ev, catalog, corpus_rows(cfg, DS, catalog), 100)


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed in this interpreter's bin/")
def test_torchrun_two_processes_matches_single_process(tmp_path):
    from mer.stages.model.item_tower import TowerConfig
    from mer.stages.model.train import load_model
    from mer.stages.model.zoo import TwoTower

    base = small_cfg(MerConfig(root=tmp_path / "single"))
    base.train = base.train.model_copy(update=dict(epochs=3, min_steps=0, patience=3, num_threads=1))
    build(base)
    shutil.copytree(base.root, tmp_path / "ddp")
    cfg_ddp = base.model_copy(update={"root": tmp_path / "ddp"})

    cmd = ["-m", "mer.app.torchrun", "--ds", DS, "--model", "dcm"]
    single = subprocess.run([sys.executable, *cmd], env=env_for(base.root, base), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", *cmd],
                         env=env_for(cfg_ddp.root, cfg_ddp), cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    out1 = json.loads(single.stdout[single.stdout.index("{"):])
    out2 = json.loads(ddp.stdout[ddp.stdout.index("{"):])  # rank 0 alone prints
    assert out1["world_size"] == 1 and out2["world_size"] == 2
    # Each rank trained on its own half: together they saw about as many examples per epoch.
    m1 = json.loads((base.run_dir(DS) / "models" / "dcm" / "metrics.json").read_text())
    m2 = json.loads((cfg_ddp.run_dir(DS) / "models" / "dcm" / "metrics.json").read_text())
    ex1, ex2 = m1["curve"][0]["examples"], m2["curve"][0]["examples"]
    assert abs(ex1 - ex2) <= 2 * base.train.batch_size, (ex1, ex2)
    assert m2["curve"][0]["steps"] < m1["curve"][0]["steps"]

    # Artifacts load back and reproduce the HR they recorded.
    net1, _ = load_model(base.run_dir(DS) / "models" / "dcm")
    net2, conf2 = load_model(cfg_ddp.run_dir(DS) / "models" / "dcm")
    hr1, hr2 = val_hr(base, net1), val_hr(cfg_ddp, net2)
    assert hr1 == pytest.approx(out1["best_val_hr@100"], abs=1e-6)
    assert hr2 == pytest.approx(out2["best_val_hr@100"], abs=1e-6)

    # Training learned something: both beat a random tower by a margin. The reference has no pretrained linear
    # path: with it, an untrained tower already scores items by (a random projection of) their pretrained
    # geometry, the pretrained-kNN baseline, by design; both runs must also beat that untrained start.
    torch.manual_seed(123)
    hr_random = val_hr(base, TwoTower(TowerConfig(**{**conf2["tower"], "pre_skip": False})).eval())
    torch.manual_seed(123)
    hr_start = val_hr(base, TwoTower(TowerConfig(**conf2["tower"])).eval())
    assert hr1 > hr_random + 0.1 and hr2 > hr_random + 0.1, (hr1, hr2, hr_random)
    assert hr1 > hr_start + 0.03 and hr2 > hr_start + 0.03, (hr1, hr2, hr_start)
    assert abs(hr2 - hr1) <= HR_TOLERANCE, (hr1, hr2)
