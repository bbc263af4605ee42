"""Storage on a local disk, laid out exactly as a GOPROXY tree.

::

    <root>/<escaped module path>/@v/list
    <root>/<escaped module path>/@v/<escaped version>.info
    <root>/<escaped module path>/@v/<escaped version>.mod
    <root>/<escaped module path>/@v/<escaped version>.zip
    <root>/<escaped module path>/@v/<escaped version>.ziphash   (go's h1: hashes of the
    <root>/<escaped module path>/@v/<escaped version>.modhash    zip and of the go.mod)

so ``GOPROXY=file://<root>`` serves the same files without athens-trio.

Atomicity: a version is stored in two parts, each saved on its own: its go.mod part
(``.mod``, ``.modhash`` and ``.info``: what a client walking the module graph needs) and
its zip part (``.ziphash`` and ``.zip``), which may come later or never.  Each file of a
part is written under a dot-prefixed temporary name in the same directory and flushed to
disk; only then are they given their final names, in one fixed order with the part's
marker last (``.info`` for the go.mod part, ``.zip`` for the zip part), each with
``link``, which fails if the name exists: no stored file is ever replaced.  The
``.info`` file's presence is what "this version is stored" means (it is listed and
served), so a reader never sees a version without its ``.mod``; the ``.zip`` file's
presence is what "its zip is stored" means, and a zip part is saved only after the
go.mod part.  A save that finds one of its names taken keeps the stored file: if it
holds the same bytes (a concurrent save of the same fetch, or what a killed save left)
the save goes on; if not, another save got there first with other bytes, the part is
that save's, and this one stops before linking anything more.  So a part's files are
always one save's (or identical ones'), never a mix.

Ownership: a save holds an exclusive ``flock`` on each of its temporary files
(``.tmp-l-<random>-<name>``) from its creation to its removal.  The kernel drops the
lock when the writer dies, ``kill -9`` included, so a sweep removes a dead writer's
temporary files at once, whatever their age, and never a live one's (another process
sharing the root): it removes only a file whose lock it could take.

A part's files are written first and then flushed all at once
(:meth:`_TempFiles.flush`), each ``fsync`` in a thread of its own: the filesystem
commits concurrent flushes together (ext4's journal does), where one after the other
each waits for a commit of its own.  On a busy disk that is the difference between one
commit per part and one per file.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import trio

from .._exceptions import InvalidPathError, InvalidVersionError, NotFoundError, StorageError
from .._module import (
    escape_path,
    escape_version,
    is_canonical_version,
    unescape_path,
    unescape_version,
)
from .._semver import sort_versions
from ._backend import CHUNK_SIZE, Backend, StoredBytes, StoredZip

__all__ = ["DiskStorage"]

log = logging.getLogger("athens_trio.storage")

_TEMP_PREFIX = ".tmp-"
#: What marks a temporary file whose writer holds a lock on it while it lives.
_LOCKED = "l-"
#: A temporary name of ours: ``.tmp-l-<random>-`` (locked by its writer), or an older
#: athens-trio's ``.tmp-<random>-`` (not locked: swept by age).  Another tool's
#: ``.tmp-whatever`` is not ours, and never swept.
_TEMP_NAME = re.compile(rf"{re.escape(_TEMP_PREFIX)}({_LOCKED})?[0-9a-f]{{12}}-")


#: How many foreign names :func:`_version_named` remembers having logged (beyond that,
#: new ones are not logged: the log stays bounded whatever a tree holds).
_FOREIGN_LOGGED_MAX = 10_000
_foreign_logged: set[tuple[str, str]] = set()
_foreign_lock = threading.Lock()


def _version_named(directory: Path, stem: str) -> str | None:
    """The version a file ``<stem>.<suffix>`` in ``directory`` (an ``@v``) is of, or None
    for a file of no version: only a canonical version's escaped form names one.

    The tree may be shared with other tools, so anything else there (``README.info``, a
    ``notes.mod``, another tool's temporary file) is not ours: it is never listed,
    served, verified nor swept, and it is logged once per process, not per request."""
    try:
        version = unescape_version(stem)
    except InvalidVersionError:
        version = ""
    if is_canonical_version(version):
        return version
    key = (str(directory), stem)
    with _foreign_lock:
        first = key not in _foreign_logged and len(_foreign_logged) < _FOREIGN_LOGGED_MAX
        if first:
            _foreign_logged.add(key)
    if first:
        log.warning("ignoring %s/%s*: not a file of a canonical version", directory, stem)
    return None


def _versions_among(directory: Path, names: Iterable[str]) -> list[str]:
    """The stored versions (their ``.info`` files) among the ``names`` in ``directory``."""
    versions = (
        _version_named(directory, name[: -len(".info")])
        for name in names
        if name.endswith(".info") and not name.startswith(".")
    )
    return [v for v in versions if v is not None]


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    # An inode number alone is reused at once after a delete; with the size and the
    # time of the last write it names one file, short of a reuse of the inode by a file
    # of the same size written within the same clock tick.  Not ctime: a save's removal
    # of its temporary name (a link count change) sets it on the very file it stored.
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class _DiskZip(StoredZip):
    """A stored file, opened when read: the file whose size was promised, or none.  One
    removed and saved again in between (a repair; an operator's delete, then a fetch) is
    another file, and none of its bytes go out under the first one's length."""

    def __init__(self, path: Path, stat: os.stat_result) -> None:
        self._path = self.path = path
        self.size = stat.st_size
        self._identity = _identity(stat)

    def _check_same(self, fd: int) -> None:
        if _identity(os.fstat(fd)) != self._identity:
            raise NotFoundError("the zip was removed from storage")

    async def chunks(self, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        stop = self.size if stop is None else min(stop, self.size)
        if stop - start <= CHUNK_SIZE:
            # One chunk (a small zip, a zip's tail for the integrity check): one thread
            # hop for open, seek, read and close rather than one for each.
            if stop > start:
                yield await trio.to_thread.run_sync(self._read_range_sync, start, stop)
            return
        try:
            opened = await trio.open_file(self._path, "rb", buffering=0)
        except FileNotFoundError:
            raise NotFoundError("the zip was removed from storage") from None
        except OSError as exc:
            raise StorageError(f"cannot open {self._path}: {exc.strerror}") from exc
        async with opened as f:
            self._check_same(f.fileno())
            if start:
                await f.seek(start)
            remaining = stop - start
            while remaining > 0:
                chunk = await f.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise StorageError(f"{self._path} is shorter than its recorded size")
                remaining -= len(chunk)
                yield chunk

    def _read_range_sync(self, start: int, stop: int) -> bytes:
        try:
            with open(self._path, "rb", buffering=0) as f:
                self._check_same(f.fileno())
                chunk = os.pread(f.fileno(), stop - start, start)
        except FileNotFoundError:
            raise NotFoundError("the zip was removed from storage") from None
        except OSError as exc:
            raise StorageError(f"cannot read {self._path}: {exc.strerror}") from exc
        if len(chunk) < stop - start:
            raise StorageError(f"{self._path} is shorter than its recorded size")
        return chunk


class DiskStorage(Backend):
    """A GOPROXY tree under ``root``; see the module docstring for the guarantees."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.description = f"disk at {self.root}"

    def _version_dir(self, module: str) -> Path:
        return self.root / escape_path(module) / "@v"

    def _file(self, module: str, version: str, suffix: str) -> Path:
        return self._version_dir(module) / f"{escape_version(version)}.{suffix}"

    async def list_versions(self, module: str) -> list[str]:
        return await trio.to_thread.run_sync(self._list_versions_sync, self._version_dir(module))

    @staticmethod
    def _list_versions_sync(directory: Path) -> list[str]:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot list {directory}: {exc.strerror}") from exc
        return _versions_among(directory, names)

    async def exists(self, module: str, version: str) -> bool:
        return await trio.to_thread.run_sync(self._whole_sync, module, version)

    def _whole_sync(self, module: str, version: str) -> bool:
        return all(self._file(module, version, s).exists() for s in ("info", "mod", "zip"))

    async def _read(self, module: str, version: str, suffix: str) -> bytes:
        return await trio.to_thread.run_sync(self._read_sync, module, version, suffix)

    def _read_sync(self, module: str, version: str, suffix: str) -> bytes:
        # One thread hop per read: a request's hot path.  A .mod or .zip without its
        # .info is an interrupted save, not a stored version.
        info = self._file(module, version, "info")
        path = self._file(module, version, suffix)
        try:
            if suffix != "info" and not info.exists():
                raise FileNotFoundError(info)
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{module}@{version} is not in storage") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc

    async def info(self, module: str, version: str) -> bytes:
        return await self._read(module, version, "info")

    async def go_mod(self, module: str, version: str) -> bytes:
        return await self._read(module, version, "mod")

    async def go_mod_and_sum(self, module: str, version: str) -> tuple[bytes, str | None]:
        """``go_mod`` and ``mod_sum`` in one thread hop (the integrity check reads both)."""

        def read_sync() -> tuple[bytes, str | None]:
            mod = self._read_sync(module, version, "mod")
            return mod, self._recorded_sync(module, version, "modhash")

        return await trio.to_thread.run_sync(read_sync)

    async def go_mod_file(self, module: str, version: str) -> StoredZip:
        # One thread hop: a go.mod of up to CHUNK_SIZE comes back read (nearly all do),
        # a bigger one as a file streamed in chunks.
        info = self._file(module, version, "info")
        path = self._file(module, version, "mod")

        def open_sync() -> StoredZip:
            try:
                if not info.exists():
                    raise FileNotFoundError(info)
                with open(path, "rb", buffering=0) as f:
                    stat = os.fstat(f.fileno())
                    if stat.st_size > CHUNK_SIZE:
                        return _DiskZip(path, stat)
                    return StoredBytes(f.read())
            except FileNotFoundError:
                raise NotFoundError(f"{module}@{version} is not in storage") from None
            except OSError as exc:
                raise StorageError(f"cannot read {path}: {exc.strerror}") from exc

        return await trio.to_thread.run_sync(open_sync)

    async def zip(self, module: str, version: str) -> StoredZip:
        info = self._file(module, version, "info")
        path = self._file(module, version, "zip")

        def stat_sync() -> os.stat_result:
            try:
                if not info.exists():
                    raise FileNotFoundError(info)
                return path.stat()
            except FileNotFoundError:
                raise NotFoundError(f"{module}@{version} is not in storage") from None
            except OSError as exc:
                raise StorageError(f"cannot stat {path}: {exc.strerror}") from exc

        return _DiskZip(path, await trio.to_thread.run_sync(stat_sync))

    async def zip_sum(self, module: str, version: str) -> str | None:
        return await trio.to_thread.run_sync(self._recorded_sync, module, version, "ziphash")

    async def mod_sum(self, module: str, version: str) -> str | None:
        return await trio.to_thread.run_sync(self._recorded_sync, module, version, "modhash")

    def _recorded_sync(self, module: str, version: str, suffix: str) -> str | None:
        path = self._file(module, version, suffix)
        try:
            recorded = path.read_text().strip()
        except FileNotFoundError:
            recorded = ""  # saved without one (a tree filled by other means)
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
        # The hash of a part that is not stored (yet) is no hash of anything.
        part = ("info", "mod", "zip") if suffix == "ziphash" else ("info", "mod")
        if not all(self._file(module, version, s).exists() for s in part):
            raise NotFoundError(f"{module}@{version} is not in storage")
        return recorded or None

    async def catalog(
        self, *, limiter: trio.CapacityLimiter | None = None
    ) -> AsyncIterator[tuple[str, str]]:
        for entry in await trio.to_thread.run_sync(self._catalog_sync, limiter=limiter):
            yield entry

    def _catalog_sync(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for directory, subdirs, _files in os.walk(self.root):
            # Temporary and hidden directories are never module paths (no element of
            # a module path starts with a dot), and @v holds files only.
            subdirs[:] = [d for d in subdirs if not d.startswith(".") and d != "@v"]
            version_dir = Path(directory) / "@v"
            if version_dir.is_dir():
                relative = Path(directory).relative_to(self.root).as_posix()
                try:
                    module = unescape_path(relative)
                except InvalidPathError:
                    continue  # not ours: something else put a directory here
                found.extend((module, v) for v in self._list_versions_sync(version_dir))
        return found

    async def sweep(self, older_than: float = 3600.0) -> int:
        """Remove what saves killed mid-way (a SIGKILL, a power cut) left in ``@v``
        directories: temporary files, and a version's files without its ``.info`` (never
        a stored version); return how many.  A temporary file goes once its writer is
        gone (its lock is free), whatever its age; an older athens-trio's (unlocked) and
        a version's files only when older than ``older_than`` seconds: another process
        sharing the root may be saving right now."""
        # abandon_on_cancel: a closing pipeline need not wait for a long walk to end.
        return await trio.to_thread.run_sync(self._sweep_sync, older_than, abandon_on_cancel=True)

    def _sweep_sync(self, older_than: float) -> int:
        cutoff = time.time() - older_than
        removed = 0
        for directory, subdirs, files in os.walk(self.root):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            if Path(directory).name == "@v":
                removed += _remove_leftovers(Path(directory), files, cutoff)
        return removed

    async def save_mod(
        self, module: str, version: str, *, info: bytes, mod: bytes, mod_sum: str | None = None
    ) -> bool:
        directory = self._version_dir(module)
        try:
            return await trio.to_thread.run_sync(
                _save_mod_sync, directory, version, info, mod, mod_sum
            )
        except OSError as exc:
            raise StorageError(f"cannot save {module}@{version}: {exc}") from exc

    async def save(
        self,
        module: str,
        version: str,
        *,
        info: bytes,
        mod: bytes,
        zip_file: Path,
        zip_sum: str | None = None,
        mod_sum: str | None = None,
    ) -> bool:
        # As Backend.save (its go.mod part if absent, the zip only beside the same
        # go.mod), in one thread hop rather than one per file read and save.
        directory = self._version_dir(module)

        def save_sync() -> bool:
            stored_mod = _save_mod_sync(directory, version, info, mod, mod_sum)
            if not stored_mod and self._read_sync(module, version, "mod") != mod:
                return False
            return _save_zip_sync(directory, version, Path(zip_file), zip_sum)

        try:
            return await trio.to_thread.run_sync(save_sync)
        except _ModPartMissing:
            raise NotFoundError(f"{module}@{version}: its go.mod is not stored") from None
        except OSError as exc:
            raise StorageError(f"cannot save {module}@{version}: {exc}") from exc

    async def save_zip(
        self, module: str, version: str, *, zip_file: Path, zip_sum: str | None = None
    ) -> bool:
        directory = self._version_dir(module)
        try:
            return await trio.to_thread.run_sync(
                _save_zip_sync, directory, version, Path(zip_file), zip_sum
            )
        except _ModPartMissing:
            raise NotFoundError(f"{module}@{version}: its go.mod is not stored") from None
        except OSError as exc:
            raise StorageError(f"cannot save {module}@{version}: {exc}") from exc

    async def delete(self, module: str, version: str) -> None:
        directory = self._version_dir(module)
        stem = escape_version(version)

        def delete_sync() -> None:
            # .info first: from that instant on, the version is gone as a whole.
            try:
                (directory / f"{stem}.info").unlink()
            except FileNotFoundError:
                raise NotFoundError(f"{module}@{version} is not in storage") from None
            # The rest in the reverse of the order saves link them, so that what a
            # killed delete leaves is what a killed save could have left.
            for suffix in reversed(_LINK_ORDER):
                (directory / f"{stem}.{suffix}").unlink(missing_ok=True)
            _update_list_sync(directory)

        await trio.to_thread.run_sync(delete_sync)

    async def ready(self) -> None:
        def probe() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise StorageError(f"{self.root} is not writable")

        try:
            await trio.to_thread.run_sync(probe)
        except OSError as exc:
            raise StorageError(f"cannot use {self.root}: {exc.strerror}") from exc


#: Touched by whatever deletes stored versions (the admin API, ``athens-trio gc``), so
#: that every process serving the tree forgets what it keeps in memory of them.
TAKEDOWN_MARKER = Path(".locks") / "takedowns"


def mark_takedown(root: Path) -> None:
    """Say that versions were deleted from the tree at ``root`` (see TAKEDOWN_MARKER)."""
    marker = root / TAKEDOWN_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()  # a new mtime even when it existed


#: The threads that flush a part's files at once (a part has at most four).  Saves
#: run in trio's worker threads; this pool only waits on the disk.
_FLUSHERS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync")


class _TempFiles:
    """One save's temporary files in ``directory``, each locked by this process from its
    creation until :meth:`close` removes it (see the module docstring)."""

    def __init__(self, directory: Path, stem: str) -> None:
        prefix = f"{_TEMP_PREFIX}{_LOCKED}{secrets.token_hex(6)}-"
        self.paths = {
            s: directory / f"{prefix}{stem}.{s}"
            for s in ("info", "mod", "zip", "ziphash", "modhash", "list")
        }
        self._held: list[BinaryIO] = []
        self._unflushed: list[BinaryIO] = []
        #: The temporary names this save gave out (only these need removing).
        self.written: set[str] = set()

    def _create(self, suffix: str) -> BinaryIO:
        # Created under an unlocked kind's name (swept by age only) and renamed once
        # locked: a sweep never sees a locked kind's name before its lock is held.
        path = self.paths[suffix]
        unlocked = path.with_name(path.name.replace(f"{_TEMP_PREFIX}{_LOCKED}", _TEMP_PREFIX, 1))
        f = open(unlocked, "xb")  # noqa: SIM115 - held until close()
        self._held.append(f)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            os.link(unlocked, path)  # never replaces: the module's rule
            self.written.add(suffix)
        finally:
            unlocked.unlink(missing_ok=True)
        return f

    def write(self, suffix: str, data: bytes) -> None:
        """Write ``data`` to the temporary ``suffix`` file (on disk after :meth:`flush`)."""
        f = self._create(suffix)
        f.write(data)
        f.flush()
        self._unflushed.append(f)

    def flush(self) -> None:
        """``fsync`` every file written since the last flush, all at once; return when
        all are on disk (raise the first failure, once every flush has ended)."""
        files, self._unflushed = self._unflushed, []
        if not files:
            return
        # The last one in this thread, while the pool flushes the others: one thread
        # handoff fewer per part, and the same concurrent commit.
        *others, last = files
        flushes = [_FLUSHERS.submit(os.fsync, f.fileno()) for f in others]
        failure: OSError | None = None
        try:
            os.fsync(last.fileno())
        except OSError as exc:
            failure = exc
        concurrent.futures.wait(flushes)
        for flush in flushes:
            flush.result()
        if failure is not None:
            raise failure

    def take_zip(self, source: Path) -> None:
        """Move the fetched zip in as the temporary ``zip``: a rename where both sit on
        one filesystem (locked before it moves), else a streamed copy (never the whole
        zip in memory)."""
        src = open(source, "rb")  # noqa: SIM115 - held until close()
        self._held.append(src)
        fcntl.flock(src.fileno(), fcntl.LOCK_EX)
        try:
            os.rename(source, self.paths["zip"])
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            dst = self._create("zip")
            shutil.copyfileobj(src, dst, CHUNK_SIZE)
            dst.flush()
            self._unflushed.append(dst)
            return
        self.written.add("zip")
        self._unflushed.append(src)

    def replace(self, suffix: str, final: Path) -> None:
        """Give the temporary ``suffix`` file the name ``final``, replacing what is there
        (the ``list`` file only: version files are never replaced)."""
        os.replace(self.paths[suffix], final)
        self.written.discard(suffix)

    def close(self) -> None:
        """Remove the temporary names (whatever was linked stays), then unlock."""
        for suffix in self.written:
            with contextlib.suppress(OSError):
                self.paths[suffix].unlink()
        for f in self._held:
            f.close()


@contextlib.contextmanager
def _temp_files(directory: Path, stem: str) -> Iterator[_TempFiles]:
    """A save's :class:`_TempFiles`, removed on the way out whatever happens."""
    temp = _TempFiles(directory, stem)
    try:
        yield temp
    finally:
        temp.close()


def _lock_is_free(path: Path) -> bool:
    """Whether no live process holds ``path``'s lock (a gone writer's temporary file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # a save starting now creates another name: no race to lose
    return True


#: Each part's files in the order a save links them: the last, the part's marker,
#: makes the part visible.  The go.mod part comes first; the zip part needs it.
_MOD_PART = ("mod", "modhash", "info")
_ZIP_PART = ("ziphash", "zip")
#: A version's files but its ``.info``, in link order (a delete goes the other way).
_LINK_ORDER = (*_MOD_PART[:-1], *_ZIP_PART)


class _ModPartMissing(Exception):
    """A zip part saved before its version's go.mod part."""


#: How long a save that lost a race waits for the winner's ``.info``.  The winner had
#: every file written before linking the first, so the rest follow in milliseconds.
_WINNER_WAIT = 5.0

#: Leftovers older than this are surely abandoned (as for ``sweep``'s default).
_ABANDONED_AFTER = 3600.0


def _leftovers(directory: Path, names: list[str]) -> list[Path]:
    """Temporary files, a version's files without its ``.info``, and a ``.ziphash``
    without its ``.zip``, in sweeping order (the reverse of the link order, so a killed
    sweep leaves what a killed save could)."""
    temporary = [directory / n for n in names if _TEMP_NAME.match(n)]
    present = set(names)

    def orphan(name: str, suffix: str) -> bool:
        stem = name[: -len(suffix)]
        marker = "zip" if suffix == "ziphash" else "info"
        return f"{stem}info" not in present or f"{stem}{marker}" not in present

    orphans = [
        directory / name
        for suffix in reversed(_LINK_ORDER)
        for name in names
        if not name.startswith(".")
        and name.endswith(f".{suffix}")
        and orphan(name, suffix)
        and _version_named(directory, name[: -len(suffix) - 1]) is not None
    ]
    return temporary + orphans


def _remove_leftovers(directory: Path, names: list[str], cutoff: float) -> int:
    """Remove the leftovers among ``names`` that are abandoned: a locked kind of
    temporary file once its lock is free (its writer is gone), whatever its age, and
    never while it is held; anything else once written before ``cutoff``.  Return how
    many.  (An orphan's mtime is when its temporary file was written, moments before a
    save linked it.)"""
    removed = 0
    for path in _leftovers(directory, names):
        ours = _TEMP_NAME.match(path.name)
        with contextlib.suppress(OSError):
            locked_kind = bool(ours and ours[1])
            if _lock_is_free(path) if locked_kind else path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


def _link_or_keep(temp: Path, final: Path) -> bool:
    """Give ``temp`` the name ``final`` unless that name is taken; whether it was given."""
    try:
        os.link(temp, final)
    except FileExistsError:
        return False
    return True


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk = fa.read(CHUNK_SIZE)
            if chunk != fb.read(CHUNK_SIZE):
                return False
            if not chunk:
                return True


def _wait_for_winner(marker: Path, what: str) -> bool:
    """A concurrent save with other bytes linked first: the part is its.  Wait for its
    marker, then answer False, as for any part already stored."""
    deadline = time.monotonic() + _WINNER_WAIT
    while not marker.exists():
        if time.monotonic() > deadline:
            raise StorageError(
                f"{what}: another save left other bytes under its names and no "
                f"{marker.suffix}; the first save after they are an hour old removes them"
            )
        time.sleep(0.005)  # a worker thread's poll, bounded by the deadline
    return False


def _link_part(directory: Path, stem: str, temp: _TempFiles, part: tuple[str, ...]) -> bool:
    """Link a part's files written under ``temp`` names, its marker last; whether this
    save stored the part (or made a stored marker's part whole again)."""
    *files, marker = part
    final = {s: directory / f"{stem}.{s}" for s in part}
    marker_stored = final[marker].exists()
    completed = False  # a lost .mod of a stored .info linked by this save
    for name in files:
        if name not in temp.written:
            # Saved without this hash.  One stored already was linked before a .mod
            # or .zip equal to ours (the link order), so it is theirs too: kept.
            continue
        if _link_or_keep(temp.paths[name], final[name]):
            completed |= name == "mod"
        elif not _same_bytes(temp.paths[name], final[name]):
            return _wait_for_winner(final[marker], f"{directory}/{stem}")
    if _link_or_keep(temp.paths[marker], final[marker]):
        return True
    return marker_stored and completed  # else stored by a concurrent save, equal to ours


def _save_mod_sync(
    directory: Path, version: str, info: bytes, mod: bytes, mod_sum: str | None
) -> bool:
    stem = escape_version(version)
    if (directory / f"{stem}.info").exists() and (directory / f"{stem}.mod").exists():
        return False  # stored (as for every zip part saved after its go.mod part)
    # One listing answers what is there (rather than a stat per name) and what the
    # list file gets; what changes meanwhile is the links' to refuse and the list
    # update's rescan to catch.
    try:
        names = set(os.listdir(directory))
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        names = set()
    stored_info = f"{stem}.info" in names
    if stored_info and f"{stem}.mod" in names:
        return False
    # A .info whose .mod was lost (a hand, a failing disk) is no version: this save
    # makes it whole again, linking what is missing.
    if not stored_info:
        # What a killed save left an hour ago goes now rather than at the next sweep:
        # other bytes under these names would stop this save.
        present = [n for n in (f"{stem}.{s}" for s in _LINK_ORDER) if n in names]
        _remove_leftovers(directory, present, time.time() - _ABANDONED_AFTER)
        # A zip part is linked only once the .info is there: one without it is what a
        # killed delete (or an older athens-trio's killed save) left, never a save in
        # progress, and must not become this version's zip.
        for suffix in reversed(_ZIP_PART):
            if f"{stem}.{suffix}" in names:
                # The listing is no snapshot: a save linking this version meanwhile
                # (.info first, then its zip part) may show in it by its zip alone.
                # With the .info there now, the zip part is that save's: kept.
                if (directory / f"{stem}.info").exists():
                    break
                (directory / f"{stem}.{suffix}").unlink(missing_ok=True)
    with _temp_files(directory, stem) as temp:
        temp.write("mod", mod)
        temp.write("info", info)
        if mod_sum:
            temp.write("modhash", mod_sum.encode())
        # Everything that can fail for want of space is written before the version
        # becomes visible, the list included: a full disk fails the save whole.
        listed = sort_versions({*_versions_among(directory, names), version})
        temp.write("list", "".join(f"{v}\n" for v in listed).encode())
        temp.flush()
        saved = _link_part(directory, stem, temp, _MOD_PART)
        if saved and not stored_info:
            temp.replace("list", directory / "list")
        if saved:
            _fsync_dir(directory)
    if saved:
        _update_list_sync(directory)
    return saved


def _save_zip_sync(directory: Path, version: str, zip_file: Path, zip_sum: str | None) -> bool:
    stem = escape_version(version)
    if (directory / f"{stem}.zip").exists():
        return False
    if not (directory / f"{stem}.info").exists():
        raise _ModPartMissing
    if (directory / f"{stem}.ziphash").exists():
        # A .ziphash a killed save left an hour ago goes now (other bytes would stop us).
        _remove_leftovers(directory, [f"{stem}.ziphash"], time.time() - _ABANDONED_AFTER)
    with _temp_files(directory, stem) as temp:
        temp.take_zip(zip_file)
        if zip_sum:
            temp.write("ziphash", zip_sum.encode())
        temp.flush()
        saved = _link_part(directory, stem, temp, _ZIP_PART)
        if saved:
            _fsync_dir(directory)
    if saved and not (directory / f"{stem}.info").exists():
        # Deleted while the zip was written (gc, an operator, a repair): a zip without
        # its go.mod part is no version, and nothing would ever remove it.  Its
        # marker first, as a delete removes them.
        for suffix in reversed(_ZIP_PART):
            (directory / f"{stem}.{suffix}").unlink(missing_ok=True)
        raise _ModPartMissing
    return saved


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan_versions(directory: Path) -> list[str]:
    return sort_versions(DiskStorage._list_versions_sync(directory))


def _update_list_sync(directory: Path) -> None:
    """Rewrite the ``list`` file if it lacks what is stored.  It serves
    ``GOPROXY=file://`` only (athens-trio lists by scanning), so failing to write it
    fails nothing: the version is stored, and the next save of the module writes the
    list again.  (Concurrent writers, in this process or others, converge: see
    :func:`_write_list_sync`.)"""
    try:
        _write_list_sync(directory)
    except OSError as exc:
        log.warning("cannot update %s/list: %s", directory, exc)


def _write_list_sync(directory: Path) -> None:
    """Rewrite ``list`` (versions in semver order, one per line) from the stored ``.info`` files.

    Another process may be doing the same; each writer rescans after its rename and
    writes again if the tree changed meanwhile, so the last writer's list is complete.
    """
    while True:
        versions = _scan_versions(directory)
        text = "".join(f"{v}\n" for v in versions).encode()
        with contextlib.suppress(OSError):
            if (directory / "list").read_bytes() == text:
                return  # complete already: written by the save itself, most often
        with _temp_files(directory, "") as temp:
            temp.write("list", text)
            temp.flush()
            temp.replace("list", directory / "list")
        if _scan_versions(directory) == versions:
            return
