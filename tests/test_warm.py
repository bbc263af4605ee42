"""Warming a project's module graph: through the protocol (policy, single-flight), zips
where a build needs them and go.mod alone where only the graph does, idempotent; the
``warm`` command and ``POST /admin/warm`` (auth required)."""

from __future__ import annotations

import io
import signal
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from athens_trio import open_pipeline
from athens_trio._cli import main
from athens_trio.ops import Progress, Warm, parse_go_mod, parse_go_sum, show_progress

from .conftest import make_config
from .gofixtures import GoFixtures, build_go_fixtures
from .helpers import (
    child_env,
    child_process,
    client_env,
    counting_go,
    go_runs,
    go_script,
    leftover,
    process_alive,
    run_go,
    served,
    wait_for_pids,
    wait_until,
)
from .opsfixtures import clean_athens_env, stored_parts, write_toml


def test_go_mod_and_go_sum_parsing() -> None:
    mod = parse_go_mod(
        "module example.com/app // the app\n\ngo 1.22\n\n"
        'require (\n\tgithub.com/a/b v1.2.3 // indirect\n\t"github.com/c/d" v0.1.0\n)\n'
        "require github.com/e/f v2.0.0+incompatible\n"
        "exclude github.com/a/b v1.2.2\n"
        "replace github.com/c/d => github.com/c/fork v0.1.1\n"
        "replace github.com/e/f v2.0.0+incompatible => ../f\n"
    )
    assert mod.requires == [
        ("github.com/a/b", "v1.2.3"),
        ("github.com/c/d", "v0.1.0"),
        ("github.com/e/f", "v2.0.0+incompatible"),
    ]
    assert mod.excludes == {("github.com/a/b", "v1.2.2")}
    assert mod.replaced("github.com/c/d", "v0.1.0") == ("github.com/c/fork", "v0.1.1")
    assert mod.replaced("github.com/e/f", "v2.0.0+incompatible") is None
    assert mod.replaced("github.com/a/b", "v1.2.3") == ("github.com/a/b", "v1.2.3")
    needs = parse_go_sum(
        "github.com/a/b v1.0.0/go.mod h1:x=\n"
        "github.com/a/b v1.1.0 h1:y=\ngithub.com/a/b v1.1.0/go.mod h1:z=\n"
    )
    assert [(n.version, n.part) for n in needs] == [("v1.0.0", "mod"), ("v1.1.0", "zip")]
    with pytest.raises(ValueError, match="line 1"):
        parse_go_sum("github.com/a/b v1.0.0\n")


async def test_warm_a_module_then_install_it_with_the_vcs_gone(
    tmp_path: Path, go_binary: str, go_build_cache: Path
) -> None:
    fx = build_go_fixtures(tmp_path / "repos")  # a private set: this test moves it away
    wrapper, runs = counting_go(tmp_path, go_binary)
    config = make_config(tmp_path, str(wrapper), fx)
    async with open_pipeline(config) as pipeline:
        warm = Warm(pipeline.protocol, pipeline.storage, concurrency=2)
        first = await warm.run(modules=[(fx.consumer, "latest")])
    assert (first.failed, first.fetched, first.already_stored) == (0, 2, 0), first.failures
    assert first.finished
    assert first.done == first.total == 2
    assert await stored_parts(config, fx.consumer, "v0.1.0") == (True, True)
    assert await stored_parts(config, fx.hello, "v1.1.0") == (True, True)
    assert await stored_parts(config, fx.hello, "v1.0.0") == (False, False)
    runs_after_first = len(go_runs(runs))

    # Idempotent: everything is stored, so nothing is fetched (and go never runs).
    async with open_pipeline(config) as pipeline:
        again = await Warm(pipeline.protocol, pipeline.storage).run(
            modules=[(fx.consumer, "v0.1.0")]
        )
    assert (again.fetched, again.already_stored, again.failed) == (0, 2, 0)
    assert len(go_runs(runs)) == runs_after_first

    fx.repos_root.rename(tmp_path / "repos-gone")
    async with served(config) as server:
        env = client_env(tmp_path, fx, go_build_cache, server.url)
        env["GOBIN"] = str(tmp_path / "bin")
        await run_go(go_binary, ["install", f"{fx.consumer_cmd}@v0.1.0"], cwd=tmp_path, env=env)
    ran = await trio.run_process([str(tmp_path / "bin" / "consumer")], capture_stdout=True)
    assert ran.stdout.decode() == f"consumer says: {fx.hello_texts['v1.1.0']}\n"
    # The warm's two versions, fetched once each, never again (go install's probes of
    # the path's prefixes, github.com@v0.1.0 and the like, are misses storing nothing).
    fetched = [run[-1] for run in go_runs(runs) if run[:2] == ["mod", "download"]]
    assert fetched.count(f"{fx.consumer}@v0.1.0") == 1
    assert fetched.count(f"{fx.hello}@v1.1.0") == 1


async def test_go_sum_versions_with_only_a_go_mod_line_are_stored_without_their_zip(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    wrapper, runs = counting_go(tmp_path, go_binary)
    config = make_config(tmp_path, str(wrapper), go_fixtures)
    hello = go_fixtures.hello
    go_sum = (
        f"{hello} v1.0.0/go.mod h1:unused=\n"
        f"{hello} v1.1.0 h1:unused=\n{hello} v1.1.0/go.mod h1:unused=\n"
        f"{go_fixtures.missing} v1.0.0/go.mod h1:unused=\n"
    )
    async with open_pipeline(config) as pipeline:
        stats = await Warm(pipeline.protocol, pipeline.storage).run(go_sums=[parse_go_sum(go_sum)])
    assert (stats.total, stats.fetched, stats.failed) == (3, 2, 1)
    assert stats.failures[0].startswith(f"{go_fixtures.missing}@v1.0.0 (mod): ")
    # From a VCS the go.mod-only line's version is stored whole too: go fetches the
    # repository for a go.mod as for a zip (from an upstream proxy it would not be).
    assert await stored_parts(config, hello, "v1.0.0") == (True, True)
    assert await stored_parts(config, hello, "v1.1.0") == (True, True)
    fetched = [run[-1] for run in go_runs(runs) if run[:2] == ["mod", "download"]]
    assert sorted(fetched) == sorted(
        [f"{hello}@v1.0.0", f"{hello}@v1.1.0", f"{go_fixtures.missing}@v1.0.0"]
    )


def test_warm_command_reads_a_go_mod_and_prints_plain_progress(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean_athens_env(monkeypatch)
    config = make_config(tmp_path, go_binary, go_fixtures)
    toml = write_toml(config, tmp_path / "athens.toml")
    project = tmp_path / "go.mod"
    project.write_text(
        f"module example.com/app\n\ngo 1.21\n\nrequire {go_fixtures.consumer} v0.1.0\n"
    )
    assert main(["warm", "--config", str(toml), str(project)]) == 0
    out, err = capsys.readouterr()
    # The project's requirement: a zip; consumer's own requirement: its go.mod (from a
    # VCS, with its zip: go fetches the repository for either).
    assert "warmed 2 of 2: 2 fetched, 0 already stored, 0 failed" in out
    assert "warm: " in err
    assert "\r" not in err
    storage_parts = trio.run(stored_parts, config, go_fixtures.hello, "v1.1.0")
    assert storage_parts == (True, True)

    assert main(["warm", "--config", str(toml), str(project)]) == 0
    assert "2 already stored, 0 failed" in capsys.readouterr().out
    assert main(["warm", "--config", str(toml), "not-a-file-nor@"]) == 2


async def test_admin_warm_runs_in_the_background_behind_basic_auth(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    open_config = make_config(tmp_path, go_binary, go_fixtures)
    async with served(open_config) as server, httpx.AsyncClient(base_url=server.url) as http:
        refused = await http.post("/admin/warm", json={"modules": [f"{go_fixtures.hello}@v1.0.0"]})
        assert refused.status_code == 403
        assert "BasicAuthUser" in refused.text

    config = make_config(
        tmp_path, go_binary, go_fixtures, basic_auth_user="ops", basic_auth_pass="s3cret"
    )
    async with served(config) as server:
        async with httpx.AsyncClient(base_url=server.url) as anonymous:
            assert (await anonymous.post("/admin/warm", json={})).status_code == 401
        async with httpx.AsyncClient(base_url=server.url, auth=("ops", "s3cret")) as http:
            bad = await http.post("/admin/warm", json={"modules": ["not a module"]})
            assert bad.status_code == 400
            started = await http.post(
                "/admin/warm", json={"modules": [f"{go_fixtures.hello}@v1.0.0"]}
            )
            assert started.status_code == 202, started.text
            status_path = "/" + started.json()["status"]
            reports: list[dict[str, object]] = []

            async def finished() -> bool:
                response = await http.get(status_path)
                assert response.status_code == 200
                reports.append(response.json())
                return bool(reports[-1]["finished"])

            await wait_until(finished, seconds=60)
            assert reports[-1]["fetched"] == 1
            assert reports[-1]["failed"] == 0
            assert (await http.get("/admin/warm/nope")).status_code == 404
            assert (await http.get("/admin/warm/..%2F..%2Fetc")).status_code == 404
            # Another server on the same tree (as a sibling worker is) tells it too.
            async with (
                served(config) as sibling,
                httpx.AsyncClient(base_url=sibling.url, auth=("ops", "s3cret")) as there,
            ):
                elsewhere = await there.get(status_path)
                assert elsewhere.status_code == 200
                assert elsewhere.json() == reports[-1]
    assert await stored_parts(config, go_fixtures.hello, "v1.0.0") == (True, True)


async def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    done = [0]

    def read() -> Progress:
        return Progress(done[0], 4, "detail")

    for out, expected in (
        (Terminal(), "\rwarm: [#######"),
        (io.StringIO(), "warm: 1/4 (detail)\n"),
    ):

        def shown(text: str, out: io.StringIO = out) -> bool:
            return text in out.getvalue()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(show_progress, read, out, what="warm", line_interval=0.01))
            await wait_until(lambda: shown("0/4"))
            done[0] = 1
            await wait_until(lambda: shown("1/4"))
            nursery.cancel_scope.cancel()
        done[0] = 0
        assert expected in out.getvalue()
        assert out.getvalue().endswith("\n")  # a bar's line is ended when it stops


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    for command in ("serve", "verify", "warm", "export", "import", "gc", "config"):
        assert f"\n    {command} " in listed, command


async def test_ctrl_c_stops_a_warm_and_kills_its_go(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    pids = tmp_path / "pids"
    hanging = go_script(
        tmp_path,
        "hanging-go",
        f'if [ "$1" = version ]; then exec {go_binary} "$@"; fi\n'
        f"echo $$ >> {pids}\nsleep 1000 &\necho $! >> {pids}\nwait\n",
    )
    config = make_config(tmp_path, str(hanging), go_fixtures)
    toml = write_toml(config, tmp_path / "athens.toml")
    env = child_env(tmp_path)
    hello_v1 = f"{go_fixtures.hello}@v1.0.0"
    argv = [sys.executable, "-m", "athens_trio", "warm", "--config", str(toml), hello_v1]
    async with child_process(
        argv, cwd=tmp_path, env=env, stdout=tmp_path / "stdout", stderr=tmp_path / "stderr"
    ) as process:
        # A hang guard: a fresh process's start, go's version check and the reaper's
        # come first, which on loaded cores took over a minute.
        go_pid, child_pid = await wait_for_pids(pids, 2, seconds=120)
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            status = await process.wait()
    assert status == 130, (tmp_path / "stderr").read_text()
    assert "interrupted by SIGINT" in (tmp_path / "stdout").read_text()
    await wait_until(lambda: not process_alive(go_pid) and not process_alive(child_pid), 30)
    assert leftover(config) == []  # its temporary GOPATH is gone too
    assert await stored_parts(config, go_fixtures.hello, "v1.0.0") == (False, False)
