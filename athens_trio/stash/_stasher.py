"""Stasher: fetch a part of a version, then save it.  Wrappers add the pool and
single-flight.

A stash is keyed by the canonical version and the part asked for: ``mod`` (its
``.info`` and go.mod, what a client walking the module graph needs; no zip is built)
or ``zip`` (the whole version: its go.mod part too, if absent).
:class:`FetchAndSave` is where each real fetch happens (inside the GoGetWorkers pool,
behind the single-flight: never once per request that joined it), so it is what counts
them (:meth:`FetchAndSave.statistics`) and logs one line per fetch on
``athens_trio.fetch``: module, version, part, seconds, outcome.
"""

from __future__ import annotations

import abc
import bisect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from .._exceptions import NotFoundError, UpstreamError, outcome_of
from .._ziphash import mod_h1
from ..storage import Backend
from ..upstream import Fetcher

__all__ = [
    "FETCH_SECONDS_BOUNDS",
    "FetchAndSave",
    "FetchStatistics",
    "OutcomeStatistics",
    "Part",
    "Stasher",
    "Wrapper",
    "is_stored",
    "new",
    "wrap",
]

fetch_log = logging.getLogger("athens_trio.fetch")

#: Upper bounds (seconds) of the fetch-duration histogram's buckets; the last bucket
#: (+Inf) is every fetch.  A fixed set: the statistics take the same room after a
#: million fetches as after one.
FETCH_SECONDS_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


#: What a stash makes present: a version's ``.info`` and go.mod, or the whole of it.
Part = Literal["mod", "zip"]


class Stasher(abc.ABC):
    @abc.abstractmethod
    async def stash(self, module: str, version: str, part: Part) -> None:
        """Make ``part`` of ``module`` at the canonical ``version`` present in storage
        (``zip``: the whole version).  NotFoundError if it does not exist upstream."""


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

    async def stash(self, module: str, version: str, part: Part) -> None:
        if await is_stored(self._storage, module, version, part):
            return  # stored by another stash meanwhile: no fetch
        started = time.perf_counter()
        outcome = "cancelled"
        problem = ""
        self._in_progress += 1
        try:
            if part == "mod":
                await self._fetch_and_save_mod(module, version)
            else:
                await self._fetch_and_save_whole(module, version)
            outcome = "ok"
        except Exception as exc:
            outcome = outcome_of(exc)
            problem = str(exc)
            raise
        finally:
            seconds = time.perf_counter() - started
            self._in_progress -= 1
            self._outcomes.setdefault(outcome, _Outcome()).add(seconds)
            _log_fetch(module, version, part, seconds, outcome, problem)

    async def _fetch_and_save_mod(self, module: str, version: str) -> None:
        fetched = await self._fetcher.fetch_mod(module, version)
        _check_fetched(module, version, fetched.version, fetched.mod, fetched.mod_sum)
        await self._storage.save_mod(
            module, version, info=fetched.info, mod=fetched.mod, mod_sum=fetched.mod_sum or None
        )

    async def _fetch_and_save_whole(self, module: str, version: str) -> None:
        async with self._fetcher.fetch(module, version) as fetched:
            _check_fetched(module, version, fetched.version, fetched.mod, fetched.mod_sum)
            # Its go.mod part if absent, then its zip; what is stored stays.
            saved = await self._storage.save(
                module,
                version,
                info=fetched.info,
                mod=fetched.mod,
                zip_file=fetched.zip_file,
                zip_sum=fetched.zip_sum,
                mod_sum=fetched.mod_sum or None,
            )
        if not saved and not await self._storage.exists(module, version):
            # A stored go.mod other than this fetch's: storage keeps its own and never
            # pairs it with this zip.  Upstream disagrees with itself: a fault.
            raise UpstreamError(
                f"fetching {module}@{version}: upstream's go.mod differs from the stored"
                " one; its zip is not stored"
            )


async def is_stored(storage: Backend, module: str, version: str, part: Part) -> bool:
    """Whether ``part`` of ``module@version`` is in ``storage`` already (a stash of it
    would fetch nothing)."""
    if part == "zip":
        return await storage.exists(module, version)
    try:
        await storage.go_mod(module, version)  # a .info whose .mod was lost: no
    except NotFoundError:
        return False
    return True


def _check_fetched(module: str, version: str, fetched: str, mod: bytes, mod_sum: str) -> None:
    """What upstream handed over is the version asked for, and its go.mod the one go
    hashed (and checked against the checksum database, where one is used)."""
    if fetched != version:
        raise UpstreamError(f"fetching {module}@{version}: upstream answered {fetched}")
    if mod_sum and mod_h1(mod) != mod_sum:
        raise UpstreamError(f"fetching {module}@{version}: its go.mod does not match {mod_sum}")


def _log_fetch(
    module: str, version: str, part: Part, seconds: float, outcome: str, problem: str
) -> None:
    fields = {
        "module": module,
        "version": version,
        "part": part,
        "duration_ms": round(seconds * 1000, 1),
        "outcome": outcome,
    }
    if outcome == "ok":
        fetch_log.info(
            "fetched %s of %s@%s in %.2fs",
            part,
            module,
            version,
            seconds,
            extra={"fields": fields},
        )
        return
    level = logging.INFO if outcome in ("not_found", "cancelled") else logging.WARNING
    fetch_log.log(
        level,
        "fetch of %s of %s@%s: %s after %.2fs%s",
        part,
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
