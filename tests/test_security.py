"""Security: secrets never leak, artifact loads never unpickle, ids/keys cannot escape, IAM is least-privilege."""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mer.base.errors import MerError, StorageError, validate_ds, validate_run_id
from mer.stages.index import publish
from mer.stages.index.storage import Store
from tests import item_tower_fixture as fx

DS = "2026-01-15"
REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("mer", "dags")


# ---------------------------------------------------------------- a canary secret never leaks
def test_canary_secret_never_appears_in_logs_stage_records_report_or_published_objects(
        cfg, s3_env, monkeypatch, caplog, capsys):
    from typer.testing import CliRunner

    from mer.app.cli import app
    from mer.app.pipeline import run_stage
    from mer.app.report import render

    canary = f"CANARY-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)  # the key a real publish signs with
    monkeypatch.setenv("MER_INDEX__SERVING_MODULE", "tests.item_tower_fixture")  # the CLI below
    cfg.index.serving_module = "tests.item_tower_fixture"
    caplog.set_level(logging.DEBUG)  # botocore at DEBUG logs requests, headers and signing steps

    cfg = fx.prepared_run(cfg, DS)
    out = run_stage(cfg, DS, "publish", publish.run, "run-1")
    assert out["status"] == "published"
    assert run_stage(cfg, DS, "report", render.run)["uploaded"].endswith(f"{DS}/run-1/report.html")
    with pytest.raises(MerError):
        run_stage(cfg, DS, "publish_bad", publish.run, "../x")  # a failure record too

    # The CLI over the same data: output captured.
    monkeypatch.setenv("MER_PUBLISH__BUCKET", cfg.publish.bucket)
    monkeypatch.setenv("MER_INDEX__SHARDS", "2")
    res = CliRunner().invoke(app, ["publish", "--ds", DS, "--run-id", "run-1", "--root", str(cfg.root)])
    assert res.exit_code == 0, res.output
    assert '"status": "unchanged"' in res.output

    texts = {"caplog": caplog.text, "cli": res.output}
    captured = capsys.readouterr()
    texts["stdout"], texts["stderr"] = captured.out, captured.err
    assert "Signature=" in caplog.text or "signature" in caplog.text.lower()  # DEBUG logging really was on
    for name, text in texts.items():
        assert canary not in text, name

    needle = canary.encode()
    stage_files = list((cfg.run_dir(DS) / "stages").glob("*.json"))
    assert {p.stem for p in stage_files} >= {"publish", "report", "publish_bad"}
    assert (cfg.run_dir(DS) / "report.html").is_file()
    local = [p for p in cfg.root.rglob("*") if p.is_file()]  # stage records, report, quality, index, models...
    assert len(local) > 20
    for p in local:
        assert needle not in p.read_bytes(), p

    store = Store(cfg)
    keys = list(store.list(store.prefix))
    assert any(k.endswith("manifest.json") for k in keys) and any(k.endswith("report.html") for k in keys)
    for key in keys:
        body = store.get_bytes(key)
        assert needle not in body, key
        head = store.head(key)
        assert canary not in json.dumps(head.get("Metadata", {})), key


# ---------------------------------------------------------------- artifact loads never unpickle
def _source_files():
    for d in SOURCE_DIRS:
        yield from sorted((REPO / d).rglob("*.py"))


def _calls(text: str, name: str):
    """Source text of every ``name(...)`` call (balanced parentheses)."""
    for m in re.finditer(re.escape(name) + r"\s*\(", text):
        depth, i = 0, m.end() - 1
        while i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        yield text[m.start(): i + 1]


def test_source_never_loads_pickles():
    files = list(_source_files())
    assert len(files) > 30
    offenders = []
    for path in files:
        text = path.read_text()
        rel = path.relative_to(REPO)
        for call in _calls(text, "torch.load"):
            if not re.search(r"weights_only\s*=\s*True", call):
                offenders.append(f"{rel}: {call}")
        for pattern in (r"\bpickle\.loads?\s*\(", r"\bcPickle\.", r"\bdill\.loads?\s*\(", r"\bjoblib\.load\s*\(",
                        r"\bread_pickle\s*\(", r"allow_pickle\s*=\s*True", r"\bUnpickler\s*\("):
            offenders += [f"{rel}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert offenders == []


class _Evil:
    marker: Path

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _malicious_files(tmp_path) -> tuple[Path, bytes, bytes]:
    import torch

    marker = tmp_path / "PWNED"
    _Evil.marker = marker
    raw = pickle.dumps(_Evil())
    zipped = tmp_path / "evil.pt"
    torch.save({"w": _Evil()}, zipped)  # the torch.save zip layout, with a code-running pickle inside
    return marker, raw, zipped.read_bytes()


@pytest.mark.parametrize("layout", ["raw_pickle", "torch_save_zip"])
def test_malicious_model_files_are_refused_not_executed(tmp_path, layout):
    from mer.stages.model.export import EXPORT_FILE, load_user_tower
    from mer.stages.model.train import WEIGHTS, load_model

    marker, raw, zipped = _malicious_files(tmp_path)
    payload = raw if layout == "raw_pickle" else zipped
    # Sanity: the payload really runs code when unpickled the unsafe way.
    pickle.loads(raw)
    assert marker.read_text() == "pwned"
    marker.unlink()

    model_dir = tmp_path / "models" / "dcm"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps({"tower": {}}))
    (model_dir / WEIGHTS).write_bytes(payload)
    with pytest.raises(MerError, match=f"{WEIGHTS} is not a valid safetensors file") as err:  # refused, named
        load_model(model_dir)
    assert not marker.exists(), err.value

    (model_dir / EXPORT_FILE).write_bytes(payload)
    with pytest.raises(MerError, match="is not a torch.export archive") as err:
        load_user_tower(model_dir)
    assert not marker.exists(), err.value


# ---------------------------------------------------------------- ids and keys cannot escape
BAD_DS = ["../2026-01-15", "2026-01-15/..", "/etc/passwd", "..%2f..%2fx", "2026-01-15\n", "2026-01-15\nx",
          "2026-1-15", "2026-02-30", "", "2026-01-15 ", "..", "2026-01-15/../../x"]
BAD_RUN_IDS = ["../x", "..", "a/../b", "/abs", "a/b", "..%2fx", "x\n", "x\ny", "", ".hidden", "a..b", "a" * 200, "a b"]


@pytest.mark.parametrize("ds", BAD_DS)
def test_validate_ds_rejects_traversal(ds):
    with pytest.raises(MerError, match="invalid ds"):
        validate_ds(ds)


@pytest.mark.parametrize("run_id", BAD_RUN_IDS)
def test_validate_run_id_rejects_traversal(run_id):
    with pytest.raises(MerError, match="invalid run id"):
        validate_run_id(run_id)


def test_good_ids_pass():
    assert validate_ds("2026-01-15") == "2026-01-15"
    for rid in ("manual", "scheduled__2026-01-15T00:00:00+00:00", "backfill__2026-01-15T00:00:00+00:00", "r1.2_x-y"):
        assert validate_run_id(rid) == rid


def test_publish_refuses_keys_outside_the_prefix(cfg, s3_env):
    store = Store(cfg)
    assert store.key(DS, "r1", "index/x") == f"{cfg.publish.prefix}/{DS}/r1/index/x"
    for parts in (("..", "other"), (DS, "..", "..", "x"), ("a/../../b",), (DS, "r1/../../../etc")):
        with pytest.raises(StorageError, match="outside prefix"):
            store.key(*parts)
    with pytest.raises(StorageError, match="refusing to delete"):
        store.delete_prefix(cfg.publish.prefix)
    with pytest.raises(StorageError, match="refusing to delete"):
        store.delete_prefix("other/prefix")
    with pytest.raises(MerError, match="invalid run id"):
        publish.run(cfg, DS, "../../x")
    with pytest.raises(MerError, match="invalid ds"):
        publish.run(cfg, "../../x", "r1")


def test_cli_refuses_a_traversal_ds_with_a_clear_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MER_", "AWS_"))}
    env["MER_ROOT"] = str(tmp_path / "var")
    proc = subprocess.run([str(Path(sys.executable).with_name("mer")), "publish", "--ds", "../../x"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert "error: invalid ds '../../x': expected YYYY-MM-DD" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "x").exists() and not (tmp_path / "var").exists()


# ---------------------------------------------------------------- least-privilege IAM policy
@pytest.mark.parametrize("name, needed", [
    # AbortMultipartUpload: boto3's transfer manager aborts a failed multipart upload.
    ("iam-policy.json", {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListBucket"}),
    ("iam-policy-reader.json", {"s3:GetObject", "s3:ListBucket"}),
])
def test_iam_policy_is_least_privilege(name, needed):
    """Static shape of the publisher's and reader's policies; tests/test_iam.py runs them against an
    endpoint that enforces IAM (which does not evaluate the s3:prefix condition checked here)."""
    from mer.base.config import PublishConfig

    pc = PublishConfig()
    policy = json.loads((REPO / "docker" / name).read_text())
    statements = policy["Statement"]
    assert statements and all(s["Effect"] == "Allow" for s in statements)
    bucket_arn = f"arn:aws:s3:::{pc.bucket}"
    objects_arn = f"{bucket_arn}/{pc.prefix}/*"
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        assert "NotAction" not in s and "NotResource" not in s
        for a in actions:
            assert "*" not in a, a  # no s3:*, no s3:Get*, no *
            assert a.startswith("s3:"), a
            assert a not in ("s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy", "s3:PutBucketAcl",
                             "s3:PutObjectAcl", "s3:DeleteBucketPolicy"), a
        for r in resources:
            assert r in (bucket_arn, objects_arn), r
        if bucket_arn in resources:  # bucket-level: listing only, and only under the prefix
            assert actions == ["s3:ListBucket"]
            prefixes = s["Condition"]["StringLike"]["s3:prefix"]
            assert all(p == pc.prefix or p.startswith(pc.prefix + "/") for p in prefixes), prefixes
    granted = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert granted == needed, granted  # exactly what the publisher / reader call
