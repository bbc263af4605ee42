"""The ``athens-trio`` command: subcommands and --config anywhere; bad config exits 2
naming the key; ``verify``; ``config check`` (round trip, masking); one version source.

These run ``main`` in-process (serving returns before starting trio; ``verify`` runs
its own ``trio.run``); the command serving and stopping on SIGTERM is tested in
``test_server.py`` as a real subprocess.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tomllib
import zipfile
from importlib import import_module
from pathlib import Path

import pytest
import trio

import athens_trio
from athens_trio import DiskStorage, load_config
from athens_trio._cli import _run_interruptible, _with_progress, main
from athens_trio._ziphash import zip_h1
from athens_trio.ops import Progress

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import (
    child_env,
    child_process,
    go_script,
    leftover,
    process_alive,
    wait_for_pids,
    wait_until,
)
from .opsfixtures import write_toml


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


def test_version_flag_prints_the_one_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"athens-trio {athens_trio.__version__}\n"


def test_the_version_has_one_source() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    module, _, name = pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"].rpartition(".")
    assert getattr(import_module(module), name) == athens_trio.__version__


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "verify", "config check"):
        assert f"    {command.split()[0]} " in out
        assert command in out


@pytest.mark.parametrize(
    "argv", [["nonsense"], ["config"], ["config", "nonsense"], ["verify", "--nonsense"]]
)
def test_unknown_or_incomplete_commands_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage: athens-trio" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{config}"],
        ["serve", "--config", "{config}"],
        ["--config", "{config}", "serve"],
        ["--config", "{config}", "verify"],
        ["verify", "--config", "{config}"],
        ["--config", "{config}", "config", "check"],
        ["config", "check", "--config", "{config}"],
        ["config", "--config", "{config}", "check"],
        # The last --config wins.
        ["--config", "elsewhere.toml", "config", "check", "--config", "{config}"],
    ],
)
def test_config_is_read_before_or_after_the_subcommand(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "custom.toml"
    config.write_text("GoGetWorkers = 0\n")
    assert main([arg.format(config=config) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "GoGetWorkers" in err


# ---------------------------------------------------------------------------------------
# athens-trio verify
# ---------------------------------------------------------------------------------------

MODULE_A = "example.com/a"
MODULE_B = "example.com/b"


def stored_zip(tmp_path: Path, module: str, version: str) -> Path:
    path = tmp_path / f"{module.replace('/', '_')}@{version}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{module}@{version}/go.mod", f"module {module}\n")
        archive.writestr(f"{module}@{version}/data.go", "package a\n" + "// padding\n" * 200)
    return path


@pytest.fixture
def verify_config(tmp_path: Path) -> tuple[Path, DiskStorage]:
    """A config file over disk storage holding three versions: a@v1.0.0 and a@v1.1.0
    with their hashes, b@v1.0.0 saved without one."""
    root = tmp_path / "storage"
    storage = DiskStorage(root)

    async def fill() -> None:
        for module, version, recorded in (
            (MODULE_A, "v1.0.0", True),
            (MODULE_A, "v1.1.0", True),
            (MODULE_B, "v1.0.0", False),
        ):
            zip_file = stored_zip(tmp_path, module, version)
            await storage.save(
                module,
                version,
                info=f'{{"Version":"{version}","Time":"2024-01-01T00:00:00Z"}}'.encode(),
                mod=f"module {module}\n".encode(),
                zip_file=zip_file,
                zip_sum=zip_h1(zip_file) if recorded else None,
            )

    trio.run(fill)
    config = tmp_path / "athens.toml"
    config.write_text(f'StorageType = "disk"\n[Storage.Disk]\nRootPath = "{root}"\n')
    return config, storage


def flip_a_byte(storage: DiskStorage, module: str, version: str) -> None:
    zip_path = storage.root / module / "@v" / f"{version}.zip"
    data = bytearray(zip_path.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside a member: the zip's structure stays whole
    zip_path.write_bytes(bytes(data))


def test_verify_reports_corrupt_and_unrecorded_versions_and_repair_removes_them(
    verify_config: tuple[Path, DiskStorage], capsys: pytest.CaptureFixture[str]
) -> None:
    config, storage = verify_config
    assert main(["verify", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"unrecorded {MODULE_B}@v1.0.0: no hash was recorded" in out
    assert out.splitlines()[-1] == (
        "verified 3 versions: 2 ok, 0 corrupt, 1 without a recorded hash"
    )

    flip_a_byte(storage, MODULE_A, "v1.0.0")
    assert main(["verify", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    (corrupt,) = [line for line in out.splitlines() if line.startswith("CORRUPT")]
    # (A flipped byte fails the zip's own CRC before the hash: "not a readable zip".)
    assert corrupt.startswith(f"CORRUPT {MODULE_A}@v1.0.0: ")
    assert "removed" not in corrupt
    assert out.splitlines()[-1].startswith("verified 3 versions: 1 ok, 1 corrupt,")

    # Only what is named: a module's versions, or one version.
    assert main(["verify", "--config", str(config), f"{MODULE_A}@v1.1.0"]) == 0
    assert "verified 1 versions: 1 ok" in capsys.readouterr().out
    assert main(["verify", "--config", str(config), MODULE_A]) == 1
    assert "verified 2 versions: 1 ok, 1 corrupt" in capsys.readouterr().out

    assert main(["verify", "--repair", "--config", str(config)]) == 1  # it was corrupt
    out = capsys.readouterr().out
    assert f"CORRUPT {MODULE_A}@v1.0.0" in out
    assert "removed (the next request fetches it again)" in out
    assert "1 corrupt (1 removed)" in out
    assert not (storage.root / MODULE_A / "@v" / "v1.0.0.info").exists()
    assert (storage.root / MODULE_A / "@v" / "v1.1.0.info").exists()

    assert main(["verify", "--config", str(config)]) == 0
    assert "verified 2 versions: 1 ok, 0 corrupt" in capsys.readouterr().out


def test_verify_refuses_bad_arguments_and_reports_what_is_not_stored(
    verify_config: tuple[Path, DiskStorage], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = verify_config
    assert main(["verify", "--config", str(config), f"{MODULE_A}@v9.0.0", "example.com/c"]) == 1
    out = capsys.readouterr().out
    assert f"missing {MODULE_A}@v9.0.0: not in storage" in out
    assert "missing example.com/c: not in storage" in out
    assert out.splitlines()[-1].endswith(", 2 not in storage")

    for bad in ("Not A Path", f"{MODULE_A}@master", f"{MODULE_A}@v1.0"):
        assert main(["verify", "--config", str(config), bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("athens-trio verify: ")
        assert err.count("\n") == 1

    (Path("athens.toml")).write_text("GoGetWorkers = 0\n")
    assert main(["verify"]) == 2
    assert "GoGetWorkers" in capsys.readouterr().err


def test_verify_names_both_hashes_when_a_whole_zip_was_replaced(
    verify_config: tuple[Path, DiskStorage], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, storage = verify_config
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr(f"{MODULE_A}@v1.1.0/go.mod", "module something/else\n")
    (storage.root / MODULE_A / "@v" / "v1.1.0.zip").write_bytes(other.read_bytes())
    assert main(["verify", "--config", str(config), f"{MODULE_A}@v1.1.0"]) == 1
    (line, _) = capsys.readouterr().out.splitlines()
    assert line == (
        f"CORRUPT {MODULE_A}@v1.1.0: recorded "
        f"{zip_h1(stored_zip(tmp_path, MODULE_A, 'v1.1.0'))}, the zip hashes to {zip_h1(other)}"
    )


# ---------------------------------------------------------------------------------------
# athens-trio config check
# ---------------------------------------------------------------------------------------


def test_config_check_prints_toml_that_loads_back_to_the_same_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "athens.toml").write_text(
        'Port = "127.0.0.1:3100"\n'
        'GoBinaryEnvVars = ["GOPROXY=direct", "GOFLAGS=-mod=mod", "GOPRIVATE=x.com/*"]\n'
        'FilterFile = "odd \\"quoted\\"\\tpath\\u007f"\n'
        "NoSumPatterns = []\n"
        'SumDBs = ["https://sum.example/a"]\n'
        'NotAnAthensTrioKey = "ignored"\n'
        "[Storage.Disk]\n"
        f'RootPath = "{tmp_path / "store"}"\n'
    )
    monkeypatch.setenv("ATHENS_GOGET_WORKERS", "3")
    monkeypatch.setenv("ATHENS_LOG_FORMAT", "JSON")
    assert main(["config", "check"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# athens-trio ")
    assert "athens.toml and the environment" in captured.out.splitlines()[0]
    printed = tomllib.loads(captured.out)
    assert printed["GoGetWorkers"] == 3
    assert printed["LogFormat"] == "json"
    assert printed["Storage"]["Disk"]["RootPath"] == str(tmp_path / "store")
    assert "NotAnAthensTrioKey" not in printed

    effective = load_config("athens.toml")
    (tmp_path / "printed.toml").write_text(captured.out)
    assert load_config(tmp_path / "printed.toml", environ={}) == effective


def test_config_check_with_no_file_prints_the_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert "the defaults and the environment" in out.splitlines()[0]
    assert tomllib.loads(out)["Port"] == ":3000"


def test_config_check_masks_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "athens.toml").write_text(
        'BasicAuthUser = "alice"\n'
        'BasicAuthPass = "s3cret-pass"\n'
        'DownloadMode = "redirect"\n'
        'DownloadURL = "https://bob:s3cret-dl@mirror.example/go?sig=s3cret-sig#s3cret-frag"\n'
        "GoBinaryEnvVars = [\n"
        '  "GOPROXY=https://s3cret-user@proxy.example/a,https://p.example|direct",\n'
        '  "GITHUB_TOKEN=s3cret-gh", "GIT_PASSWORD=s3cret-pw", "GOAUTH=s3cret-auth",\n'
        '  "MY_API_KEY=s3cret-key", "GOPRIVATE=corp.example/*", "EMPTY_TOKEN=",\n'
        "]\n"
    )
    monkeypatch.setenv("ATHENS_GITHUB_TOKEN", "s3cret-token")
    monkeypatch.setenv("ATHENS_PROXY_VALIDATOR", "http://hook:s3cret-hook@[::1]:8080/v?k=s3cret-q")
    assert main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    printed = tomllib.loads(out)
    assert printed["GithubToken"] == "***"
    assert printed["BasicAuthPass"] == "***"
    assert printed["BasicAuthUser"] == "alice"
    assert printed["DownloadURL"] == "https://***@mirror.example/go?sig=***#***"
    assert printed["ValidatorHook"] == "http://***@[::1]:8080/v?k=***"
    assert printed["GoBinaryEnvVars"] == [
        "GOPROXY=https://***@proxy.example/a,https://p.example|direct",
        "GITHUB_TOKEN=***",
        "GIT_PASSWORD=***",
        "GOAUTH=***",
        "MY_API_KEY=***",
        "GOPRIVATE=corp.example/*",
        "EMPTY_TOKEN=",
    ]
    # What was never set stays visibly unset.
    assert main(["config", "check", "--config", os.devnull]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["GithubToken"] == "***"  # still from the environment
    assert printed["BasicAuthPass"] == ""


def test_config_check_names_the_bad_key_and_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "athens.toml").write_text('DownloadMode = "redirect"\n')
    assert main(["config", "check"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "DownloadURL" in captured.err

    monkeypatch.setenv("ATHENS_STASH_TIMEOUT", "soon")
    assert main(["config", "check", "--config", os.devnull]) == 2
    assert "ATHENS_STASH_TIMEOUT" in capsys.readouterr().err


async def _warm_interrupted(
    tmp_path: Path, go_fixtures: GoFixtures, go_body: str, *, again: bool = False
) -> tuple[int, str, list[int]]:
    """``athens-trio warm`` of one version with ``go_body`` as its go, sent SIGTERM once
    the go stand-in wrote two pids (``again``: and once more when they are gone, the
    tool cleaning up): its exit status, its stdout, the pids."""
    pids = tmp_path / "pids"
    go = go_script(tmp_path, "go", go_body.format(pids=pids))
    config = make_config(tmp_path, str(go), go_fixtures)
    toml = write_toml(config, tmp_path / "athens.toml")
    argv = [sys.executable, "-m", "athens_trio", "warm", "--config", str(toml), "m.io/x@v1.0.0"]
    async with child_process(
        argv,
        cwd=tmp_path,
        env=child_env(tmp_path),
        stdout=tmp_path / "stdout",
        stderr=tmp_path / "stderr",
    ) as process:
        found = await wait_for_pids(pids, 2, seconds=60)
        process.send_signal(signal.SIGTERM)
        if again:
            await wait_until(lambda: not any(process_alive(pid) for pid in found), 30)
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            status = await process.wait()
    await wait_until(lambda: not any(process_alive(pid) for pid in found), 30)
    assert leftover(config) == []
    return status, (tmp_path / "stdout").read_text(), found


_HANGING_FETCH = (
    'if [ "$1" = version ]; then echo "go version go1.26.0 linux/amd64"; exit 0; fi\n'
    "echo $$ >> {pids}\nsleep 1000 &\necho $! >> {pids}\nwait\n"
)
_HANGING_VERSION = "echo $$ >> {pids}\nsleep 1000 &\necho $! >> {pids}\nwait\n"


async def test_a_tool_signalled_twice_reports_and_exits_130(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    """A second SIGTERM while a tool stops (go being killed, its work directory being
    removed) is noted, not fatal: the summary is printed and the exit is 130."""
    status, out, _ = await _warm_interrupted(tmp_path, go_fixtures, _HANGING_FETCH, again=True)
    assert status == 130, (tmp_path / "stderr").read_text()
    assert "interrupted by SIGTERM" in out


async def test_a_tool_signalled_while_starting_stops_its_go_and_exits_130(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    """A SIGTERM during go's version check, before the work begins, stops the tool
    with 130, and the go it ran goes too."""
    status, out, _ = await _warm_interrupted(tmp_path, go_fixtures, _HANGING_VERSION)
    assert status == 130, (tmp_path / "stderr").read_text()
    assert "interrupted by SIGTERM before it began" in out


def test_a_signal_once_a_tools_work_is_done_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A SIGTERM after a tool's work ended (while it closes up) is noted, not a cancel:
    the tool's result stands (it would be lost as 'interrupted before it began')."""

    async def tool() -> str:
        await _with_progress("test", lambda: Progress(0, 0), trio.lowlevel.checkpoint)
        os.kill(os.getpid(), signal.SIGTERM)
        while "finishing already" not in caplog.text:  # closing up, the signal taken
            await trio.sleep(0.01)
        return "done"

    with caplog.at_level(logging.INFO, logger="athens_trio"):
        assert _run_interruptible(tool) == "done"


def test_a_tools_one_error_while_a_signal_cancels_it_is_raised_as_itself() -> None:
    """A signal cancels a tool's whole run and, unwinding, one of its tasks fails: the
    error comes out as itself (reported by name), not inside exception groups."""

    async def tool() -> None:
        async def fails_when_cancelled() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise OSError(28, "No space left on device")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails_when_cancelled)
            await trio.lowlevel.checkpoint()
            os.kill(os.getpid(), signal.SIGTERM)
            await trio.sleep_forever()

    with pytest.raises(OSError, match="No space left"):
        _run_interruptible(tool)
