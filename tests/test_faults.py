"""Faults, each one injected: nothing partial served, nothing leaked, the next try clean.

- go killed mid-download (its group, or go alone with git still running), go printing
  half a JSON object or nothing, go hanging past StashTimeout, go missing;
- the disk filling up during a save (a small tmpfs holds the storage root);
- a client hanging up mid-zip; a client idling on its connection at shutdown;
- a stored file damaged after the fact;
- two server processes on one storage root, asked for the same cold version at once;
- SIGTERM while clients are mid-download;
- the upstream (a GOPROXY, or the VCS itself) unreachable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from athens_trio import DiskStorage
from athens_trio._config import DiskStorageConfig, StorageConfig
from athens_trio._ziphash import zip_h1

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import (
    child_env,
    child_server,
    counting_go,
    direct_downloads,
    fd_count,
    fixture_env_vars,
    go_downloads,
    go_runs,
    go_script,
    hello_path,
    leftover,
    process_alive,
    raw_request,
    refuses_connections,
    served,
    session_processes,
    settle,
    store_version,
    tree,
    wait_until,
)
from .opsfixtures import stored_tree

V1, V2 = "v1.0.0", "v1.1.0"


@pytest.fixture(scope="session")
def hello_direct(
    go_fixtures: GoFixtures, go_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """What a plain go (no proxy) says of hello's versions: Sum, GoMod, Zip, Info."""
    found = direct_downloads(
        go_fixtures,
        go_binary,
        tmp_path_factory.mktemp("direct"),
        [f"{go_fixtures.hello}@{v}" for v in (V1, V2)],
    )
    return {version: found[(go_fixtures.hello, version)] for version in (V1, V2)}


def open_files() -> list[str]:
    """What this process's file descriptors point at."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, say)
    return found


def files_of(root: Path) -> dict[str, int]:
    """The files (not directories) under ``root``."""
    return {name: size for name, size in tree(root).items() if size >= 0}


def h1_of(data: bytes, work: Path) -> str:
    path = work / "body.zip"
    path.write_bytes(data)
    try:
        return zip_h1(path)
    finally:
        path.unlink()


async def client_go(
    go_binary: str, fixtures: GoFixtures, work: Path, goproxy: str, *args: str
) -> subprocess.CompletedProcess[bytes]:
    """A go client with its own module cache, seeing ``goproxy`` (run without blocking
    the loop the server runs in).  Its ``direct`` reaches the fixture repositories."""
    work.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work),
        **fixtures.go_env,
        "GOPROXY": goproxy,
        "GOPATH": str(work / "gopath"),
        "GOCACHE": str(work / "gocache"),
    }
    return await trio.run_process(
        [go_binary, *args], cwd=work, env=env, capture_stdout=True, capture_stderr=True, check=False
    )


# ---------------------------------------------------------------------------------------
# go killed, hanging, babbling, missing
# ---------------------------------------------------------------------------------------


def faulty_go(tmp_path: Path, go_binary: str) -> tuple[Path, Path, Path]:
    """A go whose ``mod download`` does what the file ``mode`` says (anything else it
    runs for real).  Every pid it and its children take is appended to ``pids``.

    A slow ``git`` comes first in go's PATH: it records its pid and sleeps, so when the
    wrapper kills, go really is mid-download, with a git child of its own."""
    mode, pids = tmp_path / "mode", tmp_path / "pids"
    slow = tmp_path / "slow-git"
    slow.mkdir()
    go_script(slow, "git", f"echo $$ >> {pids}\nsleep 60\nexit 1\n")
    go = go_script(
        tmp_path,
        "faulty-go",
        f"""mode=$(cat {mode} 2>/dev/null)
case " $* " in *" mod download "*) ;; *) exec {go_binary} "$@" ;; esac
echo $$ >> {pids}
wait_for_git() {{
  for i in $(seq 200); do
    [ "$(wc -l < {pids})" -ge 3 ] && return
    sleep 0.05
  done
}}
case "$mode" in
kill-group)
  PATH={slow}:$PATH {go_binary} "$@" > /dev/null 2>&1 &
  echo $! >> {pids}
  wait_for_git
  printf '{{\\n\\t"Path": "github.com/athens-fixtures/hel'
  kill -9 0 ;;
kill-go)
  PATH={slow}:$PATH {go_binary} "$@" > /dev/null 2>&1 &
  gopid=$!
  echo $gopid >> {pids}
  wait_for_git
  kill -9 $gopid
  printf '{{\\n\\t"Path": "github.com/athens-fixtures/hel'
  exit 1 ;;
partial-json)
  printf '{{"Path": "github.com/athens-fixtures/hello", "Vers'
  exit 2 ;;
silent)
  exit 0 ;;
hang)
  sleep 1000 &
  echo $! >> {pids}
  wait ;;
esac
exec {go_binary} "$@"
""",
    )
    return go, mode, pids


@pytest.mark.parametrize(
    ("mode", "status", "says"),
    [
        ("kill-group", 502, "go exited"),
        ("kill-go", 502, "go exited"),
        ("partial-json", 502, "go exited"),
        ("silent", 502, "go exited"),
        ("hang", 504, "timeout"),
    ],
)
async def test_go_fault_fails_cleanly_and_the_next_request_retries(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    hello_direct: dict[str, dict[str, Any]],
    mode: str,
    status: int,
    says: str,
) -> None:
    go, mode_file, pids_file = faulty_go(tmp_path, go_binary)
    mode_file.write_text(mode)
    config = make_config(tmp_path, str(go), go_fixtures, stash_timeout=1 if mode == "hang" else 60)
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        answers: dict[str, httpx.Response] = {}

        # Three clients wait on the one zip fetch that fails: each gets the fault, none a
        # 404.  (.info and .mod fetch the go.mod part with go list, which runs for real.)
        async def get_zip(client: int) -> None:
            answers[f"{client}"] = await http.get(hello_path(go_fixtures, f"{V1}.zip"), timeout=60)

        async with trio.open_nursery() as nursery:
            for client in range(3):
                nursery.start_soon(get_zip, client)
        assert len(answers) == 3
        for tail, answer in answers.items():
            assert answer.status_code == status, (tail, answer.text)
            assert says in answer.text
            assert answer.headers["cache-control"] == "no-store"

        # Nothing stored, nothing left running, no temporary GOPATH left behind.
        assert files_of(config.disk_root) == {}
        assert not await server.pipeline.storage.exists(go_fixtures.hello, V1)
        pids = [int(p) for p in pids_file.read_text().split()]
        assert await settle(lambda: not any(process_alive(p) for p in pids)), pids
        assert session_processes(pids[0]) == []
        assert leftover(config) == []

        # go works again: the same server fetches afresh (no failure was remembered).
        mode_file.write_text("ok")
        again = await http.get(hello_path(go_fixtures, f"{V1}.zip"), timeout=60)
        assert again.status_code == 200, again.text
        assert h1_of(again.content, tmp_path) == hello_direct[V1]["Sum"]
    assert leftover(config) == []


async def test_go_missing_is_a_5xx_that_stores_nothing_and_recovers(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    hello_direct: dict[str, dict[str, Any]],
) -> None:
    place = tmp_path / "bin"
    place.mkdir()
    go = place / "go"  # not there yet: the binary went missing after the start
    config = make_config(tmp_path, str(go), go_fixtures)
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        for tail in (f"{V1}.zip", f"{V1}.info", "list"):
            answer = await http.get(hello_path(go_fixtures, tail), timeout=60)
            assert 500 <= answer.status_code < 600, (tail, answer.status_code)
            assert answer.text.strip()
        latest = await http.get(f"/{go_fixtures.hello}/@latest", timeout=60)
        assert 500 <= latest.status_code < 600
        assert files_of(config.disk_root) == {}
        assert leftover(config) == []

        go.symlink_to(go_binary)  # put back
        again = await http.get(hello_path(go_fixtures, f"{V1}.zip"), timeout=60)
        assert again.status_code == 200, again.text
        assert h1_of(again.content, tmp_path) == hello_direct[V1]["Sum"]


async def test_go_missing_answer_names_the_cause(tmp_path: Path, go_fixtures: GoFixtures) -> None:
    config = make_config(tmp_path, str(tmp_path / "no-go-here"), go_fixtures)
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get(hello_path(go_fixtures, f"{V1}.info"), timeout=60)
    assert answer.status_code == 500
    assert "go binary" in answer.text.lower()


# ---------------------------------------------------------------------------------------
# The disk fills during a save
# ---------------------------------------------------------------------------------------

PAGE = 4096


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test: writes there fail with ENOSPC once it is full,
    and nowhere else."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): "
            + (mounted.stderr.strip() or f"mount exited {mounted.returncode}")
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def fill(disk: Path, pages_left: int) -> Path:
    """Fill ``disk`` to the last page, then give back ``pages_left`` pages (tmpfs counts
    whole pages: each small file of a save takes one)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * PAGE
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        size = os.fstat(fd).st_size
        os.ftruncate(fd, (size // PAGE - pages_left) * PAGE)
    finally:
        os.close(fd)
    return filler


def assert_versions_whole(
    root: Path, directory: Path, visible: set[str], mod_only: frozenset[str] = frozenset()
) -> None:
    """Exactly ``visible`` are stored under ``directory``, each whole: its .mod, .zip
    and .ziphash there, the zip hashing to its .ziphash; and ``mod_only`` with its .mod
    and .modhash and no zip part; no temporary file left."""
    names = set(os.listdir(directory))
    assert not [n for n in names if n.startswith(".")], names
    assert {n[: -len(".info")] for n in names if n.endswith(".info")} == visible | mod_only
    for version in mod_only:
        assert {f"{version}.mod", f"{version}.modhash"} <= names, version
        assert not {f"{version}.zip", f"{version}.ziphash"} & names, version
    for version in visible:
        for suffix in ("mod", "modhash", "zip", "ziphash"):
            assert f"{version}.{suffix}" in names, (version, suffix)
        recorded = (directory / f"{version}.ziphash").read_text().strip()
        assert zip_h1(directory / f"{version}.zip") == recorded


@pytest.mark.parametrize(
    "pages_left",
    [
        0,  # the .mod cannot be written
        1,  # ... the zip
        2,  # ... the .info
        3,  # ... the .ziphash
        4,  # ... the .modhash
        5,  # ... the list file (written before .info makes the version visible)
    ],
)
async def test_disk_full_during_a_save_stores_nothing_and_serves_what_it_has(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    hello_direct: dict[str, dict[str, Any]],
    small_disk: Path,
    pages_left: int,
) -> None:
    storage_root = small_disk / "storage"
    config = make_config(
        tmp_path,
        go_binary,
        go_fixtures,
        storage=StorageConfig(disk=DiskStorageConfig(root_path=str(storage_root))),
    )
    directory = storage_root / go_fixtures.hello / "@v"
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        had = await http.get(hello_path(go_fixtures, f"{V1}.zip"), timeout=60)
        assert had.status_code == 200
        filler = fill(small_disk, pages_left)

        answer = await http.get(hello_path(go_fixtures, f"{V2}.zip"), timeout=60)
        if answer.status_code == 200:
            # The save went through after all: then it must be whole and listed.
            assert h1_of(answer.content, tmp_path) == hello_direct[V2]["Sum"]
            assert_versions_whole(storage_root, directory, {V1, V2})
            assert (directory / "list").read_text() == f"{V1}\n{V2}\n"
        else:
            assert answer.status_code == 500, answer.text
            assert "storage" in answer.text
            # No part of its zip is visible; its go.mod part, saved first, is whole
            # (stored and listed) or not there at all; no file left behind.
            assert not await server.pipeline.storage.exists(go_fixtures.hello, V2)
            listed = sorted(await server.pipeline.storage.list_versions(go_fixtures.hello))
            assert listed in ([V1], [V1, V2])
            assert_versions_whole(storage_root, directory, {V1}, frozenset(listed) - {V1})
            assert (directory / "list").read_text() == "".join(f"{v}\n" for v in listed)
        assert leftover(config) == []

        # The disk still full, what is stored is served as before.
        for tail in (f"{V1}.zip", f"{V1}.mod", f"{V1}.info"):
            again = await http.get(hello_path(go_fixtures, tail), timeout=60)
            assert again.status_code == 200, tail
        assert again.json()["Version"] == V1
        assert (await http.get(hello_path(go_fixtures, f"{V1}.zip"))).content == had.content

        filler.unlink()  # room again: the next request stores the version
        retried = await http.get(hello_path(go_fixtures, f"{V2}.zip"), timeout=60)
        assert retried.status_code == 200
        assert h1_of(retried.content, tmp_path) == hello_direct[V2]["Sum"]
        assert_versions_whole(storage_root, directory, {V1, V2})


# ---------------------------------------------------------------------------------------
# Clients that hang up, idle or want the connection closed
# ---------------------------------------------------------------------------------------

BIG = "example.com/big"
BIG_SIZE = 24 << 20


async def read_a_little_then_hang_up(url: str, path: str, *, reset: bool) -> int:
    """GET ``path``, read about 64 KiB of the answer, then close (with RST if ``reset``)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    got = 0
    while got < 65536:
        chunk = await stream.receive_some(16384)
        assert chunk, "the server closed first"
        got += len(chunk)
    if reset:  # an abortive close: the server's next send meets a reset
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    await stream.aclose()
    return got


async def test_clients_hanging_up_mid_zip_leak_nothing_and_disturb_no_one(
    tmp_path: Path, go_fixtures: GoFixtures, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures)
    storage = DiskStorage(config.disk_root)
    data = await store_version(storage, tmp_path, BIG, V1, BIG_SIZE)
    path = f"/{BIG}/@v/{V1}.zip"
    async with served(config) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get(path)).content == data  # warm: what is lazy is loaded
        # and that client's connection closed on both sides: the server (in this loop)
        # saw the end of it once every task is idle.
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        baseline = fd_count()

        whole: list[bytes] = []
        async with httpx.AsyncClient(base_url=server.url) as http:

            async def download() -> None:
                async with http.stream("GET", path, timeout=60) as response:
                    assert response.status_code == 200
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        await trio.lowlevel.checkpoint()  # no faster than the hang-ups
                whole.append(bytes(body))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(download)
                for i in range(8):
                    hang_up = partial(read_a_little_then_hang_up, reset=bool(i % 2))
                    nursery.start_soon(hang_up, server.url, path)
        assert len(whole) == 3
        assert all(body == data for body in whole)
        # Every connection is closed and every zip file handle with it.
        assert await settle(lambda: fd_count() <= baseline), (fd_count(), baseline)
        zip_file = (config.disk_root / BIG / "@v" / f"{V1}.zip").resolve()
        assert str(zip_file) not in open_files()
        assert (await raw_request(server.url, b"/healthz")).status == 200
    noise = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert noise == [], [r.getMessage() for r in noise]


async def test_shutdown_does_not_wait_for_idle_keep_alive_connections(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    """go keeps idle connections open for 90 s: a shutdown must close them, not wait
    out its grace period for them."""
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures)
    idle: trio.SocketStream | None = None
    try:
        with trio.fail_after(3):  # against a grace period of 30 s
            async with served(config, shutdown_timeout=30) as server:
                host, port = server.url.removeprefix("http://").rsplit(":", 1)
                idle = await trio.open_tcp_stream(host, int(port))
                await idle.send_all(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                assert (await idle.receive_some(65536)).startswith(b"HTTP/1.1 200")
                server.shutdown()  # the client keeps its connection open, idle
    finally:
        if idle is not None:
            await idle.aclose()


# ---------------------------------------------------------------------------------------
# Stored files damaged after the fact
# ---------------------------------------------------------------------------------------


def _truncate(by: int) -> Callable[[Path], None]:
    def truncate(path: Path) -> None:
        os.truncate(path, path.stat().st_size - by)

    return truncate


# A flipped byte inside a zip keeps its structure whole: the tail check serves it, and
# `athens-trio verify --repair` is what finds it (test_operator covers that).
_NOT_YET = "BUG: not detected: "
DAMAGES: list[Any] = [
    pytest.param("zip", _truncate(1), id="zip-short-by-one"),
    pytest.param(
        "zip", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), id="zip-half"
    ),
    pytest.param("zip", lambda p: p.write_bytes(b""), id="zip-empty"),
    pytest.param("zip", lambda p: p.write_bytes(p.read_bytes() + b"\0" * 100), id="zip-extended"),
    pytest.param("zip", lambda p: p.unlink(), id="zip-missing"),
    pytest.param("mod", lambda p: p.unlink(), id="mod-missing"),
    pytest.param("mod", _truncate(5), id="mod-truncated"),
]


@pytest.mark.parametrize(("suffix", "damage"), DAMAGES)
async def test_a_damaged_stored_file_is_never_served(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    hello_direct: dict[str, dict[str, Any]],
    suffix: str,
    damage: Callable[[Path], None],
) -> None:
    wrapper, runs = counting_go(tmp_path, go_binary)
    # No in-memory cache of stored files: every read goes to the disk, which is where
    # the damage is (a cached go.mod, checked when it was cached, is served from memory
    # and never damaged: test_fastpath covers that).
    config = make_config(tmp_path, str(wrapper), go_fixtures, stored_file_cache_bytes=0)
    stored = config.disk_root / go_fixtures.hello / "@v" / f"{V1}.{suffix}"
    good_mod = Path(hello_direct[V1]["GoMod"]).read_bytes()
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        for tail in ("zip", "mod", "info"):  # stored and served once, as good
            assert (await http.get(hello_path(go_fixtures, f"{V1}.{tail}"), timeout=60)).is_success
        damage(stored)
        missing = not stored.exists()
        for _ in range(2):  # the repair, then what it stored
            answer = await http.get(hello_path(go_fixtures, f"{V1}.{suffix}"), timeout=60)
            assert answer.status_code == 200, answer.text
            if suffix == "zip":
                assert h1_of(answer.content, tmp_path) == hello_direct[V1]["Sum"]
            else:
                assert answer.content == good_mod
    # The first fetch, then the repair's: a damaged go.mod is fetched again as the
    # go.mod part alone (go list, no zip), a zip as the whole version (go mod download);
    # a go.mod gone is a miss, which from a VCS fetches the whole version.
    assert len(go_runs(runs)) == 2
    assert go_downloads(runs) == (2 if suffix == "zip" or missing else 1)


async def test_concurrent_requests_for_a_damaged_zip_all_get_good_bytes(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    hello_direct: dict[str, dict[str, Any]],
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures)
    stored = config.disk_root / go_fixtures.hello / "@v" / f"{V1}.zip"
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get(hello_path(go_fixtures, f"{V1}.zip"), timeout=60)).is_success
        statuses: list[int] = []
        for _ in range(5):
            _truncate(10)(stored)
            answers: list[httpx.Response] = []

            async def get(into: list[httpx.Response]) -> None:
                into.append(await http.get(hello_path(go_fixtures, f"{V1}.zip"), timeout=60))

            async with trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(get, answers)
            statuses += [answer.status_code for answer in answers]
            for answer in answers:
                if answer.status_code == 200:
                    assert h1_of(answer.content, tmp_path) == hello_direct[V1]["Sum"]
    assert set(statuses) == {200}, statuses


# ---------------------------------------------------------------------------------------
# Two server processes on one storage root
# ---------------------------------------------------------------------------------------


async def test_two_processes_fetch_one_version_at_once_and_store_it_once(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    hello_direct: dict[str, dict[str, Any]],
) -> None:
    # Each server's go waits at a barrier until both have started fetching, so the two
    # fetches (and the two saves) really overlap.
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    go = go_script(
        tmp_path,
        "barrier-go",
        f'case " $* " in *" mod download "*)\n'
        f"  touch {barrier}/$$\n"
        f"  for i in $(seq 200); do\n"
        f'    [ "$(ls {barrier} | wc -l)" -ge 2 ] && break; sleep 0.05\n'
        f"  done\n"
        f'esac\nexec {go_binary} "$@"\n',
    )
    root = tmp_path / "shared-storage"
    bodies: dict[str, dict[str, bytes]] = {}

    async def one_server(name: str) -> None:
        goget = tmp_path / f"goget-{name}"
        goget.mkdir()
        env = child_env(
            tmp_path,
            ATHENS_STORAGE_TYPE="disk",
            ATHENS_DISK_STORAGE_ROOT=str(root),
            ATHENS_GOGET_DIR=str(goget),
            ATHENS_GO_BINARY_PATH=str(go),
            ATHENS_GO_BINARY_ENV_VARS=fixture_env_vars(go_fixtures),
            # Two independent servers: workers of one take turns (test_workers).
            ATHENS_WORKERS="1",
        )
        async with child_server(tmp_path, name, env) as child:
            got = bodies[name] = {}
            async with httpx.AsyncClient(base_url=child.url) as http:
                for tail in ("zip", "mod", "info"):
                    answer = await http.get(hello_path(go_fixtures, f"{V1}.{tail}"), timeout=60)
                    assert answer.status_code == 200, (name, answer.text, child.log())
                    got[tail] = answer.content
            child.process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await child.process.wait() == 0, child.log()
        assert os.listdir(goget) == []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one_server, "a")
        nursery.start_soon(one_server, "b")

    assert len(os.listdir(barrier)) == 2  # both fetched
    assert bodies["a"] == bodies["b"]
    assert h1_of(bodies["a"]["zip"], tmp_path) == hello_direct[V1]["Sum"]
    directory = root / go_fixtures.hello / "@v"
    assert sorted(os.listdir(directory)) == [
        "list",
        f"{V1}.info",
        f"{V1}.mod",
        f"{V1}.modhash",
        f"{V1}.zip",
        f"{V1}.ziphash",
    ]
    assert (directory / "list").read_text() == f"{V1}\n"
    assert_versions_whole(root, directory, {V1})


# ---------------------------------------------------------------------------------------
# SIGTERM under load
# ---------------------------------------------------------------------------------------


def digest_tree(root: Path) -> dict[str, str]:
    """The stored files' digests (not the last-served record, which is not storage)."""
    return {
        name: hashlib.sha256((root / name).read_bytes()).hexdigest()
        for name, size in stored_tree(root).items()
        if size >= 0
    }


async def test_sigterm_lets_downloads_in_flight_finish_whole_and_exits_zero(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    root = tmp_path / "storage"
    storage = DiskStorage(root)
    zips = {
        version: await store_version(storage, tmp_path, BIG, version, 12 << 20)
        for version in ("v1.0.0", "v1.1.0", "v1.2.0")
    }
    before = digest_tree(root)
    env = child_env(
        tmp_path,
        ATHENS_STORAGE_TYPE="disk",
        ATHENS_DISK_STORAGE_ROOT=str(root),
        ATHENS_GO_BINARY_PATH=go_binary,
        ATHENS_GO_BINARY_ENV_VARS=fixture_env_vars(go_fixtures),
        ATHENS_SHUTDOWN_TIMEOUT="20",
    )
    async with child_server(tmp_path, "server", env) as child:
        started = trio.Semaphore(0)
        go_on = trio.Event()
        received: dict[int, tuple[int, bytes]] = {}

        async def slow_client(i: int, version: str) -> None:
            host, port = child.url.removeprefix("http://").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                request = f"GET /{BIG}/@v/{version}.zip HTTP/1.1\r\nHost: {host}\r\n\r\n"
                await stream.send_all(request.encode())
                data = bytearray(await stream.receive_some(65536))
                started.release()  # mid-download: headers and a first piece in
                await go_on.wait()
                head_end = -1
                while True:
                    if head_end < 0:
                        head_end = data.find(b"\r\n\r\n")
                    if head_end >= 0:
                        head = bytes(data[:head_end]).decode("latin-1").lower()
                        length = int(head.split("content-length:")[1].split("\r\n")[0])
                        if len(data) - head_end - 4 >= length:
                            break
                    chunk = await stream.receive_some(1 << 20)
                    if not chunk:
                        break
                    data += chunk
            status = int(bytes(data[:12]).split()[1])
            received[i] = (status, bytes(data[head_end + 4 :]))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                versions = list(zips)
                for i in range(6):
                    nursery.start_soon(slow_client, i, versions[i % len(versions)])
                for _ in range(6):
                    await started.acquire()
                child.process.send_signal(signal.SIGTERM)
                # The listener closes; the requests in flight go on.
                await wait_until(lambda: refuses_connections(child.url))
                go_on.set()
            returncode = await child.process.wait()
        log = child.log()
    assert returncode == 0, log
    assert "SIGTERM" in log
    versions = list(zips)
    for i in range(6):
        status, body = received[i]
        assert status == 200
        assert body == zips[versions[i % len(versions)]], i
    assert digest_tree(root) == before  # nothing torn, nothing added


# ---------------------------------------------------------------------------------------
# Upstream unreachable
# ---------------------------------------------------------------------------------------


async def test_an_unreachable_upstream_proxy_is_502_and_clients_do_not_fall_through(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    # go asks a GOPROXY on a closed port for everything but the missing module, which it
    # takes straight from its (local) VCS, where it does not exist.
    env_vars = [f"{k}={v}" for k, v in go_fixtures.go_env.items()] + [
        "GOPROXY=http://127.0.0.1:9",
        f"GONOPROXY={go_fixtures.missing}",
    ]
    config = make_config(tmp_path, go_binary, go_fixtures, go_binary_env_vars=env_vars)
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        for tail in (f"{V1}.info", f"{V1}.mod", f"{V1}.zip", "main.info", "list"):
            answer = await http.get(hello_path(go_fixtures, tail), timeout=60)
            assert answer.status_code == 502, (tail, answer.text)
            assert "connection refused" in answer.text
        latest = await http.get(f"/{go_fixtures.hello}/@latest", timeout=60)
        assert latest.status_code == 502
        missing = await http.get(f"/{go_fixtures.missing}/@v/{V1}.info", timeout=60)
        assert missing.status_code == 404, missing.text

        spec = f"{go_fixtures.hello}@{V1}"
        done = await client_go(
            go_binary, go_fixtures, tmp_path / "client", f"{server.url},direct",
            "mod", "download", "-json", spec,
        )  # fmt: skip
    assert done.returncode != 0  # direct would have answered: no fall-through on a fault
    assert "502" in json.loads(done.stdout)["Error"]
    assert files_of(config.disk_root) == {}
    assert leftover(config) == []


@pytest.mark.parametrize(
    "tail",
    [f"{V1}.info", f"{V1}.mod", f"{V1}.zip", "main.info", "list", "@latest"],
)
async def test_an_unreachable_vcs_is_a_fault_not_a_404(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, tail: str
) -> None:
    # Athens' default (GOPROXY=direct), with github.com's git on a closed port.
    env = dict(go_fixtures.go_env)
    env["GIT_CONFIG_KEY_0"] = "url.http://127.0.0.1:9/.insteadOf"
    config = make_config(
        tmp_path, go_binary, go_fixtures, go_binary_env_vars=[f"{k}={v}" for k, v in env.items()]
    )
    path = f"/{go_fixtures.hello}/{tail}" if tail.startswith("@") else hello_path(go_fixtures, tail)
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get(path, timeout=60)
    assert answer.status_code == 502, answer.text
    assert "127.0.0.1" in answer.text
    assert files_of(config.disk_root) == {}


async def test_an_unreachable_vcs_does_not_make_go_clients_fall_through(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    env = dict(go_fixtures.go_env)
    env["GIT_CONFIG_KEY_0"] = "url.http://127.0.0.1:9/.insteadOf"
    config = make_config(
        tmp_path, go_binary, go_fixtures, go_binary_env_vars=[f"{k}={v}" for k, v in env.items()]
    )
    async with served(config) as server:
        done = await client_go(
            go_binary, go_fixtures, tmp_path / "client", f"{server.url},direct",
            "mod", "download", "-json", f"{go_fixtures.hello}@{V1}",
        )  # fmt: skip
    assert done.returncode != 0  # direct would have answered: no fall-through on a fault
    assert "502" in json.loads(done.stdout)["Error"]
