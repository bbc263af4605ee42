"""Workers: N server processes on one listening socket, each its own trio event loop.

``Workers`` (default: the number of cores) > 1 makes the command a supervisor: it binds
the listening sockets once (as a single server would: ``Port``, TLS), then starts that
many ``python -m athens_trio`` processes which inherit them (``fd://`` binds, hypercorn's
own) and serve them; the kernel hands each new connection to one of them.  A worker is
the whole server (pipeline, fast path, metrics) in its own process.

- **One fetch per version, whatever the worker**: each worker's single-flight covers its
  own requests; across workers :class:`VersionLock` (two stash wrappers, the hook in
  ``open_pipeline``) takes an ``flock`` on one of :data:`LOCK_BUCKETS` files under
  ``<root>/.locks/`` around the fetch and save, and the fetch looks in storage first
  once it has the lock: the second worker finds the version saved and fetches nothing.
  The lock is taken inside the GoGetWorkers pool and waited for outside it: a worker
  waiting for another's fetch holds none of its go workers (it fetches other versions
  meanwhile), and no lock is held while queued for one.
- **SIGTERM / SIGINT** reach the supervisor, which passes each on to every worker (each
  stops gracefully on the first, at once on the second, as a single server does) and
  exits once all have, 0 if all exited 0.  The supervisor holds (blocks) these signals
  and its workers start with them held, so a signal while a worker starts waits for its
  handlers instead of killing it, and one while workers are being started reaches all.
  Workers run in their own session, so a terminal's Ctrl-C is passed on once, not
  twice; each asks the kernel for SIGTERM if the supervisor dies
  (``PR_SET_PDEATHSIG``), so a ``kill -9`` of it leaves no worker.
- **Metrics add up**: each worker writes its metrics to a directory the supervisor
  made (``<pid>.prom``, every :data:`PUBLISH_EVERY` seconds, renamed into place), and
  ``/metrics``, whichever worker answers it, is the sum over all of them (its own
  live, the others' as last written): counters, histograms and gauges summed by name
  and labels, ``process_start_time_seconds`` the earliest, ``*_created`` left out.

With ``UnixSocket`` (its socket file's lifecycle is the single server's) or memory
storage (which processes cannot share) a single process serves.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import trio
from hypercorn.utils import repr_socket_addr
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .._config import Config
from .._ownership import claim, dead_claims
from ..stash import Part, Stasher, is_stored
from ..storage import Backend

__all__ = [
    "LOCK_BUCKETS",
    "METRICS_DIR_VAR",
    "PUBLISH_EVERY",
    "WORKER_FDS_VAR",
    "in_worker",
    "inherited_fds",
    "merged_metrics",
    "metrics_dir",
    "publish_metrics",
    "release_held_signals",
    "run_supervisor",
    "VersionLock",
    "version_lock_file",
    "worker_argv",
    "worker_count",
]

log = logging.getLogger("athens_trio.workers")

#: How a worker learns the listening sockets it inherited (descriptor numbers, commas).
WORKER_FDS_VAR = "ATHENS_TRIO_WORKER_FDS"
#: The supervisor's PID, so a worker started after its supervisor died stops at once.
_SUPERVISOR_VAR = "ATHENS_TRIO_SUPERVISOR"
#: Where the workers' metrics go (a directory the supervisor makes and removes).
METRICS_DIR_VAR = "ATHENS_TRIO_METRICS_DIR"
#: The supervisor's claimed directory for its workers' metrics, in the temp dir.
METRICS_DIR_PREFIX = "athens-trio-workers-"
#: Seconds between a worker's metrics snapshots.
PUBLISH_EVERY = 1.0
#: Lock files, bounded: a version's lock is one of these by its hash (two versions
#: sharing one only take turns across workers).
LOCK_BUCKETS = 1024
#: Seconds between tries of a lock another worker holds: the first soon (a go.mod from
#: an upstream proxy is stored in milliseconds; a client waits for it), then doubling
#: up to the last (a VCS fetch takes seconds).
_LOCK_POLL_FIRST = 0.002
_LOCK_POLL = 0.05
_PR_SET_PDEATHSIG = 1
#: The signals the supervisor holds (blocks) and takes with sigwaitinfo: the two it
#: passes on, and a child's exit.
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


def worker_count(config: Config) -> int:
    """How many processes serve: ``Workers``; 1 with a unix socket, with memory storage
    (which processes cannot share) and inside a worker."""
    if config.unix_socket or config.storage_type == "memory" or in_worker():
        return 1
    return config.workers or (os.cpu_count() or 1)


def in_worker() -> bool:
    """Whether this process is one of several workers (so stashes take the version lock)."""
    return bool(os.environ.get(WORKER_FDS_VAR))


def inherited_fds() -> list[int]:
    """The listening sockets this worker inherited ([] outside a worker); also makes the
    kernel send SIGTERM when the supervisor dies."""
    value = os.environ.get(WORKER_FDS_VAR, "")
    if not value:
        return []
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(os.environ.get(_SUPERVISOR_VAR, "0")):
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor died before the prctl
    return [int(fd) for fd in value.split(",")]


# ---------------------------------------------------------------------------------------
# One fetch per version across workers
# ---------------------------------------------------------------------------------------


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def version_lock_file(directory: Path, module: str, version: str) -> Path:
    """The file in ``directory`` whose ``flock`` stands for ``module@version`` (one of
    :data:`LOCK_BUCKETS`: versions that share one wait for each other, rarely)."""
    digest = hashlib.blake2b(f"{module}@{version}".encode(), digest_size=8).digest()
    return directory / f"{int.from_bytes(digest, 'big') % LOCK_BUCKETS}.lock"


async def _open_lock(path: Path) -> int:
    def open_lock() -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    return await trio.to_thread.run_sync(open_lock)


class _LockBusy(Exception):
    """Another worker holds the version's lock: raised inside the pool (its slot goes
    back at once), caught outside it, where the wait happens."""


class _TakeLock(Stasher):
    """Inside the pool: the lock taken without waiting, held around the fetch and save
    (whose look into storage comes first); :class:`_LockBusy` when another holds it."""

    def __init__(self, inner: Stasher, directory: Path) -> None:
        self._inner = inner
        self._directory = directory

    async def stash(self, module: str, version: str, part: Part) -> None:
        fd = await _open_lock(version_lock_file(self._directory, module, version))
        try:
            if not _try_lock(fd):
                raise _LockBusy
            await self._inner.stash(module, version, part)
        finally:
            os.close(fd)  # releases the lock


class _WaitForLock(Stasher):
    """Outside the pool: while another worker holds the version's lock, wait for it
    holding nothing (a poll, not a blocking flock in a thread: a cancelled wait leaves
    no thread behind to take the lock later), then look in storage: the other worker
    most often stored the version, and then nothing more is needed.  Only then the
    pool, where :class:`_TakeLock` takes the lock (and waits again here when another
    took it meanwhile)."""

    def __init__(self, inner: Stasher, lock: VersionLock) -> None:
        self._inner = inner
        self._lock = lock

    async def stash(self, module: str, version: str, part: Part) -> None:
        path = version_lock_file(self._lock.directory, module, version)
        while True:
            if await self._waited_for(path) and await is_stored(
                self._lock.storage, module, version, part
            ):
                return
            try:
                await self._inner.stash(module, version, part)
                return
            except _LockBusy:
                pass  # taken between the look and the turn: wait again

    async def _waited_for(self, path: Path) -> bool:
        """Wait while another holds ``path``'s lock; whether one did."""
        fd = await _open_lock(path)
        try:
            if _try_lock(fd):
                return False
            self._lock.waiting += 1
            pause = _LOCK_POLL_FIRST
            try:
                while not _try_lock(fd):  # another process holds it
                    await trio.sleep(pause)
                    pause = min(pause * 2, _LOCK_POLL)
            finally:
                self._lock.waiting -= 1
            return True
        finally:
            os.close(fd)  # only a look: the fetch takes it again, in a go worker


class VersionLock:
    """One fetch per version across the workers sharing the storage tree at ``root``
    (``storage``; the lock files are under ``root/.locks``, which storage skips).

    :meth:`inside` wraps the fetch and save inside the GoGetWorkers pool and
    :meth:`outside` goes outside it (and inside the hook): a worker waiting for
    another's fetch of a version holds no go worker, and a lock is held only by a
    fetch that has one.  :attr:`waiting` counts the stashes waiting for another
    worker's lock now."""

    def __init__(self, root: Path, storage: Backend) -> None:
        self.directory = root / ".locks"
        self.storage = storage
        self.waiting = 0

    def inside(self, inner: Stasher) -> Stasher:
        return _TakeLock(inner, self.directory)

    def outside(self, inner: Stasher) -> Stasher:
        return _WaitForLock(inner, self)


# ---------------------------------------------------------------------------------------
# Metrics that add up
# ---------------------------------------------------------------------------------------


def metrics_dir() -> Path | None:
    """Where this worker's metrics snapshots go (None outside workers)."""
    value = os.environ.get(METRICS_DIR_VAR)
    return Path(value) if value and in_worker() else None


async def publish_metrics(render: Callable[[], bytes], directory: Path) -> None:
    """Write ``render()`` to ``directory/<pid>.prom`` every :data:`PUBLISH_EVERY`
    seconds, for ever (each write whole: a temporary file renamed into place)."""
    final = directory / f"{os.getpid()}.prom"
    temporary = directory / f".{os.getpid()}.prom.tmp"

    def write(text: bytes) -> None:
        temporary.write_bytes(text)
        temporary.replace(final)

    while True:
        await trio.to_thread.run_sync(write, render())
        await trio.sleep(PUBLISH_EVERY)


def _read_peers(directory: Path, own: str) -> list[str]:
    texts: list[str] = []
    for path in directory.glob("*.prom"):
        if path.name != own:
            with contextlib.suppress(FileNotFoundError):
                texts.append(path.read_text())
    return texts


def merged_metrics(own: bytes, directory: Path) -> bytes:
    """``own`` (this worker's exposition) summed with every other worker's snapshot in
    ``directory``.  Blocking (reads files): call it in a thread."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    order: dict[str, list[tuple[str, tuple[tuple[str, str], ...]]]] = {}
    for text in [own.decode(), *_read_peers(directory, f"{os.getpid()}.prom")]:
        for family in text_string_to_metric_families(text):
            if family.name.endswith("_created"):
                continue  # when a counter began: no sum of them means anything
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                order[family.name] = []
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    values[key] = sample.value
                    order[family.name].append(key)
                elif sample.name == "process_start_time_seconds":
                    values[key] = min(values[key], sample.value)
                else:
                    values[key] += sample.value
    for name, family in families.items():
        for key in order[name]:
            family.add_sample(key[0], dict(key[1]), values[key])
    registry = CollectorRegistry()
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


# ---------------------------------------------------------------------------------------
# The supervisor
# ---------------------------------------------------------------------------------------


def run_supervisor(
    config: Config,
    workers: int,
    argv: Sequence[str],
    describe: str,
    *,
    stopped_before: Sequence[int] = (),
) -> int:
    """Bind, start ``workers`` processes of ``argv`` on the sockets, print where they
    serve, pass signals on, and return the exit code once all have exited.
    ``stopped_before``: the stop signals that came before this call held them (the
    caller noted them); if any did, no worker is started.

    Plain blocking code, not trio: the workers' parent-death signal is tied to the
    thread that started them, and trio starts processes from worker threads that end
    when idle; here the main thread starts them and lives as long as the process."""
    # Imported here: _serve imports the pipeline, which imports this module's users.
    from ._serve import hypercorn_config

    hyper = hypercorn_config(config, grace=config.shutdown_timeout)
    if hyper.ssl_enabled:
        hyper.create_ssl_context()  # a bad certificate stops the start here, once
    bound = hyper.create_sockets()
    sockets = [*bound.secure_sockets, *bound.insecure_sockets]
    # Every worker's Popen, kept for the supervisor's life: a Popen dropped is reaped by
    # the subprocess module (its __del__, the next Popen's cleanup), and its exit would
    # never be seen here.
    alive: list[subprocess.Popen[bytes]] = []
    passed_on: set[int] = set()  # the signals the workers were sent

    def pass_on(signum: int) -> None:
        log.info("%s: passed on to %d workers", signal.Signals(signum).name, len(alive))
        passed_on.add(signum)
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    with contextlib.ExitStack() as stack:
        # Held from here on: a signal while workers start waits until all are started
        # (none misses it) and is taken by sigwaitinfo below, not by a handler.  The
        # workers inherit the mask, so theirs wait until they take them (see
        # release_held_signals) rather than killing a worker that has no handler yet.
        unheld = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        stack.callback(signal.pthread_sigmask, signal.SIG_SETMASK, unheld)
        for sock in sockets:
            stack.callback(sock.close)
        if stopped_before:
            name = signal.Signals(stopped_before[0]).name
            log.info("%s while starting: stopping", name)
            return 0
        for sock in sockets:
            sock.listen(hyper.backlog)
        fds = [sock.fileno() for sock in sockets]
        # Claimed (flock-owned): a supervisor killed with -9 cannot remove its directory,
        # so each start removes those whose supervisor is gone.
        temp = Path(tempfile.gettempdir())
        dead_claims(temp, METRICS_DIR_PREFIX)
        metrics_claim = stack.enter_context(claim(temp, METRICS_DIR_PREFIX))
        shared = str(metrics_claim.path)
        env = {
            **os.environ,
            WORKER_FDS_VAR: ",".join(map(str, fds)),
            _SUPERVISOR_VAR: str(os.getpid()),
            METRICS_DIR_VAR: shared,
        }
        scheme = "https" if hyper.ssl_enabled else "http"
        where = ", ".join(
            f"{scheme}://{repr_socket_addr(s.family, s.getsockname())}" for s in sockets
        )
        for _ in range(workers):
            alive.append(
                subprocess.Popen(
                    list(argv),
                    env=env,
                    pass_fds=fds,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        # The workers hold the sockets now; once they close theirs (a SIGTERM), new
        # connections are refused, as by a single server.
        for sock in sockets:
            sock.close()
        print(f"athens-trio serving on {where} ({workers} workers; {describe})", flush=True)
        failed: list[int] = []
        stopping_on_our_own = False  # a worker failed, the others were sent SIGTERM
        heard = 0  # signals from outside
        while alive:
            signum = signal.sigwaitinfo(HELD_SIGNALS).si_signo
            if signum != signal.SIGCHLD:
                heard += 1
                if stopping_on_our_own and heard == 1:
                    # The workers are stopping gracefully already: passed on, this
                    # would be their second signal, "stop now".
                    log.info("%s: the workers are stopping already", signal.Signals(signum).name)
                    continue
                pass_on(signum)
                continue
            for process in [p for p in alive if p.poll() is not None]:
                alive.remove(process)
                code = process.returncode
                code = code if code >= 0 else 128 - code  # killed by signal N: 128 + N
                if code != 0 and not failed and not passed_on:
                    # A worker failed on its own: stop the others (a start that fails in
                    # one fails in all).  Not once stopping: a second signal would stop
                    # the others at once.
                    stopping_on_our_own = True
                    pass_on(signal.SIGTERM)
                if code != 0:
                    failed.append(code)
    return failed[0] if failed else 0


def release_held_signals() -> None:
    """Take the signals a worker started with held (the supervisor's mask, inherited):
    called once its handlers are in place, so one sent while it started is handled now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def worker_argv() -> list[str]:
    """The command that runs this program again, as a worker."""
    return [sys.executable, "-m", "athens_trio", *sys.argv[1:]]
