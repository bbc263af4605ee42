"""Repairing a version that storage found damaged: remove it, fetch it again.

Storage wrapped by :func:`athens_trio.storage.with_integrity` raises DamagedVersionError
instead of handing out a damaged go.mod or zip; the download protocol then asks
:class:`Repair`.  Repairs are rare and each needs the stasher, so they live here, beside
the protocol, and not in storage.  One repair per version at a time: concurrent requests
for the same damaged version wait for the first one's repair and read what it stored;
repairs of different versions do not wait for each other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from .._exceptions import DamagedVersionError, NotFoundError
from ..stash import Part, Stasher
from ..storage import Deleter

__all__ = ["Repair"]

log = logging.getLogger("athens_trio.download")

T = TypeVar("T")


@dataclass
class _Held:
    lock: trio.Lock = field(default_factory=trio.Lock)
    users: int = 0  # holding or waiting; the entry goes when the last one leaves


class _LockPerVersion:
    """A lock per (module, version), kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], _Held] = {}

    @contextlib.asynccontextmanager
    async def holding(self, module: str, version: str) -> AsyncIterator[None]:
        held = self._held.setdefault((module, version), _Held())
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if not held.users:
                del self._held[module, version]

    def __len__(self) -> int:
        return len(self._held)


class Repair:
    """Replace a damaged stored version with a fresh fetch, then read it again."""

    def __init__(self, storage: Deleter, stasher: Stasher) -> None:
        self._storage = storage
        self._stasher = stasher
        self._locks = _LockPerVersion()

    async def __call__(
        self,
        read: Callable[[str, str], Awaitable[T]],
        module: str,
        version: str,
        part: Part,
        damage: DamagedVersionError,
    ) -> T:
        """``read`` of the version once repaired (``damage`` is what the first read
        raised; ``part`` is what ``read`` needs fetched again).  Still damaged after a
        fresh fetch raises DamagedVersionError."""
        async with self._locks.holding(module, version):
            with contextlib.suppress(DamagedVersionError, NotFoundError):
                return await read(module, version)  # repaired while this one waited
            log.error("%s; removing the version and fetching it again", damage)
            with contextlib.suppress(NotFoundError):  # an operator got there first
                await self._storage.delete(module, version)
            await self._stasher.stash(module, version, part)
            return await read(module, version)

    def versions_in_repair(self) -> int:
        """How many versions are being repaired or waited for now."""
        return len(self._locks)
