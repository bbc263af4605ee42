"""Nothing of a dead server outlives it; nothing foreign in the tree breaks a module;
a fetch's disk is bounded.

- ``kill -9`` of a real server in the middle of a real, stalled fetch: go and git die
  with it, and the next start removes its run directory in GoGetDir (temporary GOPATH,
  private home with the token's ``.netrc``) and its temporary files in ``@v/``, but
  never what a live instance sharing those directories owns.
- Stray files in a module's ``@v/`` (``README.info``, ``notes.txt``, another tool's
  temporary file) are ignored by list, ``@latest``, ``/catalog``, ``/index`` and
  ``athens-trio verify``, and logged once.
- GoGetDir defaults into disk storage's root; ``MaxFetchBytes`` stops a fetch that
  uses more disk, with a 502 naming the module and no server path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
import trio

from athens_trio import Config, DiskStorage, FetchTooLargeError, open_pipeline
from athens_trio._config import DiskStorageConfig, StorageConfig
from athens_trio._module import escape_path
from athens_trio.upstream import GoProcessRunner, claim_run_dir
from athens_trio.upstream._gocmd import RUN_DIR_PREFIX

from .conftest import make_config
from .gofixtures import GoFixtures, _Commit, _make_repo
from .helpers import (
    REPO_ROOT,
    child_env,
    child_server,
    go_script,
    leftover,
    process_alive,
    served,
    settle,
    store_version,
    wait_for_pids,
    wait_until,
)
from .leftoverhelpers import (
    STALLED_PREFIX,
    children,
    parent,
    session_members,
    stalled_env_vars,
    stalled_host,
)

STALLED = f"{STALLED_PREFIX}module"


@pytest.mark.slow
async def test_kill_9_mid_fetch_leaves_nothing_after_the_next_start(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    with stalled_host() as port:
        await _kill_9_mid_fetch(tmp_path, go_binary, go_fixtures, port)


async def _kill_9_mid_fetch(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, port: int
) -> None:
    root, goget = tmp_path / "storage", tmp_path / "goget"
    env = child_env(
        tmp_path,
        ATHENS_STORAGE_TYPE="disk",
        ATHENS_DISK_STORAGE_ROOT=str(root),
        ATHENS_GOGET_DIR=str(goget),
        ATHENS_GO_BINARY_PATH=go_binary,
        ATHENS_GITHUB_TOKEN="s3cret-token",
        ATHENS_GO_BINARY_ENV_VARS=stalled_env_vars(go_fixtures, port),
        ATHENS_LOG_LEVEL="info",
    )
    module_dir = root / escape_path(go_fixtures.hello) / "@v"

    # What a live instance sharing both directories owns: never touched.
    other_run = claim_run_dir(goget)
    (other_run.path / "gopath").mkdir()
    module_dir.mkdir(parents=True)
    others_temp = module_dir / ".tmp-l-000000000000-v9.0.0.zip"
    others_temp.write_bytes(b"a live writer's")
    other_writer = others_temp.open("rb")
    fcntl.flock(other_writer.fileno(), fcntl.LOCK_EX)
    # A temporary file of no known writer (an older athens-trio's), fresh: kept (age).
    unknown_temp = module_dir / ".tmp-0123456789ab-v9.0.0.mod"
    unknown_temp.write_bytes(b"whose?")

    async with child_server(tmp_path, "first", env) as first, trio.open_nursery() as nursery:
        server_pid = first.process.pid

        async def ask() -> None:
            async with httpx.AsyncClient(base_url=first.url) as http:
                with contextlib.suppress(httpx.HTTPError):  # the server is killed under it
                    await http.get(f"/{STALLED}/@v/v1.0.0.zip", timeout=60)

        nursery.start_soon(ask)

        # The fetch stalls inside git, a grandchild of the reaper.
        def git_stalls() -> bool:
            found = session_members(children(server_pid))
            programs = [Path(command.split()[0]).name for _, command in found if command]
            return any(program.startswith("git") for program in programs)

        await wait_until(git_stalls, 30)
        sessions = children(server_pid)
        running = session_members(sessions)
        assert any(command.startswith(go_binary) for _, command in running), running
        (run_dir,) = {p for p in goget.iterdir() if p != other_run.path}
        homes = list(run_dir.glob("athens-trio-home-*/.netrc"))
        assert len(homes) == 1
        assert "s3cret-token" in homes[0].read_text()
        # A save's temporary file whose writer (the server) dies holding its lock.
        dead_temp = module_dir / ".tmp-l-111111111111-v9.0.0.zip"
        dead_temp.write_bytes(b"a dead writer's")

        first.process.kill()
        await first.process.wait()
        # go, git and git-remote-http die with the server: no one else kills them.
        assert await settle(lambda: session_members(sessions) == [], 10), session_members(sessions)
        nursery.cancel_scope.cancel()

    # The next start removes the dead server's run directory and temporary files.
    async with child_server(tmp_path, "second", env) as second:
        await wait_until(lambda: not run_dir.exists() and not dead_temp.exists(), 20)
        assert others_temp.exists()
        assert unknown_temp.exists()
        assert other_run.path.is_dir()
        assert (other_run.path / "gopath").is_dir()
        second.process.terminate()
        await second.process.wait()
    assert "Traceback" not in second.log()
    other_run.release()
    other_writer.close()
    assert os.listdir(goget) == []
    assert not list(tmp_path.rglob(".netrc"))


async def test_a_run_dies_with_its_reaper_s_lifeline(tmp_path: Path) -> None:
    """A process (standing for the server) starts a go that starts a child, and dies by
    SIGKILL: both go and its child die, and its run directory stays for the next sweep
    (the one in-process test of the lifeline, independent of go and git)."""
    pids = tmp_path / "pids"
    go = go_script(tmp_path, "go", f"echo $$ >> {pids}\nsleep 1000 &\necho $! >> {pids}\nwait\n")
    program = (
        "import sys, trio\n"
        "from pathlib import Path\n"
        "from athens_trio.upstream import GoProcessRunner\n"
        "async def main():\n"
        f"    runner = GoProcessRunner({str(go)!r}, temp_root={str(tmp_path)!r})\n"
        "    async with runner.run(['mod', 'download'], timeout=600, what='x'):\n"
        "        pass\n"
        "trio.run(main)\n"
    )
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", program], env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    )
    try:
        # A fresh interpreter's start and imports, then the reaper's: generous.
        go_pid, child_pid = await wait_for_pids(pids, 2, seconds=60)
        assert process_alive(go_pid)
        assert process_alive(child_pid)
    finally:
        process.kill()
        await process.wait()
    assert await settle(lambda: not process_alive(go_pid) and not process_alive(child_pid))


# ---------------------------------------------------------------------------------------
# Stray files in @v/
# ---------------------------------------------------------------------------------------

STRAYS = ("README.info", "notes.txt", "v1.0.info", "notes.mod", ".tmp-other-tool")


async def test_stray_files_in_a_module_are_ignored_and_logged_once(
    tmp_path: Path, config: Config, go_fixtures: GoFixtures, caplog: pytest.LogCaptureFixture
) -> None:
    storage = DiskStorage(config.disk_root)
    module = go_fixtures.hello
    await store_version(storage, tmp_path, module, "v1.0.0", 1000)
    await storage.aclose()
    directory = config.disk_root / escape_path(module) / "@v"
    for name in STRAYS:
        (directory / name).write_text("not a version\n")
    caplog.set_level(logging.WARNING, logger="athens_trio.storage")

    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        for _ in range(3):
            listed = await http.get(f"/{module}/@v/list", timeout=60)
            assert listed.status_code == 200, listed.text
            assert "v1.0.0" in listed.text.split()
            assert "README" not in listed.text
            latest = await http.get(f"/{module}/@latest", timeout=60)
            assert latest.status_code == 200, latest.text
            catalog = await http.get("/catalog")
            assert catalog.status_code == 200, catalog.text
            assert {"module": module, "version": "v1.0.0"} in catalog.json()["modules"]
            index = await http.get("/index")
            assert index.status_code == 200, index.text
            assert [json.loads(line)["Version"] for line in index.text.splitlines()] == ["v1.0.0"]
        # Stored files the sweep must keep: other tools' (not a version's) and ours.
        assert await server.pipeline.storage.sweep(older_than=0) == 0
    for name in STRAYS:
        assert (directory / name).exists(), name
    ignored = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert sorted(m.rsplit("/", 1)[1].split("*")[0] for m in ignored) == sorted(
        ["README", "v1.0", "notes"]
    ), ignored

    verify = await trio.run_process(
        [sys.executable, "-m", "athens_trio", "verify"],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "ATHENS_DISK_STORAGE_ROOT": str(config.disk_root),
            "ATHENS_STORAGE_TYPE": "disk",
        },
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


# ---------------------------------------------------------------------------------------
# GoGetDir's default and the disk bound of a fetch
# ---------------------------------------------------------------------------------------


def test_go_get_dir_defaults_into_disk_storage(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    disk = Config(
        storage_type="disk", storage=StorageConfig(disk=DiskStorageConfig(root_path=str(root)))
    )
    assert disk.go_get_root == root / ".goget"
    assert Config(storage_type="memory").go_get_root.is_dir()  # the system temp
    assert Config(go_get_dir=str(tmp_path / "mine")).go_get_root == tmp_path / "mine"


async def test_a_fetch_by_default_leaves_nothing_in_storage_s_go_get_dir(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures, go_get_dir="")
    goget = config.disk_root / ".goget"
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get(f"/{go_fixtures.hello}/@v/v1.0.0.zip", timeout=60)
        assert answer.status_code == 200, answer.text
        (run_dir,) = goget.iterdir()
        assert run_dir.name.startswith(RUN_DIR_PREFIX)
    assert not goget.exists()  # the default place is removed with the last run dir


async def test_a_pipeline_left_by_cancellation_removes_its_run_dir(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    """A stop at once (a second SIGTERM cancels everything) still removes the server's
    run directory and the default GoGetDir."""
    config = make_config(tmp_path, go_binary, go_fixtures, go_get_dir="")
    goget = config.disk_root / ".goget"
    with trio.CancelScope() as scope:
        async with open_pipeline(config):
            assert [p.name[: len(RUN_DIR_PREFIX)] for p in goget.iterdir()] == [RUN_DIR_PREFIX]
            scope.cancel()
            await trio.sleep_forever()
    assert not goget.exists()


async def test_a_big_file_stops_the_run_at_the_bound(tmp_path: Path) -> None:
    go = go_script(
        tmp_path, "go", 'set -e\nhead -c 50000000 /dev/zero > "$GOPATH.big"\necho done\n'
    )
    runner = GoProcessRunner(str(go), temp_root=tmp_path, max_bytes=5_000_000)
    with pytest.raises(FetchTooLargeError) as caught:
        async with runner.run(["mod", "download"], timeout=60, what="fetching example.com/m"):
            pass
    assert "example.com/m" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)
    assert caught.value.status == 502
    assert [p for p in tmp_path.iterdir() if p.name.startswith("athens-trio-")] == []


async def test_many_small_files_stop_the_run_at_the_bound(tmp_path: Path) -> None:
    go = go_script(
        tmp_path,
        "go",
        'mkdir -p "$GOPATH"\n'
        'i=0; while [ $i -lt 400 ]; do head -c 100000 /dev/zero > "$GOPATH/f$i"; '
        "i=$((i+1)); sleep 0.01; done\n",
    )
    runner = GoProcessRunner(str(go), temp_root=tmp_path, max_bytes=4_000_000)
    with pytest.raises(FetchTooLargeError):
        async with runner.run(["mod", "download"], timeout=60, what="fetching example.com/m"):
            pass
    assert [p for p in tmp_path.iterdir() if p.name.startswith("athens-trio-")] == []


async def test_a_module_too_big_for_the_bound_is_a_502_naming_it(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    module = "github.com/athens-fixtures/zeros"
    if not (go_fixtures.repos_root / "zeros").exists():  # once a session
        _make_repo(
            go_fixtures.repos_root,
            "zeros",
            [
                _Commit(
                    {"go.mod": f"module {module}\n", "zeros.txt": "0" * 30_000_000},
                    "zeros",
                    ("v1.0.0",),
                )
            ],
            1704067200,
        )
    config = make_config(tmp_path, go_binary, go_fixtures, max_fetch_bytes=8_000_000)
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get(f"/{module}/@v/v1.0.0.zip", timeout=60)
        assert answer.status_code == 502, answer.text
        assert module in answer.text
        assert "MaxFetchBytes" in answer.text
        assert str(tmp_path) not in answer.text
        assert await settle(lambda: leftover(config) == [])
        small = await http.get(f"/{go_fixtures.hello}/@v/v1.0.0.zip", timeout=60)
        assert small.status_code == 200


async def test_a_reaper_asked_to_stop_takes_its_group_with_it(tmp_path: Path) -> None:
    """SIGTERM to the reaper alone (an operator, a service manager): go and go's child
    die with it, and the run ends."""
    pids = tmp_path / "pids"
    go = go_script(tmp_path, "go", f"echo $$ >> {pids}\nsleep 1000 &\necho $! >> {pids}\nwait\n")
    runner = GoProcessRunner(str(go), temp_root=tmp_path)
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            async with runner.run(["mod", "download"], timeout=60, what="x") as result:
                assert result.returncode != 0

        nursery.start_soon(run)
        go_pid, child_pid = await wait_for_pids(pids, 2, seconds=60)
        # go's parent is the reaper, a child of this process (which may have others: a
        # session's S3 servers, say).
        reaper = parent(go_pid)
        assert reaper is not None
        assert parent(reaper) == os.getpid()
        os.kill(reaper, signal.SIGTERM)
    assert not process_alive(go_pid)
    assert not process_alive(child_pid)
