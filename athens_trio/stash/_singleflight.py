"""SingleFlight: one stash per module@version and part however many ask at once.

The first caller for a key starts the work as a task in the *pipeline's* nursery, not
in its own, and every caller (the first included) waits on the entry's event.  So a
caller that goes away (client disconnected, request cancelled) only stops waiting;
the fetch goes on for the others and its result still lands in storage.  The outcome,
value or error, reaches every waiter; the entry is dropped as soon as the work ends,
so the next request after a failure tries afresh.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from .._exceptions import UpstreamError
from ._stasher import Part, Stasher

__all__ = ["Flights", "SingleFlight", "SingleFlightStatistics", "with_singleflight"]

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class SingleFlightStatistics:
    """What :meth:`SingleFlight.statistics` returns."""

    #: Distinct (module@version, part) stashes running now (waited on by any number).
    in_flight: int
    #: Callers so far that joined a stash another caller had started, sparing a fetch.
    joined: int


@dataclass
class _InFlight(Generic[V]):
    done: trio.Event = field(default_factory=trio.Event)
    finished: bool = False
    value: V | None = None
    error: Exception | None = None


class Flights(Generic[K, V]):
    """One run of the work per key however many ask at once, in ``nursery``; every
    caller gets its outcome.  The stash single-flight is made of these, and so is the
    listing one (:mod:`athens_trio.download`)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.in_flight: dict[K, _InFlight[V]] = {}
        self.joined = 0

    async def run(self, key: K, work: Callable[[], Awaitable[V]], name: str) -> V:
        """``work()``'s outcome: started now, or joined if it runs for ``key`` already."""
        entry = self.in_flight.get(key)
        if entry is None:
            entry = self.in_flight[key] = _InFlight()
            self._nursery.start_soon(self._run, key, entry, work, name=name)
        else:
            self.joined += 1
        await entry.done.wait()
        if entry.error is not None:
            # Each waiter raises its own copy: one exception object raised in many
            # tasks would pile every task's traceback onto it.
            original = entry.error
            try:
                error = copy.copy(original).with_traceback(None)
            except Exception:
                error = original  # an exception type that cannot be copied
            if error is original:
                raise original
            raise error from original
        return entry.value  # type: ignore[return-value]  # finished: a V

    async def _run(self, key: K, entry: _InFlight[V], work: Callable[[], Awaitable[V]]) -> None:
        try:
            entry.value = await work()
            entry.finished = True
        except Exception as exc:
            entry.error = exc
        finally:
            # Cancelled (the pipeline is closing) or worse: waiters get a plain error
            # while the BaseException itself goes on to the nursery.
            if not entry.finished and entry.error is None:
                entry.error = UpstreamError("the proxy is shutting down")
            del self.in_flight[key]
            entry.done.set()


class _SingleFlightStasher(Stasher):
    def __init__(self, inner: Stasher, nursery: trio.Nursery) -> None:
        self._inner = inner
        self.flights: Flights[tuple[str, str, Part], None] = Flights(nursery)

    async def stash(self, module: str, version: str, part: Part) -> None:
        if part == "mod" and (module, version, "zip") in self.flights.in_flight:
            part = "zip"  # which stores the go.mod part too: joined, not fetched twice
        await self.flights.run(
            (module, version, part),
            functools.partial(self._inner.stash, module, version, part),
            name=f"stash {part} of {module}@{version}",
        )


class SingleFlight:
    """A stash wrapper (call it on one stasher) that shares each stash among its
    concurrent callers; the work runs in ``nursery``."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._wrapped: list[_SingleFlightStasher] = []

    def __call__(self, inner: Stasher) -> Stasher:
        stasher = _SingleFlightStasher(inner, self._nursery)
        self._wrapped.append(stasher)
        return stasher

    def statistics(self) -> SingleFlightStatistics:
        """Stashes in flight now, and the callers so far that joined one."""
        return SingleFlightStatistics(
            in_flight=sum(len(wrapped.flights.in_flight) for wrapped in self._wrapped),
            joined=sum(wrapped.flights.joined for wrapped in self._wrapped),
        )


def with_singleflight(nursery: trio.Nursery) -> SingleFlight:
    """Share one stash among concurrent callers; the work runs in ``nursery``."""
    return SingleFlight(nursery)
