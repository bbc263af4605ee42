"""The one storage interface every backend implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from pathlib import Path

import trio

__all__ = ["CHUNK_SIZE", "Backend", "StoredZip"]

# Zips are streamed in chunks this large: big enough that per-chunk overhead (a thread
# hop, a send) vanishes next to the copy, small enough that 100 clients stay cheap.
CHUNK_SIZE = 1 << 20


class StoredZip(abc.ABC):
    """A stored module zip: its size now, its bytes on demand, never all at once."""

    size: int
    #: Where the zip sits on the local disk, for readers that need random access
    #: (hashing); None for backends that only stream.
    path: Path | None = None

    @abc.abstractmethod
    def chunks(self, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, stop)`` of the zip in chunks of at most CHUNK_SIZE.

        Any file handle is opened when iteration starts and closed when it ends or the
        iterator is closed, so an abandoned response leaks nothing.
        """


class Backend(abc.ABC):
    """Where modules live.  Once a version is there, it is there for good.

    Module paths and versions reaching a backend have passed the module-identity checks
    (`athens_trio._module`) and versions are canonical; backends may rely on it.
    Reads of a version that is not stored raise :class:`~athens_trio.NotFoundError`;
    backend faults raise :class:`~athens_trio.StorageError`.
    """

    #: A short description for the startup line, e.g. "disk at /var/lib/athens".
    description: str

    @abc.abstractmethod
    async def list_versions(self, module: str) -> list[str]:
        """Every stored version of ``module``, in no particular order ([] if none)."""

    @abc.abstractmethod
    async def exists(self, module: str, version: str) -> bool:
        """Whether the whole version (info, mod and zip) is stored."""

    @abc.abstractmethod
    async def info(self, module: str, version: str) -> bytes:
        """The version's ``.info`` JSON."""

    @abc.abstractmethod
    async def go_mod(self, module: str, version: str) -> bytes:
        """The version's ``go.mod``."""

    @abc.abstractmethod
    async def zip(self, module: str, version: str) -> StoredZip:
        """The version's zip, as a stream with a known size."""

    @abc.abstractmethod
    async def zip_sum(self, module: str, version: str) -> str | None:
        """The ``h1:`` hash of the zip recorded when it was saved (None if none was)."""

    @abc.abstractmethod
    def catalog(self) -> AsyncIterator[tuple[str, str]]:
        """Every stored (module, version), in no particular order."""

    @abc.abstractmethod
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
        """Store a version atomically: afterwards a reader sees all of it, before it
        none of it, and never a part.

        ``zip_file`` is handed over: a backend may move it instead of copying, so the
        caller must not use it afterwards.  ``zip_sum`` and ``mod_sum`` are go's ``h1:``
        hashes of the zip and the go.mod, kept so that later damage can be told from the
        real thing (a backend that can be damaged checks ``mod_sum`` on every read and
        raises DamagedVersionError).  Returns False,
        changing nothing, if the version was already stored (once there, always there:
        never an overwrite).
        """

    @abc.abstractmethod
    async def delete(self, module: str, version: str) -> None:
        """Remove a version (an operator's action; the proxy itself never deletes)."""

    async def sweep(self, older_than: float = 3600.0) -> int:
        """Remove leftovers of saves that were killed mid-way; return how many.  A no-op
        for backends whose saves leave nothing behind."""
        await trio.lowlevel.checkpoint()
        return 0

    async def ready(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Raise :class:`~athens_trio.StorageError` if the backend cannot serve now."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release whatever the backend holds."""
