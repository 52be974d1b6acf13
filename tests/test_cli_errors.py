"""Errors that point the right way: typed choices, nothing published, what to run first."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mer.app.cli import app


@pytest.mark.parametrize("args, expected", [
    (["train", "--model", "gpt"], "'gpt' is not one of"),
    (["train", "--model", "dcm", "--variant", "k9"], "'k9' is not one of"),
    (["tune", "--model", "pinnersage"], "'pinnersage' is not one of"),  # nothing to tune
    (["check", "nope"], "'nope' is not one of"),
])
def test_free_strings_are_typed_choices(args, expected, tmp_path):
    result = CliRunner().invoke(app, [*args, "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split()).replace("│", "")


@pytest.mark.parametrize("command", [["query", "--user", "1"], ["rollback"]])
def test_nothing_published_is_said_so_not_missing_credentials(command, tmp_path, monkeypatch, capsys):
    from mer.app.cli import main

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("sys.argv", ["mer", *command, "--root", str(tmp_path / "var")])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"nothing published under {tmp_path / 'var'}" in err and "run `mer demo`" in err
    assert "credentials found" not in err
