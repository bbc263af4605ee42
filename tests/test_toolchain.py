"""A module needing a newer go than the proxy's (issue 10, item 5): its zip is served in
direct mode too, through a go toolchain obtained once and kept (upstream._toolchain).

The toolchain comes from a GOPROXY tree on disk that ``python -m tests.toolchainfixtures
build`` downloaded (the ``toolchain_proxy`` fixture); nothing here reaches the internet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import trio

from athens_trio import Config, ConfigError, GoFetcher, UpstreamError, load_config
from athens_trio._ziphash import zip_h1
from athens_trio.upstream import GoProcessRunner, GoResult, Toolchains, required_go
from athens_trio.upstream._toolchain import _toolchain_for

from .conftest import make_config
from .gofixtures import OWNER, GoFixtures, _Commit, _make_repo
from .helpers import ScriptedGo, go_script, served
from .toolchainfixtures import TOOLCHAIN_GO, toolchain_proxy

__all__ = ["toolchain_proxy"]  # the fixture, used by name

_REFUSAL = "requires go >= {} (running go 1.26.8; GOTOOLCHAIN=local)"


@pytest.fixture(scope="session")
def nextgo(go_fixtures: GoFixtures) -> str:
    """``github.com/athens-fixtures/nextgo``: v1.0.0, whose go.mod says ``go 1.27.0``."""
    module = f"github.com/{OWNER}/nextgo"
    go_mod = f"module {module}\n\ngo {TOOLCHAIN_GO}\n"
    source = "// Package nextgo is a test fixture.\npackage nextgo\n\nconst V = 1\n"
    _make_repo(
        go_fixtures.repos_root,
        "nextgo",
        [_Commit({"go.mod": go_mod, "n.go": source}, "v1.0.0", ("v1.0.0",))],
        1704067200 + 80 * 86400,
    )
    return module


def _config(tmp_path: Path, go_binary: str, fixtures: GoFixtures, proxy: Path) -> Config:
    return make_config(
        tmp_path,
        go_binary,
        fixtures,
        go_toolchain_dir=str(tmp_path / "toolchains"),
        go_toolchain_proxy=proxy.as_uri(),
    )


def _toolchains(config: Config, proxy: str) -> tuple[GoProcessRunner, Toolchains]:
    runner = GoProcessRunner(
        config.go_binary, env=config.go_env_overrides(), temp_root=config.go_get_dir
    )
    return runner, Toolchains(
        runner, Path(config.go_toolchain_dir), proxy=proxy, timeout=config.stash_timeout
    )


async def _refused_zip(config: Config, module: str, tmp_path: Path) -> str:
    """The body of the 502 answering ``module``'s v1.0.0 zip; it names no server path."""
    async with (
        served(config) as server,
        httpx.AsyncClient(base_url=server.url, timeout=120) as http,
    ):
        response = await http.get(f"/{module}/@v/v1.0.0.zip")
    assert response.status_code == 502
    assert str(tmp_path) not in response.text
    assert os.path.realpath(tmp_path) not in response.text
    return response.text


async def test_the_zip_is_served_and_hashes_as_the_newer_go_computes_it(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, nextgo: str, toolchain_proxy: Path
) -> None:
    config = _config(tmp_path, go_binary, go_fixtures, toolchain_proxy)
    async with (
        served(config) as server,
        httpx.AsyncClient(base_url=server.url, timeout=120) as http,
    ):
        response = await http.get(f"/{nextgo}/@v/v1.0.0.zip")
        assert response.status_code == 200, response.text
        (tmp_path / "served.zip").write_bytes(response.content)
    # The toolchain itself, going direct, in a GOPATH of its own.
    newer_go = Path(config.go_toolchain_dir) / "bin" / f"go{TOOLCHAIN_GO}"
    gopath = tmp_path / "direct"
    gopath.mkdir()
    direct = await trio.run_process(
        [str(newer_go), "mod", "download", "-json", f"{nextgo}@v1.0.0"],
        cwd=gopath,
        env=go_fixtures.environ(
            GOPATH=str(gopath), GOCACHE=str(gopath / "cache"), GOTOOLCHAIN="local"
        ),
        capture_stdout=True,
    )
    expected = json.loads(direct.stdout)["Sum"]
    assert expected == zip_h1(tmp_path / "served.zip")


async def test_concurrent_fetches_download_the_toolchain_once_and_later_ones_never(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, nextgo: str, toolchain_proxy: Path
) -> None:
    config = _config(tmp_path, go_binary, go_fixtures, toolchain_proxy)
    stale = Path(config.go_toolchain_dir) / ".staging-killed"  # a killed download's
    (stale / "mod").mkdir(parents=True)
    os.utime(stale, (0, 0))
    runner, toolchains = _toolchains(config, config.go_toolchain_proxy)
    fetcher = GoFetcher(runner, timeout=config.stash_timeout, toolchains=toolchains)
    sums: list[str] = []

    async def fetch() -> None:
        async with fetcher.fetch(nextgo, "v1.0.0") as fetched:
            sums.append(fetched.zip_sum)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        nursery.start_soon(fetch)
    assert len(sums) == 2
    assert sums[0] == sums[1]
    assert toolchains.statistics().downloads == 1
    assert toolchains.statistics().available == (TOOLCHAIN_GO,)
    # No staging directory is left; the toolchain and its link are.
    assert sorted(os.listdir(config.go_toolchain_dir)) == ["bin", f"go{TOOLCHAIN_GO}"]

    # Later (another process, the toolchain proxy gone): no download, the same zip.
    runner, later = _toolchains(config, "off")
    fetcher = GoFetcher(runner, timeout=config.stash_timeout, toolchains=later)
    await fetch()
    assert sums[2] == sums[0]
    assert later.statistics().downloads == 0


async def test_switched_off_the_zip_is_a_502_naming_the_go_version_and_no_server_path(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, nextgo: str
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures, go_toolchain_switch=False)
    text = await _refused_zip(config, nextgo, tmp_path)
    assert f"requires go >= {TOOLCHAIN_GO}" in text


async def test_switched_off_the_go_mod_and_info_are_still_served(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, nextgo: str
) -> None:
    # From a VCS a .mod miss fetches the whole version; its zip needing a go the proxy
    # cannot have, the go.mod part alone is fetched and served (a proxy builds nothing).
    config = make_config(tmp_path, go_binary, go_fixtures, go_toolchain_switch=False)
    async with (
        served(config) as server,
        httpx.AsyncClient(base_url=server.url, timeout=120) as http,
    ):
        for tail in ("mod", "info"):
            response = await http.get(f"/{nextgo}/@v/v1.0.0.{tail}")
            assert response.status_code == 200, response.text
        assert f"go {TOOLCHAIN_GO}" in (await http.get(f"/{nextgo}/@v/v1.0.0.mod")).text
        assert (await http.get(f"/{nextgo}/@v/v1.0.0.zip")).status_code == 502


async def test_a_toolchain_that_cannot_be_had_is_a_502_with_no_server_path(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, nextgo: str
) -> None:
    # make_config's GoToolchainProxy is off: only toolchains at hand, and none is.
    config = make_config(tmp_path, go_binary, go_fixtures, go_toolchain_dir=str(tmp_path / "tc"))
    text = await _refused_zip(config, nextgo, tmp_path)
    assert f"go{TOOLCHAIN_GO}" in text
    assert "GoToolchainProxy is off" in text
    assert not (tmp_path / "tc").exists()  # nothing was tried


@pytest.mark.parametrize(
    ("message", "need"),
    [
        ("m@v1.0.0: module m@v1.0.0 " + _REFUSAL.format("1.27.0"), "1.27.0"),
        (_REFUSAL.format("1.27"), "1.27"),
        (_REFUSAL.format("1.28rc1"), "1.28rc1"),
        # Not go versions: never handed on.
        (_REFUSAL.format("1.27.0;rm"), None),
        (_REFUSAL.format("-modfile=/etc/passwd"), None),
        (_REFUSAL.format("2.0.0"), None),
        (_REFUSAL.format("1.27.0.1"), None),
        (_REFUSAL.format("1.027.0"), None),
        (_REFUSAL.format("go1.27.0"), None),
        ("requires go >= 1.27.0 (running go 1.26.8)", None),  # not go's words
        # A server path or URL go names is not go's message proper.
        ("reading /srv/requires go >= 1.30.0 (running go 1.26.8; GOTOOLCHAIN=local)", None),
        ("unknown revision v1.0.0", None),
    ],
)
def test_the_required_version_is_read_strictly_from_gos_message(
    message: str, need: str | None
) -> None:
    assert required_go(message, module="m", query="v1.0.0") == need


class _Recording(Toolchains):
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def runner_for(self, need: str) -> GoProcessRunner:
        self.asked.append(need)
        raise AssertionError("asked for a toolchain")


@pytest.mark.parametrize("bogus", ["1.27.0;x", "--help", "1.x", "99999.1"])
async def test_a_bogus_required_version_never_reaches_go(bogus: str) -> None:
    error = json.dumps({"Path": "example.com/m", "Version": "v1.0.0", "Error": ""})
    error = error.replace('"Error": ""', json.dumps({"Error": _REFUSAL.format(bogus)})[1:-1])
    go = ScriptedGo(lambda args: GoResult(1, error.encode(), b""))
    toolchains = _Recording()
    with pytest.raises(UpstreamError, match="requires go"):
        async with GoFetcher(go, timeout=5, toolchains=toolchains).fetch("example.com/m", "v1.0.0"):
            pass
    assert toolchains.asked == []
    assert len(go.runs) == 1


@pytest.mark.parametrize("proxy", ["empty", "http://user:secret@127.0.0.1:1/p"])
async def test_a_failed_toolchain_download_is_a_502_and_leaves_nothing(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, nextgo: str, proxy: str
) -> None:
    if proxy == "empty":
        (tmp_path / "empty-proxy").mkdir()
        proxy = (tmp_path / "empty-proxy").as_uri()
    config = make_config(
        tmp_path,
        go_binary,
        go_fixtures,
        go_toolchain_dir=str(tmp_path / "toolchains"),
        go_toolchain_proxy=proxy,
    )
    text = await _refused_zip(config, nextgo, tmp_path)
    assert f"go{TOOLCHAIN_GO}" in text
    assert "secret" not in text
    assert sorted(os.listdir(config.go_toolchain_dir)) == ["bin"]  # no staging left
    assert os.listdir(Path(config.go_toolchain_dir) / "bin") == []


async def test_a_failed_toolchain_download_is_the_answer_of_those_who_waited_and_for_a_while(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    # Five fetches need go 1.27.0 at once, and the toolchain proxy has none: one download
    # is tried, and its failure is the answer of all five -- and of a sixth, later --
    # rather than each waiting its turn to try (and time out) again.
    (tmp_path / "empty-proxy").mkdir()
    tries = tmp_path / "tries"
    go = go_script(tmp_path, "go", f'echo "$GOTOOLCHAIN" >> {tries}\nexec {go_binary} "$@"\n')
    config = make_config(tmp_path, str(go), go_fixtures, go_toolchain_dir=str(tmp_path / "tc"))
    _, toolchains = _toolchains(config, (tmp_path / "empty-proxy").as_uri())
    failures: list[str] = []

    async def need() -> None:
        try:
            await toolchains.runner_for(TOOLCHAIN_GO)
        except UpstreamError as exc:
            failures.append(str(exc))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(need)
    await need()
    assert tries.read_text().split() == [f"go{TOOLCHAIN_GO}"]
    assert len(failures) == 6
    assert len(set(failures)) == 1
    assert f"go{TOOLCHAIN_GO}" in failures[0]
    assert toolchains.statistics().downloads == 0


def test_the_toolchain_keys_and_their_variables() -> None:
    config = load_config(
        environ={
            "ATHENS_GO_TOOLCHAIN_SWITCH": "false",
            "ATHENS_GO_TOOLCHAIN_DIR": "/srv/toolchains",
            "ATHENS_GO_TOOLCHAIN_PROXY": "https://corp-proxy",
        }
    )
    assert not config.go_toolchain_switch
    assert (config.go_toolchain_dir, config.go_toolchain_proxy) == (
        "/srv/toolchains",
        "https://corp-proxy",
    )
    assert load_config(environ={}).go_toolchain_switch
    with pytest.raises(ConfigError, match="GoToolchainProxy"):
        load_config(environ={"ATHENS_GO_TOOLCHAIN_PROXY": "direct"})


async def test_a_toolchain_directory_others_can_write_is_never_used(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, nextgo: str
) -> None:
    shared = tmp_path / "shared"
    (shared / "bin").mkdir(parents=True)
    shared.chmod(0o777)
    config = make_config(tmp_path, go_binary, go_fixtures, go_toolchain_dir=str(shared))
    text = await _refused_zip(config, nextgo, tmp_path)
    assert "GoToolchainDir is not a directory private to this server" in text


@pytest.mark.parametrize(
    ("need", "toolchain"),
    [("1.27", "1.27.0"), ("1.27.3", "1.27.3"), ("1.28rc1", "1.28rc1"), ("1.28beta2", "1.28beta2")],
)
def test_the_toolchain_downloaded_for_a_need(need: str, toolchain: str) -> None:
    assert _toolchain_for(need) == toolchain
