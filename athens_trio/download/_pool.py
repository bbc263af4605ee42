"""The protocol pool: at most ``ProtocolWorkers`` protocol calls at once.

Like Athens' ``addons.WithPool``: a call waits for a slot, holds it while it finds or
stashes the version, and lets go before the zip is streamed (streaming is the server's
business and is bounded by its connections, not here).
"""

from __future__ import annotations

import trio

from ..stash import Slots
from ..storage import StoredZip
from ._protocol import DownloadProtocol

__all__ = ["Pool", "with_pool"]


class _PooledProtocol(DownloadProtocol):
    def __init__(self, inner: DownloadProtocol, limiter: trio.CapacityLimiter) -> None:
        self._inner = inner
        self._limiter = limiter

    async def list(self, module: str) -> list[str]:
        async with self._limiter:
            return await self._inner.list(module)

    async def latest(self, module: str) -> bytes:
        async with self._limiter:
            return await self._inner.latest(module)

    async def info(self, module: str, version: str) -> bytes:
        async with self._limiter:
            return await self._inner.info(module, version)

    async def go_mod(self, module: str, version: str) -> bytes:
        async with self._limiter:
            return await self._inner.go_mod(module, version)

    async def zip(self, module: str, version: str) -> StoredZip:
        async with self._limiter:
            return await self._inner.zip(module, version)


class Pool(Slots):
    """A protocol wrapper (call it on a protocol) that bounds concurrent protocol calls
    by :attr:`limiter` (FIFO-fair); :meth:`statistics` tells its occupancy."""

    def __call__(self, inner: DownloadProtocol) -> DownloadProtocol:
        return _PooledProtocol(inner, self.limiter)


def with_pool(workers: int | trio.CapacityLimiter) -> Pool:
    """Bound concurrent protocol calls by a CapacityLimiter of ``workers`` slots."""
    return Pool(workers)
