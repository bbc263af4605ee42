"""What the proxy served, cheaply: when each version was last served, and the recent
failures (for retention and the web catalog).

Serving a version costs one dict assignment in memory (:meth:`LastServed.mark`); the
marks are merged into one small JSON file per module (``<RootPath>/.last-served/
<escaped module>.json``, ``{"<version>": <unix seconds>}``) every
:data:`FLUSH_INTERVAL` seconds and at shutdown, by one task in the pipeline's nursery:
never a write per request.  Each file is replaced atomically (temporary name, rename);
a crash loses at most the last interval's marks, which only makes a version look
unused a little earlier than it was.  Memory storage keeps the marks in memory only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from .._exceptions import AthensTrioError, status_of
from .._module import escape_path, is_canonical_version, unescape_path
from ..download import DownloadProtocol
from ..storage import StoredZip

__all__ = [
    "FLUSH_INTERVAL",
    "LAST_SERVED_DIR",
    "Activity",
    "Failure",
    "LastServed",
    "all_recorded",
]

log = logging.getLogger("athens_trio.ops")

#: Under a disk storage's root (a leading dot: no module path has one; storage skips it).
LAST_SERVED_DIR = ".last-served"
FLUSH_INTERVAL = 60.0
#: Failures remembered for the web catalog.
MAX_FAILURES = 50

Clock = Callable[[], float]


class LastServed:
    """When each version was last served: marks in memory, flushed to ``directory``
    (None: memory only)."""

    def __init__(self, directory: Path | None, clock: Clock = time.time) -> None:
        self.directory = directory
        self.clock = clock
        self._pending: dict[str, dict[str, float]] = {}
        #: Everything marked (memory storage: all there is; disk: since the start).
        self._seen: dict[str, dict[str, float]] = {}

    def mark(self, module: str, version: str) -> None:
        """``module@version`` was served now (no I/O)."""
        now = self.clock()
        self._pending.setdefault(module, {})[version] = now
        self._seen.setdefault(module, {})[version] = now

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Held around a read-merge-write: several workers (and ``gc``) share the
        directory, and a write not under it could drop another's marks."""
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            yield

    def _file(self, module: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{escape_path(module)}.json"

    def _read_sync(self, module: str) -> dict[str, float]:
        if self.directory is None:
            return {}
        try:
            loaded = json.loads(self._file(module).read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable last-served record of %s: %s", module, exc)
            return {}
        return {str(v): float(t) for v, t in loaded.items()} if isinstance(loaded, dict) else {}

    def _write_sync(self, module: str, served: dict[str, float]) -> None:
        path = self._file(module)
        if not served:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".tmp-{secrets.token_hex(6)}")
        try:
            temp.write_text(json.dumps(served, sort_keys=True))
            os.replace(temp, path)  # a record, not a stored version: replacing is the point
        finally:
            temp.unlink(missing_ok=True)

    async def served(self, module: str) -> dict[str, float]:
        """Each version of ``module`` → when it was last served (recorded or marked)."""
        recorded = await trio.to_thread.run_sync(self._read_sync, module)
        for version, when in self._seen.get(module, {}).items():
            recorded[version] = max(when, recorded.get(version, 0.0))
        return recorded

    async def flush(self) -> int:
        """Merge the marks into their modules' files; how many modules were written."""
        pending, self._pending = self._pending, {}
        if self.directory is None:
            return 0

        def merge(module: str, marks: dict[str, float]) -> None:
            with self._locked():
                served = self._read_sync(module)
                for version, when in marks.items():
                    served[version] = max(when, served.get(version, 0.0))
                self._write_sync(module, served)

        for module, marks in pending.items():
            try:
                await trio.to_thread.run_sync(merge, module, marks)
            except OSError as exc:
                log.warning("cannot record when %s was last served: %s", module, exc)
        return len(pending)

    async def forget(self, module: str, versions: Iterable[str]) -> None:
        """Drop deleted versions from the record."""
        gone = set(versions)
        for table in (self._pending, self._seen):
            for version in gone:
                table.get(module, {}).pop(version, None)
        if self.directory is None:
            return

        def rewrite() -> None:
            with self._locked():
                served = self._read_sync(module)
                self._write_sync(module, {v: t for v, t in served.items() if v not in gone})

        await trio.to_thread.run_sync(rewrite)

    async def run(self, interval: float = FLUSH_INTERVAL) -> None:
        """Flush every ``interval`` seconds until cancelled, then once more."""
        try:
            while True:
                await trio.sleep(interval)
                await self.flush()
        finally:
            with trio.CancelScope(shield=True):
                await self.flush()


@dataclass(frozen=True)
class Failure:
    """A request the protocol failed (a fault, not "does not exist")."""

    time: float
    module: str
    version: str
    status: int
    message: str


class Activity:
    """The last-served record and the recent failures, fed by :meth:`wrap`'s protocol."""

    def __init__(self, last_served: LastServed) -> None:
        self.last_served = last_served
        self._failures: deque[Failure] = deque(maxlen=MAX_FAILURES)

    def failures(self) -> list[Failure]:
        """The recent failures, newest first."""
        return list(reversed(self._failures))

    def wrap(self, protocol: DownloadProtocol) -> DownloadProtocol:
        return _Recorded(protocol, self)

    def failed(self, module: str, version: str, error: AthensTrioError) -> None:
        status = status_of(error)
        if status >= 500:
            when = self.last_served.clock()
            self._failures.append(Failure(when, module, version, status, str(error)))


class _Recorded(DownloadProtocol):
    """The protocol, marking what it served and remembering what failed."""

    def __init__(self, inner: DownloadProtocol, activity: Activity) -> None:
        self._inner = inner
        self._activity = activity

    @contextlib.contextmanager
    def _failures(self, module: str, version: str) -> Iterator[None]:
        try:
            yield
        except AthensTrioError as exc:
            self._activity.failed(module, version, exc)
            raise

    async def list(self, module: str) -> list[str]:
        with self._failures(module, "list"):
            return await self._inner.list(module)

    async def latest(self, module: str) -> bytes:
        with self._failures(module, "latest"):
            return await self._inner.latest(module)

    async def info(self, module: str, version: str) -> bytes:
        with self._failures(module, version):
            info = await self._inner.info(module, version)
        if is_canonical_version(version):
            self._activity.last_served.mark(module, version)
        return info

    async def go_mod(self, module: str, version: str) -> bytes:
        with self._failures(module, version):
            mod = await self._inner.go_mod(module, version)
        self._activity.last_served.mark(module, version)
        return mod

    async def zip(self, module: str, version: str) -> StoredZip:
        with self._failures(module, version):
            stored = await self._inner.zip(module, version)
        self._activity.last_served.mark(module, version)
        return stored


def all_recorded(directory: Path) -> dict[tuple[str, str], float]:
    """Every (module, version) → last served, from the files under ``directory``
    (blocking)."""
    found: dict[tuple[str, str], float] = {}
    for path in directory.rglob("*.json"):
        if path.name.startswith("."):
            continue
        try:
            module = unescape_path(path.relative_to(directory).as_posix()[: -len(".json")])
            loaded = json.loads(path.read_bytes())
        except (AthensTrioError, OSError, ValueError):
            continue
        if isinstance(loaded, dict):
            found.update({(module, str(v)): float(t) for v, t in loaded.items()})
    return found
