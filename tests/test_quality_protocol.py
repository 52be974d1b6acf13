"""The evaluation protocol: the eval day never reaches training, early stopping, tuning or baseline fitting;
known answers for the paired bootstrap interval and the novel-record filter."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from mer.base.config import MerConfig
from mer.base.io import read_partition, write_partition
from mer.stages.model.intervals import paired_bootstrap_ratio
from tests.model_fixture import DS, build, small_cfg


def _scramble_eval_day(cfg: MerConfig) -> int:
    """Replace every eval-day row of training_examples by garbage (other targets, reversed histories)."""
    t = read_partition(cfg.table("training_examples"), DS)
    return _scramble(cfg, t, pc.equal(t.column("split"), "eval"))


def _scramble(cfg: MerConfig, t: pa.Table, rows) -> int:
    """Replace the rows of training_examples where `rows` by garbage (other targets, reversed histories)."""
    is_eval = pa.array(np.asarray(rows, dtype=bool))
    ev, rest = t.filter(is_eval), t.filter(pc.invert(is_eval))
    rng = np.random.default_rng(99)
    items = ev.column("item_id").to_numpy()
    ev = ev.set_column(ev.schema.get_field_index("item_id"), "item_id", pa.array(rng.permutation(items) + 1))
    hist = [list(reversed(h)) for h in ev.column("hist_item_ids").to_pylist()]
    ev = ev.set_column(ev.schema.get_field_index("hist_item_ids"), "hist_item_ids",
                       pa.array(hist, type=pa.list_(pa.int64())))
    write_partition(cfg.table("training_examples"), DS, pa.concat_tables([rest, ev]))
    return ev.num_rows


@pytest.fixture(scope="module")
def two_roots(tmp_path_factory):
    """The same fixture twice; in the second, the eval day's rows are scrambled."""
    cfgs = []
    for name in ("intact", "scrambled"):
        cfg = small_cfg(MerConfig(root=tmp_path_factory.mktemp(name) / "var"))
        cfg.train = cfg.train.model_copy(update={"epochs": 2})
        build(cfg)
        cfgs.append(cfg)
    assert _scramble_eval_day(cfgs[1]) > 0
    return cfgs


def test_no_eval_day_row_reaches_training_or_early_stopping(two_roots):
    from mer.stages.model.train import train_tower

    fits = [train_tower(cfg, DS, "dcm", None) for cfg in two_roots]
    assert fits[0]["best_val_hr@100"] == fits[1]["best_val_hr@100"]
    assert [c["val_hr@100"] for c in fits[0]["curve"]] == [c["val_hr@100"] for c in fits[1]["curve"]]
    a, b = (f["net"].state_dict() for f in fits)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ: an eval-day row reached training"


def test_no_eval_day_row_reaches_tuning(two_roots):
    from mer.stages.model.tune import run

    out = [run(cfg, DS, "single", trials=2) for cfg in two_roots]
    assert out[0]["trials_by_value"] == out[1]["trials_by_value"]
    trials = read_partition(two_roots[0].table("tune_trials"), DS).to_pylist()
    assert [r["trial"] for r in trials] == [0, 1] and all(r["model"] == "single" for r in trials)
    # another model's trials join the partition; single's stay. CR gets its own LR through train.by_model
    own = two_roots[0].train.model_copy(update={"by_model": {"cr": {"lr": 3e-3}}})
    run(two_roots[0].model_copy(update={"train": own}), DS, "cr", trials=1)
    trials = read_partition(two_roots[0].table("tune_trials"), DS).to_pylist()
    assert sorted(r["model"] for r in trials) == ["cr", "single", "single"]
    # trial 0 is each tower's own current settings: CR's searched from its by_model LR, single's from the shared
    lr0 = {r["model"]: json.loads(r["params"])["lr"] for r in trials if r["trial"] == 0}
    assert lr0 == {"cr": 3e-3, "single": two_roots[0].train.lr}


def test_eval_rows_are_scored_but_do_not_select(two_roots):
    """The eval day changes the eval figures (it is scored), not the validation figures bless decides on."""
    from mer.stages.model import evaluate, train

    for cfg in two_roots:
        for m in ("single", "popularity"):
            train.run(cfg, DS, m)
        evaluate.run(cfg, DS)
    tabs = [read_partition(cfg.table("eval_metrics"), DS).to_pandas() for cfg in two_roots]
    val = [t[(t.split == "val") & (t.metric == "hr@10")].sort_values(["model", "segment"]).value.tolist()
           for t in tabs]
    ev = [t[(t.split == "eval") & (t.metric == "hr@10")].sort_values(["model", "segment"]).value.tolist()
          for t in tabs]
    assert val[0] == val[1]
    assert ev[0] != ev[1]


def test_validation_users_split_into_a_stop_and_a_select_part(tmp_path, caplog):
    from mer.stages.model.data import read_eval, stop_users, validation_part

    ids = np.arange(1, 20_001)
    half, quarter = stop_users(ids, 0.5), stop_users(ids, 0.25)
    assert 0.49 < half.mean() < 0.51 and 0.24 < quarter.mean() < 0.26
    assert not (quarter & ~half).any()  # a fixed hash: a user in the first quarter is in the first half
    assert (stop_users(ids[::-1], 0.5) == half[::-1]).all()  # a user's part depends on its id alone
    assert stop_users(np.array([1, 2, 3]), 0.5).tolist() == half[:3].tolist()
    # consecutive ids alternate more than a threshold on the id would: no long run in one part
    assert max(len(r) for r in "".join("s" if h else "x" for h in half).replace("s", " s").split()) < 20

    cfg = small_cfg(MerConfig(root=tmp_path / "var"))
    build(cfg)
    val = read_eval(cfg, DS, None, 0, split="val")
    stop = read_eval(cfg, DS, None, 0, split="val", part="stop")
    sel = read_eval(cfg, DS, None, 0, split="val", part="select")
    users = [set(t.column("user_id").to_pylist()) for t in (stop, sel)]
    assert users[0] and users[1] and not users[0] & users[1]
    assert sorted(stop.column("event_id").to_pylist() + sel.column("event_id").to_pylist()) == \
        sorted(val.column("event_id").to_pylist())
    assert read_eval(cfg, DS, None, 0, split="eval", part="stop").num_rows == \
        read_eval(cfg, DS, None, 0, split="eval").num_rows  # the eval day has no parts
    sample = read_eval(cfg, DS, 50, 3, split="val", part="select")  # a sample is drawn within the part
    assert sample.num_rows == 50 and set(sample.column("user_id").to_pylist()) <= users[1]
    # a day whose users all fall in one part: both parts are every record, and a warning says so
    one = val.filter(pc.is_in(val.column("user_id"), pa.array(sorted(users[0]))))
    assert validation_part(one, "select", 0.5).num_rows == one.num_rows
    assert "all fall in one part" in caplog.text


@pytest.fixture(scope="module")
def part_roots(tmp_path_factory):
    """The fixture three times: intact, with the val rows of the early-stopping users scrambled, and with those of
    the other (select) users scrambled."""
    from mer.stages.model.data import stop_users

    cfgs = []
    for name in ("intact", "stop", "select"):
        cfg = small_cfg(MerConfig(root=tmp_path_factory.mktemp(name) / "var"))
        cfg.train = cfg.train.model_copy(update={"epochs": 2})
        build(cfg)
        if name != "intact":
            t = read_partition(cfg.table("training_examples"), DS)
            stop = stop_users(t.column("user_id").to_numpy(), cfg.train.early_stop_user_share)
            is_val = t.column("split").to_numpy(zero_copy_only=False) == "val"
            assert _scramble(cfg, t, is_val & (stop if name == "stop" else ~stop)) > 0
        cfgs.append(cfg)
    return dict(zip(("intact", "stop", "select"), cfgs))


def test_early_stopping_reads_only_its_users_and_selection_only_the_others(part_roots):
    """Early stopping never reads the select users' rows; evaluation's val figures (bless, the best baseline) and
    `mer tune`'s trial scores never read the stop users' rows."""
    from mer.stages.model import evaluate, train
    from mer.stages.model.tune import run as tune

    fits = {k: train.train_tower(cfg, DS, "dcm", None) for k, cfg in part_roots.items()}
    curve = {k: [c["val_hr@100"] for c in f["curve"]] for k, f in fits.items()}
    assert curve["intact"] == curve["select"]
    a, b = (fits[k]["net"].state_dict() for k in ("intact", "select"))
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ: a select user's row reached early stopping"
    assert curve["intact"] != curve["stop"]  # the stop users' rows are what early stopping reads

    def val_figures(cfg):
        train.run(cfg, DS, "popularity")  # fitted on the train split: its val figures depend on val rows only
        evaluate.run(cfg, DS)
        t = read_partition(cfg.table("eval_metrics"), DS).to_pandas()
        t = t[(t.split == "val") & (t.model == "popularity")]
        return t.sort_values(["metric", "segment"]).value.tolist()

    figs = {k: val_figures(cfg) for k, cfg in part_roots.items()}
    assert figs["intact"] == figs["stop"] and figs["intact"] != figs["select"]

    # a trial's score: its tower's HR@100 on the select users (trial 0 trains at the current settings), not its best
    # early-stopping figure; the stop users' rows, scrambled here, reach it only through early stopping
    from mer.stages.model.data import corpus_rows, load_catalog, read_eval
    from mer.stages.model.scoring import eval_batch, hr_at

    cfg = part_roots["stop"]
    assert cfg.tune.enqueue_defaults
    trial = tune(cfg, DS, "single", trials=1)["trials_by_value"][0]
    fit = train.train_tower(cfg, DS, "single", None)
    catalog = load_catalog(cfg, DS)
    sel = read_eval(cfg, DS, cfg.eval.max_eval_records, cfg.eval.seed, split="val", part="select")
    expect = hr_at(fit["net"], eval_batch(sel, catalog, fit["net"].c.history_len), catalog,
                   corpus_rows(cfg, DS, catalog), 100)
    assert trial["val_hr@100"] == round(expect, 4) != round(fit["best_val_hr@100"], 4)


def test_paired_bootstrap_known_answers():
    same = np.array([1, 0, 1, 1, 0, 0, 1, 0] * 50)
    assert paired_bootstrap_ratio(same, same, n_boot=200, seed=1) == (1.0, 1.0, 1.0)  # every resample: exactly 1
    # a hits wherever b hits, and on as many records again: ratio 2 on every resample that hits at all
    b = np.array([1, 0] * 200)
    a = np.ones(400)
    ratio, lo, hi = paired_bootstrap_ratio(a, b, n_boot=500, seed=3)
    assert ratio == 2.0 and lo < 2.0 < hi and lo > 1.7 and hi < 2.3
    # a binomial case: the interval's half width is close to the delta-method figure
    rng = np.random.default_rng(0)
    b = rng.random(4000) < 0.3
    a = b | (rng.random(4000) < 0.1)  # a adds hits on top of b's (paired)
    r, lo, hi = paired_bootstrap_ratio(a, b, n_boot=2000, seed=5)
    pa_, pb = a.mean(), b.mean()
    # var of the ratio of paired means: (var a - 2 r cov + r^2 var b) / (n pb^2)
    cov = np.cov(a.astype(float), b.astype(float))
    se = np.sqrt((cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (4000 * pb * pb))
    assert r == pytest.approx(pa_ / pb)
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.15)
    assert lo > 1.0  # b never hits where a misses: a is better, and the interval says so
    nan = paired_bootstrap_ratio(np.ones(5), np.zeros(5))
    assert all(np.isnan(nan))


def test_bootstrap_over_users_known_answers():
    rng = np.random.default_rng(2)
    b = rng.random(300) < 0.3
    a = b | (rng.random(300) < 0.1)
    # one record per user: resampling users is resampling records (same draws, same interval)
    assert paired_bootstrap_ratio(a, b, seed=4, groups=np.arange(300)) == paired_bootstrap_ratio(a, b, seed=4)
    # every user's record copied 20 times: the users carry the same information as before, so the interval over
    # users is the one of the 300 originals, while one over records (6,000 "independent" records) is ~sqrt(20)
    # narrower: the false certainty MovieLens's eval day (4,894 records from 50 users) would give
    users = np.repeat(np.arange(300), 20)
    a20, b20 = np.repeat(a, 20), np.repeat(b, 20)
    by_user = paired_bootstrap_ratio(a20, b20, seed=4, groups=users)
    assert by_user == pytest.approx(paired_bootstrap_ratio(a, b, seed=4))
    _, lo, hi = paired_bootstrap_ratio(a20, b20, seed=4)
    assert (by_user[2] - by_user[1]) / (hi - lo) == pytest.approx(np.sqrt(20), rel=0.2)
    # ten users, all of a user's records agreeing: a wins on 6 users, b on 4. Over records (1,000 of them) that
    # looks certain; over users it is not shown
    users = np.repeat(np.arange(10), 100)
    a = np.repeat(np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0]), 100)
    b = 1 - a
    r, lo, hi = paired_bootstrap_ratio(a, b, seed=0)
    assert r == 1.5 and lo > 1.2
    r, lo, hi = paired_bootstrap_ratio(a, b, seed=0, groups=users)
    assert r == 1.5 and lo < 1.0 < hi


def test_eval_intervals_resample_users():
    from mer.stages.model.evaluate import ModelEval, intervals

    # 6 users x 50 records; dcm hits every record of users 0-3, single every record of users 0-2 and 4-5:
    # dcm 200 hits vs single 250. Over users the interval must be the grouped one (and contain 1)
    users = np.repeat(np.arange(6), 50)
    rec = np.arange(300)
    hit = lambda who: np.where(np.isin(users, who), 0, 500)  # noqa: E731 (rank 0 = hit, 500 = miss)
    res = {"dcm": ModelEval("dcm", "dcm", "", records=rec, ranks=hit([0, 1, 2, 3])),
           "single": ModelEval("single", "single", "", records=rec, ranks=hit([0, 1, 2, 4, 5]))}
    rows = intervals(res, np.ones(300, bool), np.array(["core"] * 300), users, None, 100, seed=3, n_boot=500)
    row = next(r for r in rows if r["name"] == "dcm" and r["records"] == "all" and r["segment"] == "all")
    assert (row["n"], row["users"], row["ratio"]) == (300, 6, 0.8)
    a, b = hit([0, 1, 2, 3]) < 100, hit([0, 1, 2, 4, 5]) < 100
    assert (row["lo"], row["hi"]) == paired_bootstrap_ratio(a, b, 500, 3, groups=users)[1:]
    assert row["lo"] < 1 < row["hi"]
    assert paired_bootstrap_ratio(a, b, 500, 3)[2] < 1  # over records it would claim dcm is worse


def test_novel_record_filter():
    from mer.stages.model.data import build_catalog, make_batch

    items = pa.table({"item_id": [10, 11, 12], "pretrained_embedding": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                      "category_id": [1, 1, 2], "creator_id": [1, 2, 3], "topic_ids": [[5], [5], [6]],
                      "topic_scores": [[1.0], [1.0], [1.0]]})
    catalog = build_catalog(items, np.array([5, 6]), 8, 8)
    ts = pa.array([0, 0, 0], type=pa.timestamp("us"))
    table = pa.table({
        "event_id": ["a", "b", "c"], "user_id": [1, 2, 3], "item_id": [10, 12, 11], "event_ts": ts,
        "hist_item_ids": [[10, 11], [10, 11], []],  # a repeat, a new item, no history at all (oldest first)
        "hist_ts": pa.array([[0, 0], [0, 0], []], type=pa.list_(pa.timestamp("us"))),
        "hist_valid": [[False, True], [True, True], []], "condition_id": pa.array([None] * 3, type=pa.int64()),
        "segment": ["core", "core", "non_core"]})
    # a repeat is a repeat even when that history slot is not valid (a hide of the same item counts)
    assert make_batch(table, catalog, 4).novel().tolist() == [False, True, True]
    # only the history the models see counts: with one slot, user 1's older engagement of item 10 drops out
    assert make_batch(table, catalog, 1).novel().tolist() == [True, True, True]


def _metrics(cfg: MerConfig, rows: list[tuple[str, str, float]]) -> None:
    from mer.base.contract import EVAL_METRICS

    recs = [{"model": m.partition("-")[0], "variant": m.partition("-")[2], "split": split, "metric": "hr@100",
             "segment": "all", "value": v} for m, split, v in rows]
    write_partition(cfg.table("eval_metrics"), DS, pa.Table.from_pylist(recs, schema=EVAL_METRICS))


def test_bless_needs_single_and_the_strongest_simple_baseline_on_the_val_day(cfg):
    from mer.stages.model import bless

    # on the eval day dcm would win everything: bless must not look there
    eval_day = [("dcm", "eval", 0.9), ("single", "eval", 0.1), ("itemknn-sum", "eval", 0.1)]
    _metrics(cfg, [("dcm", "val", 0.50), ("single", "val", 0.40), ("itemknn-sum", "val", 0.55),
                   ("popularity", "val", 0.20), ("pretrained-max", "val", 0.45)] + eval_day)
    out = bless.run(cfg, DS)
    assert out["blessed"] is False and out["best_baseline"] == "itemknn-sum"
    assert "does not beat the strongest simple baseline itemknn-sum 0.5500" in out["reason"]
    assert bless.records(cfg)[DS]["blessed"] is False
    _metrics(cfg, [("dcm", "val", 0.60), ("single", "val", 0.40), ("itemknn-sum", "val", 0.55)] + eval_day)
    out = bless.run(cfg, DS)
    assert out["blessed"] is True and out["candidate"] == 0.60 and out["split"] == "val"


def test_training_without_a_validation_day_says_so(tmp_path):
    from mer.base.errors import ContractError
    from mer.stages.model.train import run

    cfg = small_cfg(MerConfig(root=tmp_path / "var"))
    build(cfg)
    t = read_partition(cfg.table("training_examples"), DS)
    write_partition(cfg.table("training_examples"), DS, t.filter(pc.not_equal(t.column("split"), "val")))
    with pytest.raises(ContractError, match=r"no validation-day rows \(split='val'\) for model dcm"):
        run(cfg, DS, "dcm")


def test_compare_prints_baselines_intervals_and_novel_hr(tmp_path, capsys):
    from mer.stages.model import compare, evaluate

    cfg = small_cfg(MerConfig(root=tmp_path / "var"))
    cfg.train = cfg.train.model_copy(update={"epochs": 2, "num_threads": 1})  # every score on one thread
    build(cfg)
    out = compare.run(cfg, DS, only=["single", "dcm", "popularity", "pretrained-max", "cr", "inverted"])
    printed = capsys.readouterr().out
    assert out["best_baseline"] in ("popularity", "pretrained-max")
    for name in ("single", "dcm", "popularity", "pretrained-max", "cr", "inverted"):
        assert name in out["hr"] and out["hr"][name] is not None, name
    assert "vs best baseline" in printed and "novel" in printed
    text = (cfg.run_dir(DS) / "compare.md").read_text()
    assert "hr_novel@10" in text and "vs single [95% CI]" in text
    assert any(v.startswith("dcm vs single (single): ") for v in out["verdicts"])
    assert any(v.startswith("cr vs inverted (inverted): ") for v in out["verdicts"])
    iv = read_partition(cfg.table("eval_intervals"), DS).to_pandas()
    dcm = iv[(iv.model == "dcm") & (iv.reference == "best_baseline") & (iv.records == "all") & (iv.segment == "all")]
    assert len(dcm) == 1 and dcm.lo.iloc[0] <= dcm.ratio.iloc[0] <= dcm.hi.iloc[0]
    assert 0 < dcm.users.iloc[0] <= dcm.n.iloc[0]
    assert f"eval records from {dcm.users.iloc[0]} users" in text  # dcm is scored on every eval record
    assert set(iv[iv.model == "cr"].metric) == {"hr@10", "filtered_hr@10"}  # filtered HR vs the explicit control
    # compare scored each model while the other towers trained; `mer evaluate` afterwards gives the same tables
    metrics = read_partition(cfg.table("eval_metrics"), DS).to_pandas()
    evaluate.run(cfg, DS)
    again = read_partition(cfg.table("eval_metrics"), DS).to_pandas()
    assert len(metrics) > 100 and metrics.equals(again)
    assert iv.equals(read_partition(cfg.table("eval_intervals"), DS).to_pandas())


def test_compare_trains_towers_on_worker_processes_with_the_same_result(tmp_path):
    """Two spawned workers train the same towers, bit for bit, as one after another in this process (the
    model version is a digest of the weights); a tower that does not apply is reported, not raised."""
    from mer.stages.model import compare

    cfg = small_cfg(MerConfig(root=tmp_path / "var"))
    build(cfg)
    rows = read_partition(cfg.table("training_examples"), DS)
    write_partition(cfg.table("training_examples"), DS, rows.set_column(  # no logged source interest: CR skips
        rows.schema.get_field_index("condition_id"), "condition_id", pa.nulls(rows.num_rows, pa.int64())))
    runs = [("popularity", None), ("single", None), ("dcm", None), ("cr", "source")]
    versions = {}
    for workers in (1, 2):
        cfg.train = cfg.train.model_copy(update={"epochs": 2, "num_threads": 1, "compare_workers": workers})
        handed = []  # what compare would evaluate, in order, each as soon as its folder is saved
        trained, skipped = compare.train_all(cfg, DS, runs, lambda name, conf: handed.append((name, conf["name"])))
        assert set(trained) == {"popularity", "single", "dcm"} and set(skipped) == {"cr"}, (trained, skipped)
        assert handed[0] == ("popularity", "popularity") and sorted(handed[1:]) == [("dcm", "dcm"), ("single", "single")]
        assert "no row with a condition_id" in skipped["cr"]
        versions[workers] = {n: json.loads((cfg.model_dir(DS, n) / "metrics.json").read_text())["model_version"]
                             for n in ("single", "dcm")}
    assert versions[1] == versions[2]


def test_the_candidate_is_compared_with_each_implicit_comparator():
    from mer.stages.model.evaluate import ModelEval, intervals

    # 10 users x 10 records; dcm hits users 0-5, sa 0-2, mind 0-3, single 0-4: dcm / sa = 2.0, dcm / mind = 1.5
    users = np.repeat(np.arange(10), 10)
    rec = np.arange(100)
    hit = lambda n: np.where(users < n, 0, 500)  # noqa: E731 (rank 0 = hit, 500 = miss)
    res = {name: ModelEval(name, name.split("-")[0], "", records=rec, ranks=hit(n))
           for name, n in (("dcm", 6), ("dcm-k2", 6), ("sa", 3), ("mind", 4), ("single", 5))}
    rows = intervals(res, np.ones(100, bool), np.array(["core"] * 100), users, None, 100, seed=3, n_boot=200,
                     candidate="dcm")
    refs = {(r["name"], r["reference"]): r["ratio"] for r in rows if r["records"] == "all" and r["segment"] == "all"}
    assert refs[("dcm", "sa")] == 2.0 and refs[("dcm", "mind")] == 1.5 and refs[("dcm", "single")] == 1.2
    # only the candidate: not its variants, not the comparators among themselves; no row for an absent one
    assert {ref for name, ref in refs if ref not in ("single",)} == {"sa", "mind"}
    assert {name for name, ref in refs if ref in ("sa", "mind")} == {"dcm"}
    # without a candidate (the intervals the tests above check) nothing is added
    plain = intervals(res, np.ones(100, bool), np.array(["core"] * 100), users, None, 100, seed=3, n_boot=200)
    assert {r["reference"] for r in plain} == {"single"}
