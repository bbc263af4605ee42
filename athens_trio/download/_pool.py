"""The protocol pool: at most ``ProtocolWorkers`` protocol calls that go upstream at
once, at most ``ProtocolQueue`` waiting for one, and a 503 beyond.

Like Athens' ``addons.WithPool``, a protocol wrapper; unlike it, what storage answers
alone never takes a slot.  Wrapping the protocol itself (:class:`StorageFirst`, which
tells a hit from a miss), the pool hands it its slots and only misses (a fetch, a
repair, an upstream list or resolution) hold one: a cached ``.zip`` never waits
behind thirty slow fetches.  Any other protocol has each of its calls bounded whole,
as Athens does.  A slot is let go before the zip is streamed (streaming is the
server's business and is bounded by its connections, not here).
"""

from __future__ import annotations

import trio

from ..stash import Slots
from ..storage import StoredZip
from ._protocol import DownloadProtocol, StorageFirst

__all__ = ["Pool", "with_pool"]


class _PooledProtocol(DownloadProtocol):
    def __init__(self, inner: DownloadProtocol, slots: Slots) -> None:
        self._inner = inner
        self._slots = slots

    async def list(self, module: str) -> list[str]:
        async with self._slots.slot():
            return await self._inner.list(module)

    async def latest(self, module: str) -> bytes:
        async with self._slots.slot():
            return await self._inner.latest(module)

    async def info(self, module: str, version: str) -> bytes:
        async with self._slots.slot():
            return await self._inner.info(module, version)

    async def go_mod(self, module: str, version: str) -> bytes:
        async with self._slots.slot():
            return await self._inner.go_mod(module, version)

    async def zip(self, module: str, version: str) -> StoredZip:
        async with self._slots.slot():
            return await self._inner.zip(module, version)


class Pool(Slots):
    """A protocol wrapper (call it on a protocol) that bounds concurrent upstream work
    by :attr:`limiter` (FIFO-fair) and the calls waiting for it by ``queue``
    (:class:`~athens_trio.OverloadedError` beyond); :meth:`statistics` tells its
    occupancy and refusals."""

    def __call__(self, inner: DownloadProtocol) -> DownloadProtocol:
        if isinstance(inner, StorageFirst):
            inner.pool_misses(self)  # its hits take no slot
            return inner
        return _PooledProtocol(inner, self)


def with_pool(workers: int | trio.CapacityLimiter, *, queue: int | None = None) -> Pool:
    """Bound concurrent upstream protocol calls by a CapacityLimiter of ``workers``
    slots, and those waiting for one by ``queue`` (None: unbounded)."""
    return Pool(workers, queue=queue, what="requests for uncached modules")
