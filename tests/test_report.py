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
from mer.base.io import write_partition

DS = "2026-01-15"


def write_inputs(cfg, *, blessed: bool = True) -> None:
    rows = []
    for model, variant, base in (("dcm", "", 0.30), ("single", "", 0.20), ("cr", "source", 0.25)):
        for k, bump in ((10, 0.0), (100, 0.2)):
            for seg, f in (("all", 1.0), ("core", 1.1), ("non_core", 0.8)):
                rows.append((model, variant, "eval", f"hr@{k}", seg, round((base + bump) * f, 4)))
                rows.append((model, variant, "val", f"hr@{k}", seg, 0.9999))  # bless's figures: not reported
    rows.append(("cr", "source", "eval", "filtered_hr@10", "all", 0.4321))
    rows.append(("dcm+cr", "", "eval", "overlap@100", "all", 0.1234))
    table = pa.Table.from_pylist([dict(zip(EVAL_METRICS.names, r)) for r in rows], schema=EVAL_METRICS)
    write_partition(cfg.table("eval_metrics"), DS, table)
    iv = [{"name": "dcm", "model": "dcm", "variant": "", "reference": "single", "reference_model": "single", "metric": "hr@100",
           "records": "all", "segment": "all", "n": 900, "value": 0.5, "reference_value": 0.4, "ratio": 1.25,
           "lo": 1.125, "hi": 1.375},
          {"name": "dcm", "model": "dcm", "variant": "", "reference": "best_baseline", "reference_model": "itemknn-sum",
           "metric": "hr@100", "records": "all", "segment": "all", "n": 900, "value": 0.5, "reference_value": 0.49,
           "ratio": 1.0204, "lo": 0.97, "hi": 1.07}]
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
    # HR curves (all, core, non_core), segment bars, interests, recall, timings: 7 PNGs
    assert len(re.findall(r"data:image/png;base64,", page)) == 7
    for number in ("0.5000", "0.4321", "0.1234", "0.9870", "0.9750", "0.9910"):
        assert number in page, number
    assert "unknown_action" in page and ">3<" in page  # quarantine counts per reason
    assert "mean 2.00 embeddings per user" in page
    assert "recall@100 target 0.95" in page
    assert "no GX Data Docs built" in page
    assert "0.9999" not in page  # the validation day's rows decide bless; the report shows the eval day
    # who won, in words, with the interval (the best baseline named)
    assert "1.250x [1.125, 1.375]: better, the interval excludes 1" in page
    assert "1.020x [0.970, 1.070]: no difference shown (the interval contains 1)" in page
    assert "<b>itemknn-sum</b>" in page


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
