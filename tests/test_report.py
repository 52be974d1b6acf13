"""The run report on hand-built inputs: known numbers land in the page, missing inputs say so,
and a published run's report is uploaded under reports/, outside its version (boto3 over HTTP to moto)."""
from __future__ import annotations

import json
import re

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mer.app.local_s3 import local_s3
from mer.app.pipeline import record_stage, run_stage
from mer.app.report import render
from mer.base.contract import EVAL_INTERVALS, EVAL_METRICS, QUARANTINE
from mer.base.io import read_partition, write_partition

DS = "2026-01-15"


def write_inputs(cfg, *, blessed: bool = True) -> None:
    rows = []
    for model, variant, base in (("dcm", "", 0.30), ("single", "", 0.20), ("cr", "source", 0.25)):
        for k, bump in ((10, 0.0), (100, 0.2)):
            for seg, f in (("all", 1.0), ("core", 1.1), ("non_core", 0.8)):
                rows.append((model, variant, "eval", f"hr@{k}", seg, round((base + bump) * f, 4)))
                rows.append((model, variant, "val", f"hr@{k}", seg, 0.9999))  # bless's figures: not reported
    rows.append(("cr", "source", "eval", "filtered_hr@10", "all", 0.4321))
    rows.append(("cr", "source", "eval", "conditioned_records", "all", 2967.0))  # a count, stored as a float
    rows.append(("dcm", "", "eval", "hr_novel@100", "all", 0.3456))
    rows.append(("dcm+cr", "", "eval", "overlap@100", "all", 0.1234))
    rows.append(("dcm+cr", "", "eval", "gain_vs_dcm_served@100", "all", 0.0123))
    rows.append(("dcm+cr", "", "eval", "gain_vs_dcm_served@100", "core", float("nan")))  # no record: NaN
    rows.append(("dcm", "", "eval", "mean_pairwise_cos", "all", float("nan")))
    table = pa.Table.from_pylist([dict(zip(EVAL_METRICS.names, r)) for r in rows], schema=EVAL_METRICS)
    write_partition(cfg.table("eval_metrics"), DS, table)
    # Earlier and later runs under the same root: the report's history shows the earlier one, not the later.
    for day, hr in (("2026-01-13", 0.41), ("2026-01-14", 0.45), ("2026-01-16", 0.77)):
        past = [("dcm", "", "eval", "hr@100", "all", hr), ("single", "", "eval", "hr@100", "all", hr - 0.1)]
        write_partition(cfg.table("eval_metrics"), day,
                        pa.Table.from_pylist([dict(zip(EVAL_METRICS.names, r)) for r in past], schema=EVAL_METRICS))
    iv = [{"name": "dcm", "model": "dcm", "variant": "", "reference": "single", "reference_model": "single", "metric": "hr@100",
           "records": "all", "segment": "all", "n": 900, "value": 0.5, "reference_value": 0.4, "ratio": 1.25,
           "lo": 1.125, "hi": 1.375},
          {"name": "dcm", "model": "dcm", "variant": "", "reference": "best_baseline", "reference_model": "itemknn-sum",
           "metric": "hr@100", "records": "all", "segment": "all", "n": 900, "value": 0.5, "reference_value": 0.49,
           "ratio": 1.0204, "lo": 0.97, "hi": 1.07},
          {"name": "dcm", "model": "dcm", "variant": "", "reference": "sa", "reference_model": "sa",
           "metric": "hr@100", "records": "all", "segment": "all", "n": 900, "value": 0.5, "reference_value": 0.45,
           "ratio": 1.111, "lo": 1.05, "hi": 1.17}]
    write_partition(cfg.table("eval_intervals"), DS, pa.Table.from_pylist(iv, schema=EVAL_INTERVALS))
    q = [("engagement_log", DS, "unknown_action", "action", "{}")] * 3 + [("engagement_log", DS, "null_id", "user_id", "{}")]
    write_partition(cfg.table("quarantine"), DS, pa.Table.from_pylist([dict(zip(QUARANTINE.names, r)) for r in q], schema=QUARANTINE))
    index = cfg.run_dir(DS) / "index"
    index.mkdir(parents=True, exist_ok=True)
    (index / "recall.json").write_text(json.dumps({
        "target": 0.95, "passed": True,
        "models": {"dcm": {"k": 100, "merged": 0.991, "shards": {"shard-00000": {"n": 10, "key": "Flat", "recall": 0.987},
                                                                  "shard-00001": {"n": 9, "key": "Flat", "recall": 0.975}}}},
    }))
    users = index / "users"
    users.mkdir()
    # 2 users: 3 and 1 embeddings
    pq.write_table(pa.table({"user_id": [1, 1, 1, 2], "emb_index": [0, 1, 2, 0], "importance": [0.5, 0.3, 0.2, 1.0]}),
                   users / "dcm.parquet")
    record_stage(cfg, DS, "gate_raw", {"status": "success", "started": 1.0, "seconds": 2.5, "error": None,
                                       "summary": {"evaluated": 12, "success": True}})
    record_stage(cfg, DS, "bless", {"status": "success", "started": 2.0, "seconds": 0.5, "error": None,
                                    "summary": {"blessed": blessed, "reason": "candidate 0.3 vs baseline 0.2" if blessed
                                                else "candidate 0.3 does not beat baseline 0.2 by 5000%"}})


def test_report_shows_known_numbers_and_charts(cfg):
    write_inputs(cfg)
    out = render.run(cfg, DS)
    page = (cfg.run_dir(DS) / "report.html").read_text()
    assert out["report"] == str(cfg.run_dir(DS) / "report.html") and out["uploaded"] is None
    assert "blessed" in page and "NOT blessed" not in page
    # HR curves (all users), segment bars, HR across runs, interests, recall, timings: 6 PNGs, inline
    assert len(re.findall(r"data:image/png;base64,", page)) == 6
    for number in ("0.500", "0.432", "0.123", "0.987", "0.975", "0.991", "0.346"):
        assert f">{number}<" in page, number
    assert "unknown_action" in page and ">3<" in page  # quarantine counts per reason
    assert "mean 2.00 embeddings per user" in page
    assert "recall@100 target 0.95" in page
    assert "no GX Data Docs built" in page
    assert "0.9999" not in page  # the validation day's rows decide bless; the report shows the eval day
    # who won, in words, with the interval (the best baseline named)
    assert "1.250x [1.125, 1.375]: better, the interval excludes 1" in page
    assert "1.020x [0.970, 1.070]: no difference shown (the interval contains 1)" in page
    assert "the strongest simple baseline (itemknn-sum, picked on the validation day)" in page
    # the candidate vs an implicit comparator is a line, not a table column every other model leaves empty
    assert "HR@100 vs sa: 1.111x [1.050, 1.170]: better, the interval excludes 1" in page
    assert "vs sa, HR@100" not in page and "vs single, HR@100" in page


def test_report_reads_as_tables_people_read(cfg):
    """Pivoted model x metric, counts as integers, no NaN (a missing cell is '–'), each metric explained,
    the winner named with its metric and split, HR across the earlier runs' ds."""
    write_inputs(cfg)
    page = render.render(cfg, DS)
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", page, flags=re.S))
    assert not re.search(r"\bnan\b", text, re.I), "NaN shown"
    assert "–" in text  # a model without a metric
    assert ">2,967<" in page and "2967.0" not in page  # a count stored as a float prints as an integer
    assert ">+0.012<" in page  # gains signed
    assert "Winner: dcm, HR@100 = 0.500 on the eval day (split eval, ds=2026-01-15, 900 records, all users)." in text
    # model x metric: one row per model, the metrics as columns (not one row per metric)
    assert re.search(r"<th>model</th>\s*<th>hr@10</th>\s*<th>hr@100</th>\s*<th>hr_novel@100</th>", page)
    assert page.count("<td>dcm</td>") <= 5  # winner table, per model, per segment, across runs, other metrics
    # segments side by side under their metric
    assert re.search(r'<th colspan="3">hr@10</th>\s*<th colspan="3">hr@100</th>', page)
    for term in ("hr@K", "hr_novel@K", "filtered_hr@K", "overlap@K", "gain_vs_dcm_served@K", "conditioned_records"):
        assert f"<dt>{term}</dt>" in page, term
    assert "<dt>mean_pairwise_cos</dt>" not in page  # its column is all NaN: dropped, and not explained
    # HR across the runs up to this ds (2026-01-16 is a later run: not shown)
    assert "<th>2026-01-13</th>" in page and "<th>2026-01-14</th>" in page and "2026-01-16" not in page
    assert "3 days, up to ds=2026-01-15" in text


def test_candidate_vs_comparator_lines_stay_when_another_model_wins(cfg):
    write_inputs(cfg)
    iv = read_partition(cfg.table("eval_intervals"), DS).to_pylist()
    iv.append({**iv[0], "name": "sa", "model": "sa", "value": 0.6, "reference_value": 0.4, "ratio": 1.5, "lo": 1.4,
               "hi": 1.6})
    write_partition(cfg.table("eval_intervals"), DS, pa.Table.from_pylist(iv, schema=EVAL_INTERVALS))
    page = render.render(cfg, DS)
    assert "Winner: sa, HR@100 = 0.600" in page
    # the candidate's line against the winner is still there, named by the candidate
    assert "dcm: HR@100 vs sa: 1.111x [1.050, 1.170]: better, the interval excludes 1" in page


def test_report_names_data_docs_by_path_not_a_local_link(cfg):
    from mer.stages.quality.gates import data_docs_index

    write_inputs(cfg)
    data_docs_index(cfg).parent.mkdir(parents=True)
    data_docs_index(cfg).write_text("<html></html>")
    page = render.render(cfg, DS)
    assert f"<code>{data_docs_index(cfg)}</code>" in page and "not shipped with this report" in page
    assert "file://" not in page  # the uploaded copy would point into its reader's own disk


def test_not_blessed_report_says_why_and_that_nothing_was_published(cfg):
    write_inputs(cfg, blessed=False)
    page = render.render(cfg, DS)
    assert "NOT blessed" in page and "by 5000%" in page
    assert "Nothing was published" in page


def test_report_with_no_inputs_marks_each_section_not_available(cfg):
    page = render.render(cfg, DS)
    assert page.count("not available") >= 5
    assert "the bless stage did not run" in page
    assert "no eval_metrics partition" in page


def test_stage_records_capture_failures_with_their_message(cfg):
    from mer.base.errors import GateError

    def boom(_cfg, _ds):
        raise GateError("recall 0.5 < 0.95 on shard-00001")

    with pytest.raises(GateError):
        run_stage(cfg, DS, "recall_gate", boom)
    page = render.render(cfg, DS)
    assert "recall_gate" in page and "failed" in page


def test_published_run_uploads_its_report_outside_the_version(cfg):
    write_inputs(cfg)
    record_stage(cfg, DS, "publish", {"status": "success", "started": 3.0, "seconds": 1.0, "error": None,
                                      "summary": {"status": "published", "version": f"{DS}/run-1", "url": "s3://x"}})
    cfg.publish.bucket = "mer-report-test"
    with local_s3(cfg.publish.bucket) as endpoint:
        out = render.run(cfg, DS)
        key = f"{cfg.publish.prefix}/reports/{DS}/run-1/report.html"  # never inside the version folder
        assert out["uploaded"] == f"s3://{cfg.publish.bucket}/{key}"
        body = boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=cfg.publish.bucket, Key=key)["Body"].read()
    assert body == (cfg.run_dir(DS) / "report.html").read_bytes()
