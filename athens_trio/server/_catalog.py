"""What storage holds, for tools: Athens' ``/catalog`` and an index.golang.org ``/index``.

``GET /catalog?token=&pagesize=`` pages through every stored (module, version) as Athens
does: ``{"modules": [{"module": ..., "version": ...}], "next": "<token>"}``, ``next``
left out on the last page.  The order is stable (module path, then semver), so paging
while versions are being added never repeats or skips a version that was there when the
paging began.  The token is Athens' ``<module>|<version>`` of the last entry given;
``pagesize`` defaults to Athens' 1000 and is capped at :data:`MAX_PAGE_SIZE`.

``GET /index?since=&limit=`` lists stored versions as index.golang.org does: one JSON
object per line, ``{"Path", "Version", "Timestamp"}``, oldest first (newest last), from
``since`` (RFC 3339, inclusive) on, at most ``limit`` (default and cap 2000).  Storage
keeps no "stored at" time, so a version's ``Timestamp`` is the ``Time`` in its ``.info``
(when the version was committed or tagged): a version fetched today that was tagged in
2019 sorts among 2019's.  Those times are read once per version and kept in memory (a
stored version never changes); a version whose ``.info`` has no readable time is left
out of the index.

Both read the whole catalog on every request (there is no index of storage to seek
in): fine for thousands of versions, slow for millions.  So they walk in their own lane
(:class:`CatalogLane`), apart from the proxy's storage reads: at most
:data:`CATALOG_WALKS` walks at once, in worker threads of their own (walking storage
and sorting, never on the event loop nor with trio's default thread tokens, which the
zip and document reads share); up to :data:`CATALOG_WAITING` more wait their turn, and
beyond those a walk is refused with 503 and ``Retry-After``.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import trio

from .._exceptions import AthensTrioError, InvalidRequestError, NotFoundError
from .._semver import SortKey, sort_key
from ..storage import Backend

__all__ = [
    "CATALOG_RETRY_AFTER",
    "CATALOG_WAITING",
    "CATALOG_WALKS",
    "DEFAULT_INDEX_LIMIT",
    "DEFAULT_PAGE_SIZE",
    "MAX_INDEX_LIMIT",
    "MAX_PAGE_SIZE",
    "CatalogBusyError",
    "CatalogLane",
    "CatalogLaneStatistics",
    "CatalogPage",
    "IndexEntry",
    "Timestamps",
    "catalog_page",
    "format_timestamp",
    "index_entries",
    "parse_count",
    "parse_timestamp",
    "sort_entries",
]

DEFAULT_PAGE_SIZE = 1000  # Athens' defaultPageSize
MAX_PAGE_SIZE = 10_000
DEFAULT_INDEX_LIMIT = 2000  # index.golang.org's default and maximum
MAX_INDEX_LIMIT = 2000

#: Catalog or index walks at once, and worker threads they may use between them.
CATALOG_WALKS = 2
#: Walks that may wait for a turn; one more is refused (503).
CATALOG_WAITING = 8
#: Seconds a refused walk is told to wait (``Retry-After``).
CATALOG_RETRY_AFTER = 5

_TOKEN_SEPARATOR = "|"  # Athens' token: "<module>|<version>"; neither may contain "|"


class CatalogBusyError(AthensTrioError):
    """As many catalog walks run and wait as the lane allows: try again later."""

    status = 503

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many catalog walks at once; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class CatalogLaneStatistics:
    walks_running: int
    walks_waiting: int
    threads_borrowed: int
    #: Walks refused with 503, ever.
    refused: int


class CatalogLane:
    """Where catalog and index walks run: their own turns and their own threads."""

    def __init__(self, walks: int = CATALOG_WALKS, waiting: int = CATALOG_WAITING) -> None:
        #: The walks' worker threads (passed to every thread they start).
        self.threads = trio.CapacityLimiter(walks)
        self._turns = trio.Semaphore(walks)
        self._walks = walks
        self._max_waiting = waiting
        self._refused = 0

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a turn to walk (:class:`CatalogBusyError` if too many wait)."""
        if self._turns.value == 0 and self._turns.statistics().tasks_waiting >= self._max_waiting:
            self._refused += 1
            raise CatalogBusyError(CATALOG_RETRY_AFTER)
        async with self._turns:
            yield

    def statistics(self) -> CatalogLaneStatistics:
        return CatalogLaneStatistics(
            walks_running=self._walks - self._turns.value,
            walks_waiting=self._turns.statistics().tasks_waiting,
            threads_borrowed=self.threads.borrowed_tokens,
            refused=self._refused,
        )


class _CatalogEntry(msgspec.Struct):
    module: str
    version: str


class CatalogPage(msgspec.Struct, omit_defaults=True):
    """Athens' catalog response; ``next`` is omitted on the last page."""

    modules: list[_CatalogEntry]
    next: str = ""


class IndexEntry(msgspec.Struct):
    """One line of ``/index``, with index.golang.org's field names."""

    Path: str
    Version: str
    Timestamp: str


def _entry_key(entry: tuple[str, str]) -> tuple[str, SortKey]:
    return entry[0], sort_key(entry[1])


def sort_entries(entries: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(module, version) pairs in catalog order: by module path, then by semver."""
    return sorted(entries, key=_entry_key)


def parse_count(value: str | None, *, name: str, default: int, maximum: int) -> int:
    """A positive integer query parameter, capped at ``maximum``."""
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) < 1:
        raise InvalidRequestError(f"{name}={value!r}: expected a positive integer")
    return min(int(value), maximum)


def _parse_token(token: str) -> tuple[str, str] | None:
    if not token:
        return None
    module, separator, version = token.partition(_TOKEN_SEPARATOR)
    if not separator or not module or not version:
        raise InvalidRequestError(f"token={token!r}: expected <module>|<version>")
    return module, version


async def catalog_page(
    storage: Backend, lane: CatalogLane, token: str, page_size: int
) -> CatalogPage:
    """The ``page_size`` stored versions after ``token`` in catalog order."""
    after = _parse_token(token)
    async with lane.turn():
        found = [entry async for entry in storage.catalog(limiter=lane.threads)]
        entries = await trio.to_thread.run_sync(sort_entries, found, limiter=lane.threads)
    start = 0
    if after is not None:
        start = bisect.bisect_right(entries, _entry_key(after), key=_entry_key)
    page = entries[start : start + page_size]
    more = len(entries) > start + page_size
    return CatalogPage(
        modules=[_CatalogEntry(module, version) for module, version in page],
        next=f"{page[-1][0]}{_TOKEN_SEPARATOR}{page[-1][1]}" if more else "",
    )


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 time (``2019-04-10T19:08:52.997264Z``) as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequestError(f"{value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise InvalidRequestError(f"{value!r} is not an RFC 3339 time (no time zone)")
    return parsed.astimezone(UTC)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as index.golang.org writes it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Info(msgspec.Struct):
    Time: str = ""


_info_decoder = msgspec.json.Decoder(_Info)


class Timestamps:
    """Each stored version's ``.info`` time, read once (a stored version never changes)."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], datetime | None] = {}

    async def of(self, storage: Backend, module: str, version: str) -> datetime | None:
        key = (module, version)
        if key in self._known:
            return self._known[key]
        try:
            info = _info_decoder.decode(await storage.info(module, version))
            moment: datetime | None = parse_timestamp(info.Time)
        except NotFoundError:
            return None  # removed since the catalog was read; do not remember it
        except (msgspec.DecodeError, InvalidRequestError):
            moment = None
        self._known[key] = moment
        return moment

    def keep_only(self, present: set[tuple[str, str]]) -> None:
        """Forget versions no longer stored (removed by ``verify --repair``, by hand)."""
        for key in [key for key in self._known if key not in present]:
            del self._known[key]


async def index_entries(
    storage: Backend,
    lane: CatalogLane,
    timestamps: Timestamps,
    since: datetime | None,
    limit: int,
) -> list[IndexEntry]:
    """Stored versions from ``since`` on, oldest first, at most ``limit``."""
    async with lane.turn():
        present = {entry async for entry in storage.catalog(limiter=lane.threads)}
        timestamps.keep_only(present)
        timed: list[tuple[datetime, str, str]] = []
        for module, version in present:
            # Read once per version, then remembered: a walk reads at most one at a time.
            moment = await timestamps.of(storage, module, version)
            if moment is not None and (since is None or moment >= since):
                timed.append((moment, module, version))
        await trio.to_thread.run_sync(timed.sort, limiter=lane.threads)
    return [
        IndexEntry(module, version, format_timestamp(moment))
        for moment, module, version in timed[:limit]
    ]
