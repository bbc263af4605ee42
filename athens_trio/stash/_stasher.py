"""Stasher: fetch a version, then save it.  Wrappers add the pool and single-flight.

:class:`FetchAndSave` is where each real fetch happens (inside the GoGetWorkers pool,
behind the single-flight: never once per request that joined it), so it is what counts
them (:meth:`FetchAndSave.statistics`) and logs one line per fetch on
``athens_trio.fetch``: module, version, the version it resolved to, seconds, outcome.
"""

from __future__ import annotations

import abc
import bisect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .._exceptions import outcome_of
from ..storage import Backend
from ..upstream import Fetcher

__all__ = [
    "FETCH_SECONDS_BOUNDS",
    "FetchAndSave",
    "FetchStatistics",
    "OutcomeStatistics",
    "Stasher",
    "Wrapper",
    "new",
    "wrap",
]

fetch_log = logging.getLogger("athens_trio.fetch")

#: Upper bounds (seconds) of the fetch-duration histogram's buckets; the last bucket
#: (+Inf) is every fetch.  A fixed set: the statistics take the same room after a
#: million fetches as after one.
FETCH_SECONDS_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Stasher(abc.ABC):
    @abc.abstractmethod
    async def stash(self, module: str, version: str) -> str:
        """Make ``module`` at ``version`` (a version or a query) present in storage and
        return the canonical version it resolved to."""


Wrapper = Callable[[Stasher], Stasher]


@dataclass(frozen=True)
class OutcomeStatistics:
    """The fetches that ended one way: how many, their total seconds, and a histogram."""

    count: int
    seconds: float
    #: ``buckets[i]``: how many took at most ``FETCH_SECONDS_BOUNDS[i]`` (cumulative).
    buckets: tuple[int, ...]


@dataclass(frozen=True)
class FetchStatistics:
    """What :meth:`FetchAndSave.statistics` returns."""

    #: Fetches running now.
    in_progress: int
    #: Finished fetches by outcome: ``ok``, ``cancelled``, or the failure's
    #: :attr:`~athens_trio.AthensTrioError.outcome` (``not_found``, ``upstream_error``,
    #: ``timeout``, ``error``); an outcome appears once a fetch ended that way.
    outcomes: Mapping[str, OutcomeStatistics]


class _Outcome:
    """A running tally of one outcome (mutable; :class:`OutcomeStatistics` is its copy)."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.per_bucket = [0] * len(FETCH_SECONDS_BOUNDS)  # not cumulative

    def add(self, seconds: float) -> None:
        self.count += 1
        self.seconds += seconds
        index = bisect.bisect_left(FETCH_SECONDS_BOUNDS, seconds)
        if index < len(self.per_bucket):
            self.per_bucket[index] += 1

    def snapshot(self) -> OutcomeStatistics:
        cumulative: list[int] = []
        total = 0
        for count in self.per_bucket:
            total += count
            cumulative.append(total)
        return OutcomeStatistics(self.count, self.seconds, tuple(cumulative))


class FetchAndSave(Stasher):
    """The plain stasher: the Fetcher and the Backend never meet except here."""

    def __init__(self, fetcher: Fetcher, storage: Backend) -> None:
        self._fetcher = fetcher
        self._storage = storage
        self._in_progress = 0
        self._outcomes: dict[str, _Outcome] = {}

    def statistics(self) -> FetchStatistics:
        """The fetches so far, by outcome, and those running now."""
        return FetchStatistics(
            in_progress=self._in_progress,
            outcomes={name: tally.snapshot() for name, tally in self._outcomes.items()},
        )

    async def stash(self, module: str, version: str) -> str:
        started = time.perf_counter()
        outcome = "cancelled"
        resolved: str | None = None
        problem = ""
        self._in_progress += 1
        try:
            resolved = await self._fetch_and_save(module, version)
            outcome = "ok"
            return resolved
        except Exception as exc:
            outcome = outcome_of(exc)
            problem = str(exc)
            raise
        finally:
            seconds = time.perf_counter() - started
            self._in_progress -= 1
            self._outcomes.setdefault(outcome, _Outcome()).add(seconds)
            _log_fetch(module, version, resolved, seconds, outcome, problem)

    async def _fetch_and_save(self, module: str, version: str) -> str:
        async with self._fetcher.fetch(module, version) as fetched:
            # A query may resolve to a version someone stored already: keep theirs.
            if not await self._storage.exists(module, fetched.version):
                await self._storage.save(
                    module,
                    fetched.version,
                    info=fetched.info,
                    mod=fetched.mod,
                    zip_file=fetched.zip_file,
                    zip_sum=fetched.zip_sum,
                    mod_sum=fetched.mod_sum or None,
                )
            return fetched.version


def _log_fetch(
    module: str, version: str, resolved: str | None, seconds: float, outcome: str, problem: str
) -> None:
    fields = {
        "module": module,
        "version": version,
        "resolved": resolved,
        "duration_ms": round(seconds * 1000, 1),
        "outcome": outcome,
    }
    if outcome == "ok":
        fetch_log.info(
            "fetched %s@%s (%s) in %.2fs",
            module,
            version,
            resolved,
            seconds,
            extra={"fields": fields},
        )
        return
    level = logging.INFO if outcome in ("not_found", "cancelled") else logging.WARNING
    fetch_log.log(
        level,
        "fetch of %s@%s: %s after %.2fs%s",
        module,
        version,
        outcome,
        seconds,
        f": {problem}" if problem else "",
        extra={"fields": fields},
    )


def wrap(stasher: Stasher, *wrappers: Wrapper) -> Stasher:
    """``stasher`` wrapped by each wrapper in turn: the last one given is the outermost,
    as in Athens' ``stash.New``."""
    for wrapper in wrappers:
        stasher = wrapper(stasher)
    return stasher


def new(fetcher: Fetcher, storage: Backend, *wrappers: Wrapper) -> Stasher:
    """A stasher of ``fetcher`` into ``storage``, wrapped by each wrapper in turn (the
    last one outermost)."""
    return wrap(FetchAndSave(fetcher, storage), *wrappers)
