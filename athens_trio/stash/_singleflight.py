"""SingleFlight: one stash per module@version however many ask at once.

The first caller for a key starts the work as a task in the *pipeline's* nursery, not
in its own, and every caller (the first included) waits on the entry's event.  So a
caller that goes away (client disconnected, request cancelled) only stops waiting;
the fetch goes on for the others and its result still lands in storage.  The outcome,
value or error, reaches every waiter; the entry is dropped as soon as the work ends,
so the next request after a failure tries afresh.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import trio

from .._exceptions import UpstreamError
from ._stasher import Stasher

__all__ = ["SingleFlight", "SingleFlightStatistics", "with_singleflight"]


@dataclass(frozen=True)
class SingleFlightStatistics:
    """What :meth:`SingleFlight.statistics` returns."""

    #: Distinct module@version stashes running now (waited on by any number).
    in_flight: int
    #: Callers so far that joined a stash another caller had started, sparing a fetch.
    joined: int


@dataclass
class _InFlight:
    done: trio.Event = field(default_factory=trio.Event)
    version: str | None = None
    error: Exception | None = None


class _SingleFlightStasher(Stasher):
    def __init__(self, inner: Stasher, nursery: trio.Nursery) -> None:
        self._inner = inner
        self._nursery = nursery
        self.in_flight: dict[tuple[str, str], _InFlight] = {}
        self.joined = 0

    async def stash(self, module: str, version: str) -> str:
        key = (module, version)
        entry = self.in_flight.get(key)
        if entry is None:
            entry = self.in_flight[key] = _InFlight()
            self._nursery.start_soon(self._run, key, entry, name=f"stash {module}@{version}")
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
        assert entry.version is not None
        return entry.version

    async def _run(self, key: tuple[str, str], entry: _InFlight) -> None:
        try:
            entry.version = await self._inner.stash(*key)
        except Exception as exc:
            entry.error = exc
        finally:
            # Cancelled (the pipeline is closing) or worse: waiters get a plain error
            # while the BaseException itself goes on to the nursery.
            if entry.version is None and entry.error is None:
                entry.error = UpstreamError("the proxy is shutting down")
            del self.in_flight[key]
            entry.done.set()


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
            in_flight=sum(len(wrapped.in_flight) for wrapped in self._wrapped),
            joined=sum(wrapped.joined for wrapped in self._wrapped),
        )


def with_singleflight(nursery: trio.Nursery) -> SingleFlight:
    """Share one stash among concurrent callers; the work runs in ``nursery``."""
    return SingleFlight(nursery)
