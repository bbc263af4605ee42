"""Workers: several server processes on one listening socket (``server/_workers.py``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import trio

from athens_trio import MemoryStorage, stash
from athens_trio.server._metrics import Metrics
from athens_trio.server._workers import METRICS_DIR_PREFIX, VersionLock, merged_metrics
from athens_trio.stash import Part, Stasher, is_stored

from .gofixtures import GoFixtures
from .helpers import (
    child_env,
    child_process,
    child_server,
    counting_go,
    fixture_env_vars,
    go_runs,
    hello_path,
    process_alive,
    wait_until,
)


class _CheckThenFetch(Stasher):
    """Storage looked at first, then a fetch that takes a while, then a save: as
    FetchAndSave.  A module with a gate in ``gates`` is fetched only once it is set."""

    def __init__(
        self,
        storage: MemoryStorage,
        tally: dict[str, list[int]],
        gates: dict[str, trio.Event] | None = None,
    ) -> None:
        self._storage = storage
        self._tally = tally  # module -> [fetching now, most at once, fetches]
        self._gates = gates or {}

    async def stash(self, module: str, version: str, part: Part) -> None:
        if await is_stored(self._storage, module, version, part):
            return
        counts = self._tally.setdefault(module, [0, 0, 0])
        counts[0] += 1
        counts[1] = max(counts[1], counts[0])
        counts[2] += 1
        if module in self._gates:
            await self._gates[module].wait()
        await trio.sleep(0.01)  # the fetch
        await self._storage.save_mod(module, version, info=b"{}", mod=b"module m\n")
        counts[0] -= 1


def _worker(root: Path, fetches: Stasher, storage: MemoryStorage, slots: int = 8) -> Stasher:
    """One worker's stasher over a shared tree, composed as open_pipeline does."""
    lock = VersionLock(root, storage)
    return stash.wrap(fetches, lock.inside, stash.with_pool(slots), lock.outside)


async def test_the_version_lock_lets_one_process_at_a_time_fetch_a_version(
    tmp_path: Path,
) -> None:
    # Two workers' stashers: each opens the lock file itself, as two processes do, so
    # the flock excludes one from the other (one open file description each).
    storage = MemoryStorage()
    tally: dict[str, list[int]] = {}
    workers = [_worker(tmp_path, _CheckThenFetch(storage, tally), storage) for _ in range(2)]
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            for worker in workers:
                nursery.start_soon(worker.stash, "example.com/m", "v1.0.0", "mod")
                nursery.start_soon(worker.stash, "example.com/other", "v1.0.0", "mod")
    # One fetch per version, never two at once.
    assert tally == {"example.com/m": [0, 1, 1], "example.com/other": [0, 1, 1]}
    assert (tmp_path / ".locks").is_dir()


_X, _Y, _SLOW = "example.com/x", "example.com/y", "example.com/slow"


async def test_waiting_for_another_workers_fetch_holds_no_go_worker(tmp_path: Path) -> None:
    storage = MemoryStorage()
    tally: dict[str, list[int]] = {}
    x_fetched = trio.Event()
    a = _worker(tmp_path, _CheckThenFetch(storage, tally, {_X: x_fetched}), storage)
    b_pool = stash.with_pool(1)
    b_lock = VersionLock(tmp_path, storage)
    b = stash.wrap(_CheckThenFetch(storage, tally), b_lock.inside, b_pool, b_lock.outside)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.stash, _X, "v1.0.0", "mod")  # A fetches x, held at its gate
        await wait_until(lambda: _X in tally)
        nursery.start_soon(b.stash, _X, "v1.0.0", "mod")  # B waits for A's lock...
        await wait_until(lambda: b_lock.waiting == 1)
        assert b_pool.statistics().in_use == 0  # ...holding none of its one go worker
        with trio.fail_after(30):  # (never returned while the waiter held it)
            await b.stash(_Y, "v1.0.0", "mod")  # so it fetches another version meanwhile
        x_fetched.set()
    assert tally[_X][2] == 1  # B found x stored once A let go: one fetch
    assert tally[_Y][2] == 1


async def test_no_version_lock_is_held_while_queued_for_a_go_worker(tmp_path: Path) -> None:
    storage = MemoryStorage()
    tally: dict[str, list[int]] = {}
    slow_done = trio.Event()
    a_pool = stash.with_pool(1)
    a_lock = VersionLock(tmp_path, storage)
    fetches = _CheckThenFetch(storage, tally, {_SLOW: slow_done})
    a = stash.wrap(fetches, a_lock.inside, a_pool, a_lock.outside)
    b = _worker(tmp_path, _CheckThenFetch(storage, tally), storage)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.stash, _SLOW, "v1.0.0", "mod")  # A's one go worker, busy
        await wait_until(lambda: _SLOW in tally)
        nursery.start_soon(a.stash, _X, "v1.0.0", "mod")  # queued behind it
        await wait_until(lambda: a_pool.statistics().waiting == 1)
        # An idle worker asked for x goes ahead rather than waiting for A's queue.
        with trio.fail_after(30):  # (never returned when A held x's lock while queued)
            await b.stash(_X, "v1.0.0", "mod")
        slow_done.set()
    assert tally[_X][2] == 1  # A's turn came, and found x stored


async def test_a_version_stored_while_waiting_needs_no_go_worker(tmp_path: Path) -> None:
    storage = MemoryStorage()
    tally: dict[str, list[int]] = {}
    x_fetched, slow_done = trio.Event(), trio.Event()
    a = _worker(tmp_path, _CheckThenFetch(storage, tally, {_X: x_fetched}), storage)
    b_pool = stash.with_pool(1, queue=0)
    b_lock = VersionLock(tmp_path, storage)
    b_fetches = _CheckThenFetch(storage, tally, {_SLOW: slow_done})
    b = stash.wrap(b_fetches, b_lock.inside, b_pool, b_lock.outside)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.stash, _X, "v1.0.0", "mod")
        nursery.start_soon(b.stash, _SLOW, "v1.0.0", "mod")  # B's one go worker, busy
        await wait_until(lambda: _X in tally and _SLOW in tally)
        waited = trio.Event()

        async def b_asks_for_x() -> None:
            await b.stash(_X, "v1.0.0", "mod")  # no room in B's pool, nor in its queue
            waited.set()

        nursery.start_soon(b_asks_for_x)
        await wait_until(lambda: b_lock.waiting == 1)
        x_fetched.set()  # A stores x and lets go
        with trio.fail_after(30):
            await waited.wait()  # B has x without a go worker (nor a 503)
        assert not slow_done.is_set()
        slow_done.set()
    assert tally[_X][2] == 1


def test_metrics_of_workers_are_summed(tmp_path: Path) -> None:
    metrics = [Metrics() for _ in range(3)]
    for n, worker in enumerate(metrics):
        for _ in range(n + 1):
            worker.observe_request("mod", "GET", 200, 0.01, 100)
    for n, worker in enumerate(metrics[1:]):
        (tmp_path / f"{n}.prom").write_bytes(worker.render_own())
    merged = merged_metrics(metrics[0].render_own(), tmp_path).decode()
    lines = merged.splitlines()
    assert 'athens_trio_http_requests_total{method="GET",route="mod",status="200"} 6.0' in lines
    assert 'athens_trio_http_response_bytes_total{route="mod"} 600.0' in lines
    assert 'athens_trio_http_request_duration_seconds_count{route="mod"} 6.0' in lines
    assert "_created" not in merged
    assert "# TYPE athens_trio_http_requests_total counter" in lines


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        found += [int(child) for child in text.split()]
    return found


async def test_workers_share_the_socket_fetch_once_and_stop_together(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    script, runs = counting_go(tmp_path, go_binary)
    env = child_env(
        tmp_path,
        ATHENS_WORKERS="2",
        ATHENS_DISK_STORAGE_ROOT=str(tmp_path / "storage"),
        ATHENS_GO_BINARY_PATH=str(script),
        ATHENS_GO_BINARY_ENV_VARS=fixture_env_vars(go_fixtures),
        ATHENS_GOGET_DIR=str(tmp_path),
    )
    async with child_server(tmp_path, "workers", env) as child:
        assert "(2 workers;" in child.banner
        await wait_until(lambda: len(_children(child.process.pid)) == 2, 30)
        workers = _children(child.process.pid)
        path = hello_path(go_fixtures, "v1.0.0.mod")
        bodies: list[bytes] = []

        async def fetch() -> None:
            # A connection each, so the kernel hands them to either worker.
            async with httpx.AsyncClient(timeout=60) as client:
                response = await client.get(child.url + path)
                assert response.status_code == 200, response.text
                bodies.append(response.content)

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(fetch)
        assert len(set(bodies)) == 1
        # One go run for the go.mod part (go version checks aside), whatever the worker.
        fetches = [run for run in go_runs(runs) if run[:1] != ["version"]]
        assert len(fetches) == 1, fetches

        # /metrics adds up across workers, whichever answers (each one's snapshot is at
        # most a second old: poll until the sum is there).
        async def counted() -> bool:
            async with httpx.AsyncClient(timeout=30) as client:
                text = (await client.get(child.url + "/metrics")).text
            wanted = 'athens_trio_http_requests_total{method="GET",route="mod",status="200"}'
            return any(line == f"{wanted} 16.0" for line in text.splitlines())

        await wait_until(counted, 30)

        child.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await child.process.wait() == 0
        for pid in workers:
            assert not process_alive(pid)


async def test_workers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = child_env(
        tmp_path,
        ATHENS_WORKERS="2",
        ATHENS_DISK_STORAGE_ROOT=str(tmp_path / "storage"),
        ATHENS_GO_BINARY_PATH="/bin/true",
        TMPDIR=str(temp),
    )

    def metrics_dirs() -> list[str]:
        return [p.name for p in temp.iterdir() if p.name.startswith(METRICS_DIR_PREFIX)]

    async with child_server(tmp_path, "workers", env) as child:
        await wait_until(lambda: len(_children(child.process.pid)) == 2, 30)
        workers = _children(child.process.pid)
        child.process.kill()
        await wait_until(lambda: not any(process_alive(pid) for pid in workers), 30)
    # Killed with -9, the supervisor left its workers' metrics directory; the next
    # start removes it (its owner is gone), and a graceful stop removes its own.
    killed = metrics_dirs()
    assert len(killed) == 1
    async with child_server(tmp_path, "workers", env) as child:
        await wait_until(lambda: len(_children(child.process.pid)) == 2, 30)
        assert len(metrics_dirs()) == 1
        assert metrics_dirs() != killed
        child.process.terminate()
        with trio.fail_after(30):
            await child.process.wait()
    assert not metrics_dirs()


async def test_workers_still_starting_stop_cleanly_on_sigterm(tmp_path: Path) -> None:
    """A SIGTERM while the workers are starting (here: go's version check never
    answers) stops them at once and exits 0: no second signal, no go left behind."""
    pids = tmp_path / "go-pids"
    script = tmp_path / "slow-go"
    script.write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 300\n")
    script.chmod(0o755)
    env = child_env(
        tmp_path,
        ATHENS_WORKERS="2",
        ATHENS_DISK_STORAGE_ROOT=str(tmp_path / "storage"),
        ATHENS_GO_BINARY_PATH=str(script),
    )
    async with child_server(tmp_path, "workers", env) as child:
        await wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 30)
        child.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await child.process.wait() == 0, child.log()
    log = child.log()
    assert log.count("passed on") == 1, log
    assert "stopping now" not in log, log
    await wait_until(lambda: not any(process_alive(int(p)) for p in pids.read_text().split()), 30)


_SUPERVISE = """
import logging
import sys
from athens_trio._config import Config
from athens_trio.server._workers import run_supervisor

logging.basicConfig(level=logging.INFO)
workers, argv = int(sys.argv[1]), sys.argv[2:]
sys.exit(run_supervisor(Config(port="127.0.0.1:0"), workers, argv, "test"))
"""

# A worker that starts slowly: it takes its signals only once ``go-on`` exists.
_SLOW_WORKER = """
import os, signal, sys, time

def stop(signum, frame):
    open(f"graceful-{os.getpid()}", "w").close()
    sys.exit(0)

open(f"started-{os.getpid()}", "w").close()
while not os.path.exists("go-on"):
    time.sleep(0.01)
signal.signal(signal.SIGTERM, stop)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
time.sleep(300)
"""


@contextlib.asynccontextmanager
async def _supervisor(tmp_path: Path, worker: str) -> AsyncIterator[tuple[trio.Process, Path]]:
    """run_supervisor of two ``python -c worker`` processes (in ``tmp_path``), and the
    file its log goes to; killed on the way out if it still runs."""
    log = tmp_path / "supervisor.stderr"
    argv = [sys.executable, "-c", _SUPERVISE, "2", sys.executable, "-c", worker]
    async with child_process(
        argv, cwd=tmp_path, env=child_env(tmp_path), stdout=tmp_path / "stdout", stderr=log
    ) as process:
        yield process, log


async def test_a_signal_while_workers_start_waits_for_their_handlers(tmp_path: Path) -> None:
    """A SIGTERM passed on to a worker that has no handler yet (Python still importing)
    waits until it has one: the worker stops gracefully, the supervisor exits 0."""
    async with _supervisor(tmp_path, _SLOW_WORKER) as (process, log):
        await wait_until(lambda: len(list(tmp_path.glob("started-*"))) == 2, 30)
        process.send_signal(signal.SIGTERM)
        await wait_until(lambda: "passed on" in log.read_text(), 30)
        (tmp_path / "go-on").touch()
        with trio.fail_after(30):
            assert await process.wait() == 0, log.read_text()
        assert log.read_text().count("passed on") == 1, log.read_text()
        assert len(list(tmp_path.glob("graceful-*"))) == 2


_FAILING_WORKER = "raise SystemExit(3)"


async def test_workers_that_fail_at_once_are_all_seen(tmp_path: Path) -> None:
    """Workers that exit while others are still being started are reaped here, not by
    the subprocess module (a dropped Popen's cleanup): the supervisor returns their
    code rather than waiting for them for ever."""
    log = tmp_path / "supervisor.stderr"
    with open(log, "wb") as stderr, trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-c", _SUPERVISE, "32", sys.executable, "-c", _FAILING_WORKER],
            env=child_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            check=False,
        )
    assert result.returncode == 3, log.read_text()


# One worker fails at once; the other stops slowly, counting the signals it gets.
_ONE_FAILS_ONE_COUNTS = """
import os, signal, sys, time

try:
    os.close(os.open("first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
except FileExistsError:
    pass
else:
    raise SystemExit(3)
signal.signal(signal.SIGTERM, lambda signum, frame: open("signals", "a").write("TERM\\n"))
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
open("ready", "w").close()
while not os.path.exists("go-on"):
    time.sleep(0.01)
"""


async def test_an_operators_signal_while_the_workers_stop_on_their_own_is_no_second(
    tmp_path: Path,
) -> None:
    """A worker failed and the others were sent SIGTERM; the operator's SIGTERM then is
    not passed on (it would be the others' second signal: stop now)."""
    async with _supervisor(tmp_path, _ONE_FAILS_ONE_COUNTS) as (process, log):
        signals = tmp_path / "signals"
        await wait_until(lambda: signals.exists() and signals.read_text() == "TERM\n", 30)
        process.send_signal(signal.SIGTERM)
        await wait_until(lambda: "stopping already" in log.read_text(), 30)
        (tmp_path / "go-on").touch()
        with trio.fail_after(30):
            assert await process.wait() == 3, log.read_text()
        assert signals.read_text() == "TERM\n"


async def test_a_signal_noted_before_the_supervisor_held_them_starts_no_worker(
    tmp_path: Path,
) -> None:
    """A stop signal that came while the supervisor was still starting (noted by the
    command, before its signals were held) stops it before any worker starts."""
    script = _SUPERVISE.replace(
        'workers, argv, "test")', 'workers, argv, "test", stopped_before=[15])'
    )
    assert script != _SUPERVISE
    worker = "open('worker-started', 'w').close()"
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-c", script, "2", sys.executable, "-c", worker],
            cwd=tmp_path,
            env=child_env(tmp_path),
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert "SIGTERM while starting: stopping" in result.stderr.decode()
    assert not (tmp_path / "worker-started").exists()
