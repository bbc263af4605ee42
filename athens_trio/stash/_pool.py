"""Pool: at most N stashes run at once (``GoGetWorkers``); the rest queue in order."""

from __future__ import annotations

import trio

from ._stasher import Stasher, Wrapper

__all__ = ["with_pool"]


class _PooledStasher(Stasher):
    def __init__(self, inner: Stasher, limiter: trio.CapacityLimiter) -> None:
        self._inner = inner
        self.limiter = limiter

    async def stash(self, module: str, version: str) -> str:
        async with self.limiter:
            return await self._inner.stash(module, version)


def with_pool(workers: int | trio.CapacityLimiter) -> Wrapper:
    """Bound concurrent stashes by a CapacityLimiter (trio's limiter is FIFO-fair)."""
    limiter = (
        workers if isinstance(workers, trio.CapacityLimiter) else trio.CapacityLimiter(workers)
    )

    def wrap(inner: Stasher) -> Stasher:
        return _PooledStasher(inner, limiter)

    return wrap
