"""The ``athens-trio`` command's refusals: bad config exits 2 naming the key.

These run ``main`` in-process (it returns before starting trio); the command serving
and stopping on SIGTERM is tested in ``test_server.py`` as a real subprocess.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from athens_trio._cli import main


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ATHENS_* variable from the outside, and a cwd without an athens.toml."""
    for name in list(os.environ):
        if name.startswith("ATHENS_") or name in ("PORT", "GO_BINARY_PATH"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_bad_environment_variable_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATHENS_PORT", "not-a-port")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "ATHENS_PORT" in err
    assert "not-a-port" in err


def test_bad_config_file_value_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "custom.toml"
    config.write_text("GoGetWorkers = 0\n")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "GoGetWorkers" in err


def test_athens_toml_in_the_working_directory_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "athens.toml").write_text('StorageType = "s3"\n')
    assert main([]) == 2
    assert "StorageType" in capsys.readouterr().err


def test_unreadable_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("athens-trio ")
