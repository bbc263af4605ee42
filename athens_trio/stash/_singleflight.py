"""SingleFlight: one stash per module@version and part however many ask at once.

The first caller for a key starts the work as a task in the *pipeline's* nursery, not
in its own, and every caller (the first included) waits on the entry's event.  So a
caller that goes away (client disconnected, request cancelled) only stops waiting;
the fetch goes on for the others and its result still lands in storage.  The outcome,
value or error, reaches every waiter; the entry is dropped as soon as the work ends,
so the next request after a failure tries afresh.

Work nobody waits for stops: each entry counts its waiters, and when the last one
has gone the work gets ``abandon_after`` seconds (``AbandonedFetchGrace``) for a new
waiter to come; then its cancel scope is cancelled (for a fetch: go's process group
killed, its temporary GOPATH removed).  A caller that never leaves (a background
fetch of DownloadMode async) keeps it going.  A client's reset HTTP/2 stream or
closed connection is such a departure, so a flood of requests that hang up at once
leaves no fetches behind it for longer than the grace.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from .._exceptions import FetchStoppedError, FetchTimeoutError, NotFoundError, UpstreamError
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
    #: Stashes so far cancelled because no caller waited for them any more.
    abandoned: int = 0


@dataclass
class _InFlight(Generic[V]):
    done: trio.Event = field(default_factory=trio.Event)
    finished: bool = False
    value: V | None = None
    error: Exception | None = None
    #: Callers waiting for the outcome now.
    waiters: int = 0
    #: The work's scope: its deadline is the end of the grace once nobody waits.
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def joinable(self) -> bool:
        """Whether a new caller may still wait for it (it was not given up on)."""
        return not self.scope.cancel_called


class Flights(Generic[K, V]):
    """One run of the work per key however many ask at once, in ``nursery``; every
    caller gets its outcome.  The stash single-flight is made of these, and so is the
    listing one (:mod:`athens_trio.download`).

    ``abandon_after``: seconds the work goes on once no caller waits for it, then it
    is cancelled; None: it always runs to its end."""

    def __init__(self, nursery: trio.Nursery, abandon_after: float | None = None) -> None:
        self._nursery = nursery
        self._abandon_after = abandon_after
        self.in_flight: dict[K, _InFlight[V]] = {}
        self.joined = 0
        self.abandoned = 0

    def running(self, key: K) -> bool:
        """Whether work for ``key`` runs and a new caller may join it."""
        entry = self.in_flight.get(key)
        return entry is not None and entry.joinable

    async def run(self, key: K, work: Callable[[], Awaitable[V]], name: str) -> V:
        """``work()``'s outcome: started now, or joined if it runs for ``key`` already."""
        entry = self.in_flight.get(key)
        if entry is None or not entry.joinable:
            # (A given-up entry is on its way out: its outcome is no answer for anyone.)
            entry = self.in_flight[key] = _InFlight()
            self._nursery.start_soon(self._run, key, entry, work, name=name)
        else:
            self.joined += 1
        entry.waiters += 1
        entry.scope.deadline = math.inf  # waited for: no grace running
        try:
            await entry.done.wait()
        finally:
            entry.waiters -= 1
            if not entry.waiters and self._abandon_after is not None and not entry.done.is_set():
                entry.scope.deadline = trio.current_time() + self._abandon_after
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
            with entry.scope:
                entry.value = await work()
                entry.finished = True
        except Exception as exc:
            entry.error = exc
        finally:
            if entry.scope.cancel_called and not entry.finished:
                self.abandoned += 1
                if entry.error is None:
                    entry.error = FetchStoppedError("the fetch was given up: nobody waited for it")
            # Cancelled (the pipeline is closing) or worse: waiters get a plain error
            # while the BaseException itself goes on to the nursery.
            if not entry.finished and entry.error is None:
                entry.error = FetchStoppedError("the proxy is shutting down")
            if self.in_flight.get(key) is entry:
                del self.in_flight[key]
            entry.done.set()


class _SingleFlightStasher(Stasher):
    def __init__(self, inner: Stasher, nursery: trio.Nursery, abandon_after: float | None) -> None:
        self._inner = inner
        self.flights: Flights[tuple[str, str, Part], None] = Flights(nursery, abandon_after)

    async def stash(self, module: str, version: str, part: Part) -> None:
        if part == "mod" and self.flights.running((module, version, "zip")):
            # The whole version's fetch stores the go.mod part too: joined, not fetched
            # twice.  If it fails for its zip (one go cannot build, one too big), the
            # go.mod part alone may still be had: fetched then, unless the version does
            # not exist or the fetch ran out of time (asking again would change neither).
            try:
                await self._run(module, version, "zip")
                return
            except (NotFoundError, FetchTimeoutError, FetchStoppedError):
                raise
            except UpstreamError:
                pass
        await self._run(module, version, part)

    async def _run(self, module: str, version: str, part: Part) -> None:
        await self.flights.run(
            (module, version, part),
            functools.partial(self._inner.stash, module, version, part),
            name=f"stash {part} of {module}@{version}",
        )


class SingleFlight:
    """A stash wrapper (call it on one stasher) that shares each stash among its
    concurrent callers; the work runs in ``nursery``, and is cancelled
    ``abandon_after`` seconds after its last caller left (None: never)."""

    def __init__(self, nursery: trio.Nursery, abandon_after: float | None = None) -> None:
        self._nursery = nursery
        self._abandon_after = abandon_after
        self._wrapped: list[_SingleFlightStasher] = []

    def __call__(self, inner: Stasher) -> Stasher:
        stasher = _SingleFlightStasher(inner, self._nursery, self._abandon_after)
        self._wrapped.append(stasher)
        return stasher

    def statistics(self) -> SingleFlightStatistics:
        """Stashes in flight now, the callers so far that joined one, and the stashes
        given up because nobody waited for them."""
        return SingleFlightStatistics(
            in_flight=sum(len(wrapped.flights.in_flight) for wrapped in self._wrapped),
            joined=sum(wrapped.flights.joined for wrapped in self._wrapped),
            abandoned=sum(wrapped.flights.abandoned for wrapped in self._wrapped),
        )


def with_singleflight(nursery: trio.Nursery, *, abandon_after: float | None = None) -> SingleFlight:
    """Share one stash among concurrent callers; the work runs in ``nursery``, and is
    cancelled ``abandon_after`` seconds after the last caller left (None: never)."""
    return SingleFlight(nursery, abandon_after)
