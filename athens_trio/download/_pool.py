"""The protocol pool: at most ``ProtocolWorkers`` protocol calls at once.

Like Athens' ``addons.WithPool``: a call waits for a slot, holds it while it finds or
stashes the version, and lets go before the zip is streamed (streaming is the server's
business and is bounded by its connections, not here).
"""

from __future__ import annotations

import trio

from ..storage import StoredZip
from ._protocol import DownloadProtocol, ProtocolWrapper

__all__ = ["with_pool"]


class _PooledProtocol(DownloadProtocol):
    def __init__(self, inner: DownloadProtocol, limiter: trio.CapacityLimiter) -> None:
        self._inner = inner
        self.limiter = limiter

    async def list(self, module: str) -> list[str]:
        async with self.limiter:
            return await self._inner.list(module)

    async def latest(self, module: str) -> bytes:
        async with self.limiter:
            return await self._inner.latest(module)

    async def info(self, module: str, version: str) -> bytes:
        async with self.limiter:
            return await self._inner.info(module, version)

    async def go_mod(self, module: str, version: str) -> bytes:
        async with self.limiter:
            return await self._inner.go_mod(module, version)

    async def zip(self, module: str, version: str) -> StoredZip:
        async with self.limiter:
            return await self._inner.zip(module, version)


def with_pool(workers: int | trio.CapacityLimiter) -> ProtocolWrapper:
    """Bound concurrent protocol calls by a CapacityLimiter (FIFO-fair)."""
    limiter = (
        workers if isinstance(workers, trio.CapacityLimiter) else trio.CapacityLimiter(workers)
    )

    def wrap(inner: DownloadProtocol) -> DownloadProtocol:
        return _PooledProtocol(inner, limiter)

    return wrap
