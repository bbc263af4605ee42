"""Listing and resolving, each asked once and remembered a short while.

``list``, ``@latest`` and a query's ``.info`` (a branch, ``latest``, ``v1.2``) each ask
upstream (a ``go list``), and their answers carry ``max-age=60``: clients may use them
that long anyway.  :class:`CachedLister` keeps each answer for ``ttl`` seconds, "does
not exist" for ``negative_ttl`` (shorter: a module or tag pushed just now shows up
soon), and never a fault.  Concurrent identical questions run one go, in the
pipeline's nursery, as the stash single-flight does: a caller that goes away cancels
nothing the others wait for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from .._exceptions import NotFoundError
from ..stash import Flights
from ..upstream import Lister, UpstreamVersions, VersionInfo

__all__ = ["CachedLister", "ResolutionStatistics", "negative_ttl_for"]

#: Answers remembered at most, the oldest forgotten first: the memory stays bounded
#: whatever clients ask for.
MAX_ENTRIES = 10_000

#: "Does not exist" is remembered at most this long, however long answers are.
MAX_NEGATIVE_TTL = 10.0


def negative_ttl_for(ttl: float) -> float:
    """How long "does not exist" is remembered when answers are kept ``ttl`` seconds."""
    return min(ttl, MAX_NEGATIVE_TTL)


@dataclass(frozen=True)
class ResolutionStatistics:
    """What :meth:`CachedLister.statistics` returns."""

    #: Questions answered from memory.
    hits: int
    #: Questions that asked upstream (started a go run or joined one).
    misses: int
    #: Callers that joined a question another caller had asked, sparing a go run.
    joined: int
    #: Answers remembered now.
    entries: int


_Key = tuple[str, str, str]  # (what, module, query)


@dataclass(frozen=True)
class _Remembered:
    expires: float
    answer: UpstreamVersions | VersionInfo | NotFoundError


class CachedLister(Lister):
    """``inner`` whose answers are shared by concurrent callers (the work runs in
    ``nursery``) and kept ``ttl`` seconds (``NotFoundError`` ``negative_ttl``; 0: not
    kept)."""

    def __init__(
        self, inner: Lister, nursery: trio.Nursery, *, ttl: float, negative_ttl: float
    ) -> None:
        self._inner = inner
        self._flights: Flights[_Key, UpstreamVersions | VersionInfo] = Flights(nursery)
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._remembered: dict[_Key, _Remembered] = {}
        self._hits = 0
        self._misses = 0

    def statistics(self) -> ResolutionStatistics:
        return ResolutionStatistics(
            hits=self._hits,
            misses=self._misses,
            joined=self._flights.joined,
            entries=len(self._remembered),
        )

    async def list(self, module: str) -> UpstreamVersions:
        answer = await self._ask(("list", module, ""), lambda: self._inner.list(module))
        assert isinstance(answer, UpstreamVersions)
        return answer

    async def resolve(self, module: str, query: str) -> VersionInfo:
        answer = await self._ask(
            ("resolve", module, query), lambda: self._inner.resolve(module, query)
        )
        assert isinstance(answer, VersionInfo)
        return answer

    async def _ask(
        self, key: _Key, ask: Callable[[], Awaitable[UpstreamVersions | VersionInfo]]
    ) -> UpstreamVersions | VersionInfo:
        remembered = self._remembered.get(key)
        if remembered is not None and remembered.expires > trio.current_time():
            self._hits += 1
            await trio.lowlevel.checkpoint()
            if isinstance(remembered.answer, NotFoundError):
                raise NotFoundError(str(remembered.answer))
            return remembered.answer
        self._misses += 1
        what, module, query = key
        return await self._flights.run(
            key, lambda: self._ask_and_remember(key, ask), name=f"{what} {module}@{query}"
        )

    async def _ask_and_remember(
        self, key: _Key, ask: Callable[[], Awaitable[UpstreamVersions | VersionInfo]]
    ) -> UpstreamVersions | VersionInfo:
        try:
            answer = await ask()
        except NotFoundError as exc:
            self._remember(key, exc, self._negative_ttl)
            raise
        self._remember(key, answer, self._ttl)
        return answer

    def _remember(
        self, key: _Key, answer: UpstreamVersions | VersionInfo | NotFoundError, ttl: float
    ) -> None:
        self._remembered.pop(key, None)  # re-inserted: the newest
        if ttl <= 0:
            return
        while len(self._remembered) >= MAX_ENTRIES:
            del self._remembered[next(iter(self._remembered))]
        # A stale answer costs one lookup to find; expired ones go as the oldest do.
        self._remembered[key] = _Remembered(trio.current_time() + ttl, answer)
