"""Listing and resolving, each asked once and remembered a short while.

``list``, ``@latest`` and a query's ``.info`` (a branch, ``latest``, ``v1.2``) each ask
upstream (a ``go list``), and their answers carry ``max-age=60``: clients may use them
that long anyway.  :class:`CachedLister` keeps each answer for ``ttl`` seconds, "does
not exist" for ``negative_ttl`` (shorter: a module or tag pushed just now shows up
soon), and never a fault.  Concurrent identical questions run one go, in the
pipeline's nursery, as the stash single-flight does: a caller that goes away cancels
nothing the others wait for.

Where nothing may be asked upstream (NetworkMode ``offline``; DownloadMode ``none``,
a read-only mirror), :func:`resolve_stored` answers a query from the stored versions
alone, with go's rules for choosing among versions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import trio

from .._exceptions import NotFoundError
from .._module import canonical_version, is_pseudo_version, pseudo_version_rev
from .._semver import compare, is_valid, prerelease
from ..stash import Flights
from ..upstream import Lister, UpstreamVersions, VersionInfo

__all__ = [
    "CachedLister",
    "ResolutionStatistics",
    "latest_stored",
    "negative_ttl_for",
    "resolve_stored",
]

#: Answers remembered at most, and their (estimated) bytes in all, the oldest forgotten
#: first: the memory stays bounded whatever clients ask for, lists of thousands of
#: versions included.  A list bigger than a sixteenth of the bytes is not remembered.
MAX_ENTRIES = 10_000
MAX_BYTES = 64 << 20

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
    #: Answers remembered now, and their estimated size in bytes.
    entries: int
    bytes: int = 0


_Key = tuple[str, str, str]  # (what, module, query)


@dataclass(frozen=True)
class _Remembered:
    expires: float
    answer: UpstreamVersions | VersionInfo | NotFoundError
    size: int


def _size_of(answer: UpstreamVersions | VersionInfo | NotFoundError) -> int:
    """What ``answer`` takes in memory, roughly (a str and its list slot per version)."""
    if isinstance(answer, UpstreamVersions):
        return 256 + sum(len(v) + 64 for v in answer.versions)
    return 256


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
        self._bytes = 0
        self._hits = 0
        self._misses = 0

    def statistics(self) -> ResolutionStatistics:
        return ResolutionStatistics(
            hits=self._hits,
            misses=self._misses,
            joined=self._flights.joined,
            entries=len(self._remembered),
            bytes=self._bytes,
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
        self._forget(key)  # re-inserted: the newest
        size = _size_of(answer)
        if ttl <= 0 or size > MAX_BYTES // 16:
            return
        while self._remembered and (
            len(self._remembered) >= MAX_ENTRIES or self._bytes + size > MAX_BYTES
        ):
            self._forget(next(iter(self._remembered)))
        # A stale answer costs one lookup to find; expired ones go as the oldest do.
        self._remembered[key] = _Remembered(trio.current_time() + ttl, answer, size)
        self._bytes += size

    def _forget(self, key: _Key) -> None:
        gone = self._remembered.pop(key, None)
        if gone is not None:
            self._bytes -= gone.size


# --- resolving from storage alone -------------------------------------------------------

_HEX = frozenset("0123456789abcdef")
#: The shortest commit hash go takes for a revision (git's default abbreviation).
_MIN_HASH = 7


def _choose(candidates: Iterable[str]) -> str | None:
    """go's choice among matching versions: the highest release if there is one, else
    the highest pre-release."""
    found = list(candidates)
    best: str | None = None
    for v in [v for v in found if not prerelease(v)] or found:
        if best is None or compare(v, best) > 0:
            best = v
    return best


def latest_stored(stored: Sequence[str]) -> str | None:
    """go's ``latest`` among ``stored``: the highest release, else the highest
    pre-release, else (only pseudo-versions stored) the newest pseudo-version."""
    tagged = [v for v in stored if not is_pseudo_version(v)]
    return _choose(tagged) or _choose(stored)


def resolve_stored(module: str, query: str, stored: Sequence[str], why: str) -> str:
    """The canonical version ``query`` (not canonical itself) names among the ``stored``
    versions of ``module``, as go would choose among them; NotFoundError (saying
    ``why`` nothing upstream was asked) when none matches.

    ``latest`` (and ``upgrade``/``patch``, which are ``latest`` without a main module
    requiring the module), a semver prefix (``v1``, ``v1.2``: the highest match), a
    non-canonical spelling of a version, and a commit hash (of a stored pseudo-version)
    are answered.  A branch or tag name cannot be: only upstream knows its commit.
    (Comparisons, ``<v1.2.0``, never reach a proxy: go resolves them from ``list``.)
    A ``+incompatible`` version counts as any other: go passes over them for ``latest``
    when the latest compatible version has a go.mod, which storage cannot tell from
    the go.mod go makes up for a module without one.
    """
    tagged = [v for v in stored if not is_pseudo_version(v)]
    chosen: str | None
    if query in ("latest", "upgrade", "patch"):
        chosen = latest_stored(stored)
    elif is_valid(query) and query.count(".") < 2 and not prerelease(query):
        # A prefix: v1 means v1.*, v1.2 means v1.2.*.
        chosen = _choose(v for v in tagged if v.startswith(query + "."))
    elif is_valid(query):
        exact = canonical_version(query)
        chosen = exact if exact in stored else None
    elif len(query) >= _MIN_HASH and set(query) <= _HEX:
        # A pseudo-version names its commit by the first 12 digits of its hash.
        chosen = _choose(
            v
            for v in stored
            if is_pseudo_version(v)
            and (query.startswith(rev := pseudo_version_rev(v)) or rev.startswith(query))
        )
    else:
        raise NotFoundError(
            f"{module}@{query}: a branch or tag is resolved upstream, which {why} forbids"
        )
    if chosen is None:
        raise NotFoundError(f"{module}@{query}: no stored version matches ({why})")
    return chosen
