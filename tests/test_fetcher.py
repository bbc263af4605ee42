"""The Fetcher and Lister against the real go and the local fixture repos, and driven
by a scripted go runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from athens_trio import (
    Config,
    FetchTimeoutError,
    GoBinaryError,
    GoFetcher,
    GoLister,
    InvalidPathError,
    InvalidVersionError,
    NotFoundError,
    UpstreamError,
)
from athens_trio._pipeline import go_runner
from athens_trio._ziphash import mod_h1
from athens_trio.upstream import GoResult, classify_go_error
from athens_trio.upstream._gocmd import scrub_paths

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import (
    ScriptedGo,
    direct_download,
    hanging_go,
    leftover,
    process_alive,
    wait_for_pids,
)


def go_fetcher(config: Config) -> GoFetcher:
    """The fetcher ``open_pipeline`` would build from ``config``."""
    return GoFetcher(go_runner(config), timeout=config.stash_timeout)


def go_lister(config: Config) -> GoLister:
    """The lister ``open_pipeline`` would build from ``config``."""
    return GoLister(go_runner(config), timeout=config.timeout)


@pytest.mark.parametrize(
    ("fixture", "version"),
    [
        ("hello", "v1.0.0"),
        ("hello", "v1.1.0"),
        ("consumer", "consumer_version"),
        ("upper", "upper_version"),
        ("major", "major_v1_version"),
        ("major_v2", "major_v2_version"),
        ("incompatible", "v2.0.0+incompatible"),
    ],
)
async def test_fetch_each_fixture_matches_a_direct_download(
    config: Config,
    go_fixtures: GoFixtures,
    go_binary: str,
    tmp_path: Path,
    fixture: str,
    version: str,
) -> None:
    module = getattr(go_fixtures, fixture)
    version = getattr(go_fixtures, version, version)
    direct = direct_download(go_fixtures, go_binary, tmp_path, f"{module}@{version}")
    async with go_fetcher(config).fetch(module, version) as fetched:
        assert fetched.module == module
        assert fetched.version == version
        assert json.loads(fetched.info)["Version"] == version
        assert set(json.loads(fetched.info)) == {"Version", "Time"}
        assert fetched.mod == Path(direct["GoMod"]).read_bytes()
        assert fetched.zip_file.read_bytes() == Path(direct["Zip"]).read_bytes()
        assert fetched.zip_sum == direct["Sum"]
        assert fetched.mod_sum == direct["GoModSum"] == mod_h1(fetched.mod)
    assert leftover(config) == []


async def test_fetch_query_resolves_to_pseudo_version(
    config: Config, go_fixtures: GoFixtures
) -> None:
    async with go_fetcher(config).fetch(go_fixtures.hello, "main") as fetched:
        assert fetched.version == go_fixtures.hello_main_pseudo
        assert json.loads(fetched.info)["Version"] == go_fixtures.hello_main_pseudo


@pytest.mark.parametrize(
    ("module", "version"),
    [("missing", "v1.0.0"), ("hello", "v9.9.9"), ("hello", "no-such-branch")],
)
async def test_fetch_not_found(
    config: Config, go_fixtures: GoFixtures, module: str, version: str
) -> None:
    with pytest.raises(NotFoundError):
        async with go_fetcher(config).fetch(getattr(go_fixtures, module), version):
            pytest.fail("fetched something that does not exist")
    assert leftover(config) == []


@pytest.mark.parametrize(
    ("module", "version", "error"),
    [
        ("-modfile=/etc/passwd", "v1.0.0", InvalidPathError),
        ("github.com/athens-fixtures/hello", "-x", InvalidVersionError),
        ("github.com/athens-fixtures/hello", "v1.0.0 ; rm -rf /", InvalidVersionError),
        ("github.com/../../etc", "v1.0.0", InvalidPathError),
    ],
)
async def test_fetch_refuses_bad_input_before_running_go(
    tmp_path: Path, go_fixtures: GoFixtures, module: str, version: str, error: type[Exception]
) -> None:
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures)
    with pytest.raises(error):
        async with go_fetcher(config).fetch(module, version):
            pytest.fail("should not get here")


async def test_missing_go_binary_is_reported(tmp_path: Path, go_fixtures: GoFixtures) -> None:
    config = make_config(tmp_path, str(tmp_path / "no-go-here"), go_fixtures)
    with pytest.raises(GoBinaryError, match="no-go-here"):
        async with go_fetcher(config).fetch(go_fixtures.hello, "v1.0.0"):
            pass
    assert leftover(config) == []


async def test_fetch_timeout_kills_process_group_and_removes_temp_dir(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    config = make_config(tmp_path, str(hanging_go(tmp_path)), go_fixtures, stash_timeout=1)
    with pytest.raises(FetchTimeoutError, match="timeout"):
        async with go_fetcher(config).fetch(go_fixtures.hello, "v1.0.0"):
            pass
    pids = await wait_for_pids(tmp_path / "pids", 2)
    assert not any(process_alive(pid) for pid in pids)
    assert leftover(config) == []


async def test_fetch_cancelled_kills_process_group_and_removes_temp_dir(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    config = make_config(tmp_path, str(hanging_go(tmp_path)), go_fixtures)
    async with trio.open_nursery() as nursery:

        async def fetch() -> None:
            async with go_fetcher(config).fetch(go_fixtures.hello, "v1.0.0"):
                pass

        nursery.start_soon(fetch)
        pids = await wait_for_pids(tmp_path / "pids", 2)
        await trio.sleep(0.2)  # let the script make its read-only tree
        nursery.cancel_scope.cancel()
    assert not any(process_alive(pid) for pid in pids)
    assert leftover(config) == []


async def test_lister_lists_tags_and_latest(config: Config, go_fixtures: GoFixtures) -> None:
    listed = await go_lister(config).list(go_fixtures.hello)
    assert listed.versions == list(go_fixtures.hello_versions)
    assert listed.latest is not None
    assert listed.latest.Version == go_fixtures.hello_versions[-1]
    assert leftover(config) == []


async def test_lister_not_found(config: Config, go_fixtures: GoFixtures) -> None:
    with pytest.raises(NotFoundError):
        await go_lister(config).list(go_fixtures.missing)


async def test_lister_timeout(tmp_path: Path, go_fixtures: GoFixtures) -> None:
    config = make_config(tmp_path, str(hanging_go(tmp_path)), go_fixtures, timeout=1)
    with pytest.raises(FetchTimeoutError):
        await go_lister(config).list(go_fixtures.hello)
    assert leftover(config) == []


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("github.com/x/y@v1.0.0: invalid version: unknown revision v1.0.0", NotFoundError),
        (  # a refusal (no credentials) is a fault, not "does not exist": see _gocmd
            "git ls-remote -q origin in /tmp: exit status 128: fatal: could not read Username "
            "for 'https://github.com': terminal prompts disabled",
            UpstreamError,
        ),
        (
            "module github.com/x/y: git ls-remote: fatal: '/r/x/y' does not appear to be a git "
            "repository",
            NotFoundError,
        ),
        (
            "github.com/x/y@v2.0.0: invalid version: module contains a go.mod file, so module "
            "path must match major version",
            NotFoundError,
        ),
        (
            'Get "https://example.com/x?go-get=1": dial tcp: lookup example.com: no such host',
            UpstreamError,
        ),
        (
            'unrecognized import path "x.io/y": https fetch: Get ...: dial tcp 1.2.3.4:443: '
            "connect: connection refused",
            UpstreamError,
        ),
        ("reading https://proxy.example/x/@v/list: 503 Service Unavailable", UpstreamError),
        ("something go has never said before", UpstreamError),
        (
            "github.com/x/y@v1.0.0: invalid version: git ls-remote -q --end-of-options "
            "https://github.com/x/y in /tmp/vcs: exit status 128:\n\tfatal: unable to access "
            "'https://github.com/x/y/': Failed to connect to github.com port 443 after 2 ms: "
            "Couldn't connect to server",
            UpstreamError,
        ),
        (
            "fatal: unable to access 'https://git.corp.io/x/': Could not resolve host: git.corp.io",
            UpstreamError,
        ),
        (
            "fatal: unable to access 'https://git.corp.io/x/': The requested URL returned "
            "error: 404",
            NotFoundError,
        ),
    ],
)
def test_classify_go_error(message: str, kind: type[Exception]) -> None:
    error = classify_go_error(message)
    assert type(error) is kind
    assert str(error) == scrub_paths(message)  # server paths become $WORK


def test_go_environment_is_athens_passthrough_then_overrides(tmp_path: Path) -> None:
    config = Config(go_binary_env_vars=["GOPROXY=https://corp.example,direct", "GOFLAGS=-x"])
    environ = {
        "PATH": "/bin",
        "HOME": "/home/athens",
        "HTTPS_PROXY": "http://proxy:3128",
        "SECRET_TOKEN": "never passed on",
        "GOPROXY": "not ours either",
        "SSH_AUTH_SOCK": str(tmp_path / "no-agent-here"),
    }
    env = go_runner(config, environ).environment(tmp_path / "gopath")
    assert env["PATH"] == "/bin"
    assert env["HOME"] == "/home/athens"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert "SECRET_TOKEN" not in env
    assert "SSH_AUTH_SOCK" not in env  # not a socket
    assert env["GOPROXY"] == "https://corp.example,direct"
    assert env["GOFLAGS"] == "-x"
    assert env["GOPATH"] == str(tmp_path / "gopath")
    assert env["GOMODCACHE"] == str(tmp_path / "gopath" / "pkg" / "mod")
    assert env["GO111MODULE"] == "on"


async def test_go_check(config: Config, tmp_path: Path) -> None:
    assert (await go_runner(config).check()).startswith("go version go")
    missing = Config(go_binary=str(tmp_path / "nope"))
    with pytest.raises(GoBinaryError, match="GO_BINARY_PATH"):
        await go_runner(missing).check()


# --- a scripted go runner (tests/helpers.ScriptedGo) --------------------------------


async def test_a_scripted_runner_drives_the_fetcher(tmp_path: Path) -> None:
    """What ``go mod download -json`` prints names its files; the fetcher reads them."""
    info, mod, zip_file = tmp_path / "v1.2.3.info", tmp_path / "v1.2.3.mod", tmp_path / "v1.2.3.zip"
    info.write_text('{"Version": "v1.2.3", "Time": "2024-01-02T03:04:05Z", "Origin": {}}')
    mod.write_text("module example.com/m\n")
    zip_file.write_bytes(b"PK not really")
    printed = {
        "Path": "example.com/m",
        "Version": "v1.2.3",
        "Info": str(info),
        "GoMod": str(mod),
        "Zip": str(zip_file),
        "Sum": "h1:zip=",
        "GoModSum": "h1:mod=",
    }
    go = ScriptedGo(lambda args: GoResult(0, json.dumps(printed).encode(), b""))
    async with GoFetcher(go, timeout=7).fetch("example.com/m", "v1.2") as fetched:
        assert (fetched.version, fetched.zip_file) == ("v1.2.3", zip_file)
        assert (fetched.zip_sum, fetched.mod_sum) == ("h1:zip=", "h1:mod=")
        assert json.loads(fetched.info) == {"Version": "v1.2.3", "Time": "2024-01-02T03:04:05Z"}
        assert fetched.mod == b"module example.com/m\n"
    assert go.runs == [(["mod", "download", "-json", "example.com/m@v1.2"], 7)]


async def test_a_scripted_runner_drives_the_lister() -> None:
    """go list's failures are on stderr: classified, never a 404 for a network fault."""
    stderr = {
        "example.com/gone": b"go: example.com/gone@latest: unknown revision latest",
        "example.com/down": b"go: example.com/down@latest: dial tcp: connection refused",
    }
    go = ScriptedGo(lambda args: GoResult(1, b"", stderr[args[-1].split("@")[0]]))
    lister = GoLister(go, timeout=3)
    with pytest.raises(NotFoundError, match="unknown revision"):
        await lister.list("example.com/gone")
    with pytest.raises(UpstreamError, match="connection refused") as caught:
        await lister.list("example.com/down")
    assert not isinstance(caught.value, NotFoundError)
    assert go.runs == [
        (["list", "-m", "-versions", "-retracted", "-json", "example.com/gone@latest"], 3),
        (["list", "-m", "-versions", "-retracted", "-json", "example.com/down@latest"], 3),
    ]
