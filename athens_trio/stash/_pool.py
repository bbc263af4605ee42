"""Pool: at most N stashes run at once (``GoGetWorkers``); a bounded number queue in
order (``GoGetQueue``), and one more is refused with :class:`OverloadedError` (503)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

import trio

from .._exceptions import OverloadedError
from ._stasher import Part, Stasher

__all__ = ["OVERLOAD_RETRY_AFTER", "Pool", "PoolStatistics", "Slots", "with_pool"]

#: Seconds a refused caller is told to wait (``Retry-After``): about as long as a fetch
#: of a small module takes, so the queue has moved on by then.
OVERLOAD_RETRY_AFTER = 5


@dataclass(frozen=True)
class PoolStatistics:
    """A pool's occupancy, as its CapacityLimiter sees it, and its refusals."""

    #: Slots taken now.
    in_use: int
    #: Slots in all (GoGetWorkers, ProtocolWorkers; ``inf`` for an unbounded limiter).
    size: int | float
    #: Tasks waiting for a slot.
    waiting: int
    #: How many may wait (GoGetQueue, ProtocolQueue; ``inf``: no bound).
    queue: int | float = math.inf
    #: Callers refused so far because the slots were taken and the queue full.
    refused: int = 0


class Slots:
    """A pool's slots: a CapacityLimiter of ``workers`` slots (or the one given), at
    most ``queue`` callers waiting for one (None: no bound), and their
    :meth:`statistics`.  The stash and the protocol pools are made of these.

    ``what`` names what the slots are for in the 503's message ("fetches")."""

    def __init__(
        self,
        workers: int | trio.CapacityLimiter,
        *,
        queue: int | None = None,
        what: str = "requests",
    ) -> None:
        self.limiter = (
            workers if isinstance(workers, trio.CapacityLimiter) else trio.CapacityLimiter(workers)
        )
        self._queue = math.inf if queue is None else queue
        self._what = what
        self._refused = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot, waiting in order for one; :class:`OverloadedError` at once when
        none is free and the queue is full (a bounded wait, never an unbounded one)."""
        limiter = self.limiter
        if limiter.available_tokens < 1 and limiter.statistics().tasks_waiting >= self._queue:
            self._refused += 1
            raise OverloadedError(self._what, OVERLOAD_RETRY_AFTER)
        async with limiter:
            yield

    def statistics(self) -> PoolStatistics:
        """Slots in use, in all, the tasks waiting for one (whoever shares them), the
        queue's bound and the callers refused so far."""
        return PoolStatistics(
            in_use=self.limiter.borrowed_tokens,
            size=self.limiter.total_tokens,
            waiting=self.limiter.statistics().tasks_waiting,
            queue=self._queue,
            refused=self._refused,
        )


class _PooledStasher(Stasher):
    def __init__(self, inner: Stasher, slots: Slots) -> None:
        self._inner = inner
        self._slots = slots

    async def stash(self, module: str, version: str, part: Part) -> None:
        async with self._slots.slot():
            await self._inner.stash(module, version, part)


class Pool(Slots):
    """A stash wrapper (call it on a stasher) that bounds concurrent stashes by
    :attr:`limiter` (trio's limiter is FIFO-fair) and those waiting by ``queue``;
    listing shares the limiter."""

    def __call__(self, inner: Stasher) -> Stasher:
        return _PooledStasher(inner, self)


def with_pool(workers: int | trio.CapacityLimiter, *, queue: int | None = None) -> Pool:
    """Bound concurrent stashes by a CapacityLimiter of ``workers`` slots (or this one),
    and the stashes waiting for a slot by ``queue`` (None: unbounded)."""
    return Pool(workers, queue=queue, what="fetches")
