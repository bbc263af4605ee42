"""Pool: at most N stashes run at once (``GoGetWorkers``); the rest queue in order."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from ._stasher import Part, Stasher

__all__ = ["Pool", "PoolStatistics", "Slots", "with_pool"]


@dataclass(frozen=True)
class PoolStatistics:
    """A pool's occupancy, as its CapacityLimiter sees it."""

    #: Slots taken now.
    in_use: int
    #: Slots in all (GoGetWorkers, ProtocolWorkers; ``inf`` for an unbounded limiter).
    size: int | float
    #: Tasks waiting for a slot.
    waiting: int

    @classmethod
    def of(cls, limiter: trio.CapacityLimiter) -> PoolStatistics:
        return cls(
            in_use=limiter.borrowed_tokens,
            size=limiter.total_tokens,
            waiting=limiter.statistics().tasks_waiting,
        )


class Slots:
    """A pool's slots: a CapacityLimiter of ``workers`` slots (or the one given), and
    their :meth:`statistics`.  The stash and the protocol pools are made of these."""

    def __init__(self, workers: int | trio.CapacityLimiter) -> None:
        self.limiter = (
            workers if isinstance(workers, trio.CapacityLimiter) else trio.CapacityLimiter(workers)
        )

    def statistics(self) -> PoolStatistics:
        """Slots in use, in all, and the tasks waiting for one (whoever shares them)."""
        return PoolStatistics.of(self.limiter)


class _PooledStasher(Stasher):
    def __init__(self, inner: Stasher, limiter: trio.CapacityLimiter) -> None:
        self._inner = inner
        self._limiter = limiter

    async def stash(self, module: str, version: str, part: Part) -> None:
        async with self._limiter:
            await self._inner.stash(module, version, part)


class Pool(Slots):
    """A stash wrapper (call it on a stasher) that bounds concurrent stashes by
    :attr:`limiter` (trio's limiter is FIFO-fair); listing shares it."""

    def __call__(self, inner: Stasher) -> Stasher:
        return _PooledStasher(inner, self.limiter)


def with_pool(workers: int | trio.CapacityLimiter) -> Pool:
    """Bound concurrent stashes by a CapacityLimiter of ``workers`` slots (or this one)."""
    return Pool(workers)
