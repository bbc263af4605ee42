"""The storage roles, and :class:`Backend`, the combination every full backend implements.

As Athens' pkg/storage splits its Backend into Lister, Getter, Checker, Saver, Deleter
and Cataloger, a component here asks only for the role it uses:

- :class:`Reader` — what a version holds: ``list_versions``, ``exists``, ``info``,
  ``go_mod``, ``zip`` and the hashes recorded at save time (``zip_sum``, ``mod_sum``);
- :class:`Saver` — ``save_mod`` (a version's info and go.mod) and ``save_zip`` (its
  zip, later or never), each create-if-absent: once there, always there;
- :class:`Deleter` — ``delete``, an operator's action;
- :class:`Cataloger` — ``catalog``, every stored (module, version);
- :class:`Lifecycle` — ``ready``, ``sweep`` and ``aclose``, no-ops unless a backend
  holds something.

A new backend is one module with one subclass of :class:`Backend`, and passes
:mod:`athens_trio.storage.compliance`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from pathlib import Path

import trio

__all__ = [
    "CHUNK_SIZE",
    "Backend",
    "Cataloger",
    "Deleter",
    "Lifecycle",
    "Reader",
    "Saver",
    "StoredBytes",
    "StoredZip",
]

# Zips are streamed in chunks this large: big enough that per-chunk overhead (a thread
# hop, a send) vanishes next to the copy, small enough that 100 clients stay cheap.
CHUNK_SIZE = 1 << 20


class StoredZip(abc.ABC):
    """A stored module zip: its size now, its bytes on demand, never all at once."""

    size: int
    #: Where the zip sits on the local disk, for readers that need random access
    #: (hashing); None for backends that only stream.
    path: Path | None = None
    #: A short-lived URL where a client may GET the zip itself (a presigned one), for
    #: backends configured to hand zips out that way; the server then redirects there.
    redirect_url: str | None = None

    @abc.abstractmethod
    def chunks(self, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, stop)`` of the zip in chunks of at most CHUNK_SIZE.

        Any file handle is opened when iteration starts and closed when it ends or the
        iterator is closed, so an abandoned response leaks nothing.  A zip removed
        before iteration starts raises :class:`~athens_trio.NotFoundError`.
        """


class StoredBytes(StoredZip):
    """A stored file already held in memory (a small one, or a backend's own bytes),
    behind the same streaming interface."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    async def chunks(self, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        stop = self.size if stop is None else min(stop, self.size)
        for at in range(start, stop, CHUNK_SIZE):
            await trio.lowlevel.checkpoint()
            yield self.data[at : min(at + CHUNK_SIZE, stop)]


class Reader(abc.ABC):
    """What is stored of a version.

    Module paths and versions reaching a backend have passed the module-identity checks
    (`athens_trio._module`) and versions are canonical; backends may rely on it.
    Reads of a version that is not stored raise :class:`~athens_trio.NotFoundError`;
    backend faults raise :class:`~athens_trio.StorageError`.
    """

    @abc.abstractmethod
    async def list_versions(self, module: str) -> list[str]:
        """Every stored version of ``module``, in no particular order ([] if none)."""

    @abc.abstractmethod
    async def exists(self, module: str, version: str) -> bool:
        """Whether the whole version (info, mod and zip) is stored.  A version saved
        without its zip (``save_mod`` alone) is stored, listed and served, but not whole:
        reading its zip raises NotFoundError until ``save_zip``."""

    @abc.abstractmethod
    async def info(self, module: str, version: str) -> bytes:
        """The version's ``.info`` JSON."""

    @abc.abstractmethod
    async def go_mod(self, module: str, version: str) -> bytes:
        """The version's ``go.mod``, as stored (:mod:`._integrity` checks it)."""

    @abc.abstractmethod
    async def zip(self, module: str, version: str) -> StoredZip:
        """The version's zip, as a stream with a known size."""

    async def go_mod_file(self, module: str, version: str) -> StoredZip:
        """The version's ``go.mod`` as a stream with a known size (the zip's interface),
        so that a big one (go allows 16 MiB) is never held whole per request.  A small
        one may come as :class:`StoredBytes`, read in the same step.  The default holds
        it whole: right for backends that keep it in memory anyway."""
        return StoredBytes(await self.go_mod(module, version))

    @abc.abstractmethod
    async def zip_sum(self, module: str, version: str) -> str | None:
        """The ``h1:`` hash of the zip recorded when it was saved (None if none was)."""

    @abc.abstractmethod
    async def mod_sum(self, module: str, version: str) -> str | None:
        """The ``h1:`` hash of the go.mod recorded when it was saved (None if none was)."""


class Saver(abc.ABC):
    """Saves a version in two parts, each atomic and create-if-absent: its go.mod part
    (``.info`` and ``go.mod``, what a client walking the module graph asks for) and its
    zip part.  A reader sees a part whole or not at all, never a part of one or a mix of
    two saves; no stored byte is ever replaced."""

    @abc.abstractmethod
    async def save_mod(
        self, module: str, version: str, *, info: bytes, mod: bytes, mod_sum: str | None = None
    ) -> bool:
        """Store a version's ``.info`` and ``go.mod`` (and go's ``h1:`` hash of the
        go.mod, kept so that later damage can be told from the real thing).  From then
        on the version is stored: listed, its info and go.mod served.  Returns False,
        changing nothing, if they were stored already (by an earlier save or a
        concurrent one that got there first, whose bytes stay)."""

    @abc.abstractmethod
    async def save_zip(
        self, module: str, version: str, *, zip_file: Path, zip_sum: str | None = None
    ) -> bool:
        """Store the zip of a version whose go.mod part is stored (NotFoundError if it
        is not).  ``zip_file`` is handed over: a backend may move it instead of copying,
        so the caller must not use it afterwards.  Returns False, changing nothing, if
        the zip was stored already."""

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
        """Store the whole version: its go.mod part if absent, then its zip if absent.
        Returns whether anything was stored.  A stored go.mod other than ``mod`` is
        another save's version: then nothing is stored, so a zip is never paired with a
        go.mod it did not come with.  A stored .info spelled otherwise (another tool's:
        go's module cache adds an Origin) is the same version: the zip goes beside it."""
        stored_mod = await self.save_mod(module, version, info=info, mod=mod, mod_sum=mod_sum)
        if not stored_mod and await self.go_mod(module, version) != mod:
            return False
        return await self.save_zip(module, version, zip_file=zip_file, zip_sum=zip_sum)

    # ``save`` reads what is stored; every Saver is a Reader too.
    @abc.abstractmethod
    async def info(self, module: str, version: str) -> bytes: ...

    @abc.abstractmethod
    async def go_mod(self, module: str, version: str) -> bytes: ...


class Deleter(abc.ABC):
    @abc.abstractmethod
    async def delete(self, module: str, version: str) -> None:
        """Remove a version (an operator's action, or a repair of a damaged one)."""


class Cataloger(abc.ABC):
    @abc.abstractmethod
    def catalog(
        self, *, limiter: trio.CapacityLimiter | None = None
    ) -> AsyncIterator[tuple[str, str]]:
        """Every stored (module, version), in no particular order; a walk in worker
        threads takes them from ``limiter`` (trio's default if None)."""


class Lifecycle:
    """Start, housekeeping and end; each a no-op unless a backend needs it."""

    #: A short description for the startup line, e.g. "disk at /var/lib/athens".
    description: str

    async def ready(self) -> None:
        """Raise :class:`~athens_trio.StorageError` if the backend cannot serve now."""
        await trio.lowlevel.checkpoint()

    async def sweep(self, older_than: float = 3600.0) -> int:
        """Remove leftovers of saves that were killed mid-way; return how many.  Only
        what is older than ``older_than`` seconds: another process may be saving now."""
        await trio.lowlevel.checkpoint()
        return 0

    async def aclose(self) -> None:
        """Release whatever the backend holds."""
        await trio.lowlevel.checkpoint()


class Backend(Reader, Saver, Deleter, Cataloger, Lifecycle):
    """Where modules live: every role.  Once a version is there, it is there for good."""
