"""The download policy: DownloadMode (and its HCL file), FilterFile, the validator hook,
NetworkMode, and the go environment for private modules; through the library API."""

from __future__ import annotations

import base64
import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from athens_trio import (
    Backend,
    Config,
    ConfigError,
    ForbiddenError,
    NotFoundError,
    Redirected,
    UpstreamError,
    ValidatorError,
    open_pipeline,
)
from athens_trio._module import escape_path
from athens_trio._pipeline import go_runner
from athens_trio.download import FilterRule, ModuleFilter, load_download_policy
from athens_trio.stash import FetchStatistics
from athens_trio.upstream import private_home

from .conftest import make_config
from .gofixtures import GoFixtures, build_go_fixtures
from .helpers import counting_go, go_runs, wait_until


async def wait_until_stored(storage: Backend, module: str, version: str) -> None:
    """Until the version is stored (listed: its go.mod part at least; an ``.info`` or
    ``.mod`` miss stores no zip)."""

    async def listed() -> bool:
        return version in await storage.list_versions(module)

    await wait_until(listed, 60)


# --- DownloadMode -----------------------------------------------------------------


async def test_async_mode_answers_404_now_and_fetches_in_the_background(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures, download_mode="async")
    async with open_pipeline(config) as pipeline:
        with pytest.raises(NotFoundError, match="fetching it now"):
            await pipeline.protocol.go_mod(go_fixtures.hello, "v1.0.0")
        await wait_until_stored(pipeline.storage, go_fixtures.hello, "v1.0.0")
        assert await pipeline.protocol.go_mod(go_fixtures.hello, "v1.0.0")


async def test_background_fetch_failure_is_only_logged(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures, download_mode="async")
    async with open_pipeline(config) as pipeline:
        with pytest.raises(NotFoundError):
            await pipeline.protocol.info(go_fixtures.missing, "v1.0.0")
        await wait_until(lambda: "background fetch" in caplog.text, 60)
        # The pipeline lives on: a good request still works (mode async: 404, then stored).
        with pytest.raises(NotFoundError):
            await pipeline.protocol.info(go_fixtures.upper, "v1.0.0")
        await wait_until_stored(pipeline.storage, go_fixtures.upper, "v1.0.0")


@pytest.mark.parametrize("mode", ["redirect", "async_redirect"])
async def test_redirect_modes(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, mode: str
) -> None:
    config = make_config(
        tmp_path, go_binary, go_fixtures, download_mode=mode, download_url="https://up.example/"
    )
    async with open_pipeline(config) as pipeline:
        with pytest.raises(Redirected) as caught:
            await pipeline.protocol.zip(go_fixtures.upper, "v1.0.0")
        assert caught.value.status == 301
        assert caught.value.location == (
            "https://up.example/github.com/athens-fixtures/!upper!case/@v/v1.0.0.zip"
        )
        if mode == "async_redirect":
            await wait_until_stored(pipeline.storage, go_fixtures.upper, "v1.0.0")
            # Its zip part is saved after the go.mod part that made it listed.
            await wait_until(lambda: pipeline.storage.exists(go_fixtures.upper, "v1.0.0"))
            assert (await pipeline.protocol.zip(go_fixtures.upper, "v1.0.0")).size > 0
        else:
            # A background fetch, had one started, would be running (or done) once
            # every task waits: nothing ran, and nothing runs.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert pipeline.fetches.statistics() == FetchStatistics(in_progress=0, outcomes={})
            assert not await pipeline.storage.exists(go_fixtures.upper, "v1.0.0")


async def test_none_mode_fetches_nothing_but_serves_what_is_stored(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    script, count = counting_go(tmp_path, go_binary)
    async with open_pipeline(make_config(tmp_path, str(script), go_fixtures)) as pipeline:
        await pipeline.protocol.info(go_fixtures.hello, "v1.0.0")
    none = make_config(tmp_path, str(script), go_fixtures, download_mode="none")
    async with open_pipeline(none) as pipeline:
        assert await pipeline.protocol.go_mod(go_fixtures.hello, "v1.0.0")
        with pytest.raises(NotFoundError, match="DownloadMode none"):
            await pipeline.protocol.go_mod(go_fixtures.hello, "v1.1.0")
    assert len(go_runs(count)) == 1  # one go list: the go.mod part


HCL = """
downloadURL = "https://default.example"
mode = "none"

download "github.com/athens-fixtures/hello" {
    mode = "sync"
}

download "github.com/athens-fixtures/*" {
    mode = "redirect"
    downloadURL = "https://fixtures.example"
}
"""


@pytest.mark.parametrize("how", ["file", "custom"])
async def test_download_file_first_match_wins(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, how: str
) -> None:
    if how == "file":
        (tmp_path / "download.hcl").write_text(HCL)
        mode = f"file:{tmp_path / 'download.hcl'}"
    else:
        mode = "custom:" + base64.b64encode(HCL.encode()).decode()
    config = make_config(tmp_path, go_binary, go_fixtures, download_mode=mode)
    async with open_pipeline(config) as pipeline:
        assert await pipeline.protocol.go_mod(go_fixtures.hello, "v1.0.0")  # sync
        with pytest.raises(Redirected) as caught:
            await pipeline.protocol.info(go_fixtures.upper, "v1.0.0")
        assert caught.value.location.startswith("https://fixtures.example/github.com/")
        with pytest.raises(NotFoundError):  # the default: none
            await pipeline.protocol.info("example.com/other", "v1.0.0")


def test_download_policy_parsing() -> None:
    policy = load_download_policy("custom:" + base64.b64encode(HCL.encode()).decode(), "")
    assert policy.mode == "none"
    assert policy.mode_for("github.com/athens-fixtures/hello/v2") == "sync"  # path prefix
    assert policy.mode_for("github.com/athens-fixtures/other") == "redirect"
    assert policy.url_for("github.com/athens-fixtures/other") == "https://fixtures.example"
    # As Athens: the first matching pattern that has a downloadURL gives it.
    assert policy.url_for("github.com/athens-fixtures/hello") == "https://fixtures.example"
    assert policy.url_for("github.com/elsewhere/x") == "https://default.example"
    assert policy.mode_for("github.com/elsewhere/x") == "none"
    assert load_download_policy("async", "https://u").download_url == "https://u"


@pytest.mark.parametrize(
    "mode",
    [
        "file:/nonexistent/download.hcl",
        "custom:not base64!",
        "custom:" + base64.b64encode(b'mode = "sometimes"').decode(),
        "custom:" + base64.b64encode(b'download "x/*" { mode = "sync" }').decode(),
        "custom:" + base64.b64encode(b"mode = ").decode(),
    ],
)
async def test_bad_download_mode_stops_the_start(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, mode: str
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures, download_mode=mode)
    with pytest.raises(ConfigError) as caught:
        async with open_pipeline(config):
            pass
    assert caught.value.key == "DownloadMode"


# --- FilterFile -------------------------------------------------------------------


def test_filter_rules_as_athens() -> None:
    f = ModuleFilter()
    f.add_rule("github.com/a/b", FilterRule.EXCLUDE)
    f.add_rule("github.com/a/b/c", FilterRule.INCLUDE)
    assert f.rule("github.com/a") is FilterRule.INCLUDE
    assert f.rule("github.com/a/b") is FilterRule.EXCLUDE
    assert f.rule("github.com/a/b/d") is FilterRule.EXCLUDE
    assert f.rule("github.com/a/b/c") is FilterRule.INCLUDE
    assert f.rule("bitbucket.org/a/b") is FilterRule.INCLUDE

    only = ModuleFilter.from_lines(["-", "+ github.com/a", "D golang.org/x"])
    assert only.rule("github.com/a/x") is FilterRule.INCLUDE
    assert only.rule("github.com/b") is FilterRule.EXCLUDE
    assert only.rule("golang.org/x/tools") is FilterRule.DIRECT


@pytest.mark.parametrize(
    ("line", "version", "rule"),
    [
        ("- github.com/a v1", "v1.2.3", FilterRule.EXCLUDE),
        ("- github.com/a v1", "v2.0.0", FilterRule.INCLUDE),
        ("- github.com/a v1.2.3", "v1.2.3", FilterRule.EXCLUDE),
        ("- github.com/a ~v1.2.3", "v1.2.9", FilterRule.EXCLUDE),
        ("- github.com/a ~v1.2.3", "v1.3.0", FilterRule.INCLUDE),
        ("- github.com/a ^v1.2.3", "v1.9.0", FilterRule.EXCLUDE),
        ("- github.com/a ^v1.2.3", "v2.0.0", FilterRule.INCLUDE),
        ("- github.com/a <v1.2.3", "v1.2.3", FilterRule.EXCLUDE),
        ("- github.com/a <v1.2.3", "v0.9.9", FilterRule.EXCLUDE),
        ("- github.com/a <v1.2.3", "v1.2.4", FilterRule.INCLUDE),
        ("- github.com/a v1,~v2.1.0", "v2.1.5", FilterRule.EXCLUDE),
        ("- github.com/a v1", "", FilterRule.EXCLUDE),  # list/latest: qualifiers ignored
    ],
)
def test_filter_version_qualifiers(line: str, version: str, rule: FilterRule) -> None:
    assert ModuleFilter.from_lines(["# a comment", "", line]).rule("github.com/a", version) is rule


@pytest.mark.parametrize("line", ["? github.com/a", "- a b c d", "include github.com/a"])
def test_filter_file_errors_name_the_key(tmp_path: Path, line: str) -> None:
    path = tmp_path / "filter"
    path.write_text(f"+\n{line}\n")
    with pytest.raises(ConfigError, match="line 2") as caught:
        ModuleFilter.from_file(path)
    assert caught.value.key == "FilterFile"


async def test_filter_through_the_pipeline(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    (tmp_path / "filter").write_text(
        "# everything but what is listed\n"
        "+\n"
        f"- {go_fixtures.upper}\n"
        f"D {go_fixtures.incompatible}\n"
        f"- {go_fixtures.hello} v1.0\n"
    )
    config = make_config(
        tmp_path,
        go_binary,
        go_fixtures,
        filter_file=str(tmp_path / "filter"),
        global_endpoint="https://global.example",
    )
    async with open_pipeline(config) as pipeline:
        with pytest.raises(ForbiddenError):
            await pipeline.protocol.list(go_fixtures.upper)
        with pytest.raises(ForbiddenError):
            await pipeline.protocol.zip(go_fixtures.upper, "v1.0.0")
        with pytest.raises(Redirected) as caught:
            await pipeline.protocol.info(go_fixtures.incompatible, "v1.0.0")
        assert caught.value.status == 303
        assert caught.value.location == (
            "https://global.example/github.com/athens-fixtures/legacy/@v/v1.0.0.info"
        )
        with pytest.raises(ForbiddenError):
            await pipeline.protocol.go_mod(go_fixtures.hello, "v1.0.0")
        assert await pipeline.protocol.go_mod(go_fixtures.hello, "v1.1.0")
        assert not await pipeline.storage.exists(go_fixtures.hello, "v1.0.0")


# --- ValidatorHook ----------------------------------------------------------------

Answer = Callable[[dict[str, str]], tuple[int, bytes]]


async def start_hook(nursery: trio.Nursery, answer: Answer, seen: list[dict[str, str]]) -> str:
    """A local HTTP service standing in for the operator's validator."""

    async def app(
        scope: dict[str, object], receive: Callable[..., object], send: Callable[..., object]
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()  # type: ignore[misc]
                await send({"type": event["type"] + ".complete"})  # type: ignore[misc]
                if event["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()  # type: ignore[misc]
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        seen.append(request)
        status, reply = answer(request)
        await send({"type": "http.response.start", "status": status, "headers": []})  # type: ignore[misc]
        await send({"type": "http.response.body", "body": reply})  # type: ignore[misc]

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds: list[str] = await nursery.start(hypercorn_serve, app, config)
    return binds[0] + "/validate"


async def test_validator_hook_allows_refuses_and_fails(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    seen: list[dict[str, str]] = []

    def answer(request: dict[str, str]) -> tuple[int, bytes]:
        if request["Module"] == go_fixtures.upper:
            return 403, b"license not allowed"
        if request["Module"] == go_fixtures.major_v2:
            return 418, b"confused"
        return 200, b""

    async with trio.open_nursery() as nursery:
        hook = await start_hook(nursery, answer, seen)
        script, count = counting_go(tmp_path, go_binary)
        config = make_config(tmp_path, str(script), go_fixtures, validator_hook=hook)
        async with open_pipeline(config) as pipeline:
            async with trio.open_nursery() as herd:
                for _ in range(10):
                    herd.start_soon(pipeline.protocol.go_mod, go_fixtures.hello, "v1.0.0")
            with pytest.raises(ForbiddenError, match="license not allowed"):
                await pipeline.protocol.zip(go_fixtures.upper, "v1.0.0")
            with pytest.raises(ValidatorError, match="418"):
                await pipeline.protocol.info(go_fixtures.major_v2, "v2.0.0")
            # Stored versions are served without asking again.
            assert await pipeline.protocol.info(go_fixtures.hello, "v1.0.0")
        nursery.cancel_scope.cancel()
    assert seen == [
        {"Module": go_fixtures.hello, "Version": "v1.0.0"},
        {"Module": go_fixtures.upper, "Version": "v1.0.0"},
        {"Module": go_fixtures.major_v2, "Version": "v2.0.0"},
    ]
    assert len(go_runs(count)) == 1  # only the allowed module was fetched (its go.mod part)


async def test_unreachable_validator_is_a_fault_not_a_yes(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    config = make_config(
        tmp_path, go_binary, go_fixtures, validator_hook="http://127.0.0.1:9/validate"
    )
    async with open_pipeline(config) as pipeline:
        with pytest.raises(ValidatorError):
            await pipeline.protocol.info(go_fixtures.hello, "v1.0.0")
        assert not await pipeline.storage.exists(go_fixtures.hello, "v1.0.0")


# --- NetworkMode --------------------------------------------------------------------


async def test_network_modes_when_upstream_fails(tmp_path: Path, go_binary: str) -> None:
    fixtures = build_go_fixtures(tmp_path / "repos")
    async with open_pipeline(make_config(tmp_path, go_binary, fixtures)) as pipeline:
        await pipeline.protocol.info(fixtures.hello, "v1.0.0")
    # Upstream now fails with a fault (a proxy that refuses connections), not "not found".
    broken = [f"{k}={v}" for k, v in fixtures.go_env.items()] + ["GOPROXY=http://127.0.0.1:9"]
    strict = make_config(tmp_path, go_binary, fixtures, go_binary_env_vars=broken)
    async with open_pipeline(strict) as pipeline:
        with pytest.raises(UpstreamError):
            await pipeline.protocol.list(fixtures.hello)
    fallback = make_config(
        tmp_path, go_binary, fixtures, go_binary_env_vars=broken, network_mode="fallback"
    )
    async with open_pipeline(fallback) as pipeline:
        assert await pipeline.protocol.list(fixtures.hello) == ["v1.0.0"]
        assert json.loads(await pipeline.protocol.latest(fixtures.hello))["Version"] == "v1.0.0"
        with pytest.raises(UpstreamError):  # nothing stored to fall back on
            await pipeline.protocol.list(fixtures.upper)
    # With the repositories gone, go says "does not exist": storage still answers.
    shutil.rmtree(fixtures.repos_root)
    async with open_pipeline(make_config(tmp_path, go_binary, fixtures)) as pipeline:
        assert await pipeline.protocol.list(fixtures.hello) == ["v1.0.0"]


# --- the go environment -------------------------------------------------------------


def test_no_sum_patterns_become_gonosumdb(tmp_path: Path) -> None:
    config = Config(no_sum_patterns=["corp.example/*", "git.corp.io"])
    env = go_runner(config, {}).environment(tmp_path)
    assert env["GONOSUMDB"] == "corp.example/*,git.corp.io"
    explicit = Config(no_sum_patterns=["x"], go_binary_env_vars=["GONOSUMDB=mine"])
    assert go_runner(explicit, {}).environment(tmp_path)["GONOSUMDB"] == "mine"


def test_github_token_goes_to_a_private_netrc(tmp_path: Path) -> None:
    real_home = tmp_path / "home"
    (real_home / ".ssh").mkdir(parents=True)
    config = Config(github_token="s3cret")
    with private_home(github_token="s3cret", environ={"HOME": str(real_home)}) as home:
        assert home is not None
        netrc = home / ".netrc"
        assert netrc.read_text() == "machine github.com login s3cret\n"
        assert stat.S_IMODE(netrc.stat().st_mode) == 0o600
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert (home / ".ssh").resolve() == (real_home / ".ssh").resolve()
        env = go_runner(config, {"HOME": str(real_home)}, home=home).environment(tmp_path)
        assert env["HOME"] == str(home)
        assert env["NETRC"] == str(netrc)
        assert "s3cret" not in " ".join(f"{k}={v}" for k, v in env.items() if k != "NETRC")
    assert not home.exists()
    assert not (real_home / ".netrc").exists()


def test_netrc_and_hgrc_files_are_copied(tmp_path: Path) -> None:
    (tmp_path / "netrc").write_text("machine git.corp.io login bot password pw\n")
    (tmp_path / "hgrc").write_text("[auth]\n")
    netrc, hgrc = str(tmp_path / "netrc"), str(tmp_path / "hgrc")
    with private_home(netrc_path=netrc, hgrc_path=hgrc, environ={}) as home:
        assert home is not None
        assert (home / ".netrc").read_text().startswith("machine git.corp.io")
        assert (home / ".hgrc").read_text() == "[auth]\n"
    with pytest.raises(ConfigError) as caught, private_home(hgrc_path="/nope", environ={}):
        pass
    assert caught.value.key == "HGRCPath"
    with private_home(environ={}) as nothing:
        assert nothing is None


# --- GOPROXY chains -----------------------------------------------------------------


async def test_goproxy_chain_through_a_second_athens_trio(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    """A's go fetches through B (GoBinaryEnvVars GOPROXY=B), and only B reaches the VCS."""
    from athens_trio import serve

    upstream_config = make_config(tmp_path / "b", go_binary, go_fixtures)
    async with serve(upstream_config, host="127.0.0.1", port=0) as upstream:
        # A's go can reach nothing but B: no git rewrite, so github.com is unreachable.
        chained = make_config(
            tmp_path / "a",
            go_binary,
            go_fixtures,
            go_binary_env_vars=[f"GOPROXY={upstream.url}", "GOSUMDB=off", "GOFLAGS=-modcacherw"],
        )
        async with serve(chained, host="127.0.0.1", port=0) as proxy:
            gopath = tmp_path / "client"
            work = tmp_path / "work"
            work.mkdir()
            done = await trio.run_process(
                [go_binary, "mod", "download", "-json", f"{go_fixtures.upper}@v1.0.0"],
                cwd=work,
                env=go_fixtures.environ(
                    GOPROXY=proxy.url,
                    GOPATH=str(gopath),
                    GOMODCACHE=str(gopath / "pkg" / "mod"),
                    GOCACHE=str(gopath / "cache"),
                    GIT_CONFIG_COUNT="0",  # the client reaches no git either
                ),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode()
            assert json.loads(done.stdout)["Version"] == "v1.0.0"
            assert await proxy.pipeline.storage.exists(go_fixtures.upper, "v1.0.0")
            assert await upstream.pipeline.storage.exists(go_fixtures.upper, "v1.0.0")


async def test_policy_over_http_with_a_go_client(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    """Redirects (301 DownloadMode, 303 filter D) and 403 as a go client meets them."""
    import httpx

    from athens_trio import serve

    async with serve(
        make_config(tmp_path / "b", go_binary, go_fixtures), host="127.0.0.1", port=0
    ) as other:
        (tmp_path / "filter").write_text(
            f"+\n- {go_fixtures.upper}\nD {go_fixtures.incompatible}\n"
        )
        config = make_config(
            tmp_path / "a",
            go_binary,
            go_fixtures,
            download_mode="redirect",
            download_url=other.url,
            filter_file=str(tmp_path / "filter"),
            global_endpoint=other.url,
        )
        async with (
            serve(config, host="127.0.0.1", port=0) as proxy,
            httpx.AsyncClient(base_url=proxy.url) as http,
        ):
            moved = await http.get(f"/{go_fixtures.hello}/@v/v1.0.0.info")
            assert moved.status_code == 301
            assert moved.headers["Location"] == f"{other.url}/{go_fixtures.hello}/@v/v1.0.0.info"
            refused = await http.get(f"/{escape_path(go_fixtures.upper)}/@v/list")
            assert refused.status_code == 403
            assert "excluded" in refused.text
            direct = await http.get(f"/{go_fixtures.incompatible}/@v/list")
            assert direct.status_code == 303
            assert direct.headers["Location"] == f"{other.url}/{go_fixtures.incompatible}/@v/list"

            gopath = tmp_path / "client"
            (tmp_path / "work").mkdir()
            done = await trio.run_process(
                [go_binary, "mod", "download", "-json", f"{go_fixtures.hello}@v1.0.0"],
                cwd=tmp_path / "work",
                env=go_fixtures.environ(
                    GOPROXY=proxy.url,
                    GOPATH=str(gopath),
                    GOMODCACHE=str(gopath / "pkg" / "mod"),
                    GOCACHE=str(gopath / "cache"),
                ),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode()
            assert not await proxy.pipeline.storage.exists(go_fixtures.hello, "v1.0.0")
            assert await other.pipeline.storage.exists(go_fixtures.hello, "v1.0.0")
