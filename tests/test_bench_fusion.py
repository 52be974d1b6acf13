"""bench/bench_fusion.py: a tower's score + beta x pretrained-max, beta chosen on the validation day. Its two parts
must be the figures `mer evaluate` gives the tower and the pretrained-max baseline on the same records."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mer.base.config import MerConfig
from tests.model_fixture import DS, build, small_cfg

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_fusion.py"


def test_fusion_parts_are_the_evaluated_tower_and_baseline_and_beta_is_the_validation_best(tmp_path, monkeypatch):
    from mer.stages.model import compare

    # the bench reads the root's config as `mer` would: the fixture's sizes come from the environment
    monkeypatch.setenv("MER_BUILD__HISTORY_LEN", "20")
    monkeypatch.setenv("MER_EVAL__MAX_EVAL_RECORDS", "500")
    cfg = small_cfg(MerConfig(root=tmp_path / "var"))
    cfg.train = cfg.train.model_copy(update={"epochs": 2, "num_threads": 1})
    cfg.eval = cfg.eval.model_copy(update={"ks": [100]})
    build(cfg)
    compare.run(cfg, DS, only=["dcm", "pinnersage", "pretrained-max"])
    monkeypatch.syspath_prepend(str(BENCH.parent))  # as tests/test_bench_setting.py imports its bench
    import bench_fusion

    out = bench_fusion.main([str(cfg.root), "--ds", DS, "--betas", "0,0.5,4"])
    val = out["val"]
    assert set(val["hr"]) == {"0.0", "0.5", "4.0"}
    assert val["hr"][str(val["beta"])] == max(val["hr"].values())  # the eval day uses the validation's best

    from mer.base.io import read_partition

    m = read_partition(cfg.table("eval_metrics"), DS).to_pandas()

    def evaluated(model: str, segment: str = "all", variant: str = "") -> float:
        row = m[(m.model == model) & (m.variant == variant) & (m.split == "eval") & (m.metric == "hr@100")
                & (m.segment == segment)]
        return round(float(row.value.iloc[0]), 4)

    ev = out["eval"]
    for segment in ev["tower"]:
        assert ev["tower"][segment] == evaluated("dcm", segment)
        assert ev["pretrained-max"][segment] == evaluated("pretrained", segment, "max")
        assert ev["pinnersage"][segment] == evaluated("pinnersage", segment)
    lo, ratio, hi = (out["ratios"]["fused/tower/all"][i] for i in (1, 0, 2))
    assert lo <= ratio <= hi and np.isclose(ratio, ev["fused"]["all"] / ev["tower"]["all"], atol=1e-3)
    if val["beta"] == 0:
        assert ev["fused"] == ev["tower"]


def test_fused_rank_known_answer(monkeypatch):
    """Three corpus items (catalog rows 1-3), the positive is row 3: the tower ranks it last, pretrained-max first;
    tower + beta x pretrained moves it to the top only once beta is large enough (0.5: 0.575 < 0.9; 1: 1.05 > 0.9)."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    import bench_fusion

    sc = object.__new__(bench_fusion.Scores)
    tower, pre = np.array([[0.9, 0.5, 0.1]]), np.array([[0.0, 0.3, 0.95]])
    sc.parts = lambda sl, cols: (tower[sl][:, cols - 1], pre[sl][:, cols - 1])
    corpus, pos, tiebreak = np.array([1, 2, 3]), np.array([3]), np.zeros(4)
    assert [int(sc.ranks(b, pos, corpus, tiebreak)[0]) for b in (0.0, 0.5, 1.0, float("inf"))] == [2, 2, 0, 0]
