"""The checksum database proxy: ``/sumdb/<name>/...`` passed through to ``SumDBs``.

The go command asks ``<GOPROXY>/sumdb/<name>/supported`` and, on 200, fetches the
checksum database through the proxy (``lookup/<module>@<version>``, ``tile/...``,
``latest``): useful when only the proxy can reach the internet.  As in Athens, every
configured database answers ``supported``; lookups of modules matching
``NoSumPatterns`` are refused with 403, so go does not leak private module names.
Bodies stream through unchanged (httpx on trio), never held whole.

A ``SumDBs`` entry is a database's URL, served under its host (Athens' form:
``https://sum.golang.org``), or, as in ``GOSUMDB``, a name and the URL to reach it by
(``sum.golang.org https://proxy.golang.org/sumdb/sum.golang.org``): a mirror, served
under the database's own name, for where only the mirror can be reached
(:func:`parse_sum_db`).  Clients verify what they get with the database's key, so a
mirror is trusted with nothing.

Tiles and lookups are also kept in memory (bounded, least recently used out first), so
a warm build's go, with a fresh module cache, verifies its go.sum without a round trip
to the database: a tile never changes; a lookup's record never changes either, and the
tree head signed with it, older than a client may know, is one go proves consistent
with its own (a lookup is kept :data:`LOOKUP_KEPT` seconds, so that head stays recent).
Only a 200 of its request's shape is kept (a hash tile's exact size, a lookup's record
number): a portal's page or a mirror gone wrong is passed on once, not replayed; and a
tile for :data:`TILE_KEPT` seconds, should one still be wrong.  ``latest`` and every
other answer pass through, never kept.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from ._exceptions import ForbiddenError, InvalidRequestError, NotFoundError, UpstreamError
from ._http import RedirectRefused, content_encoding, raw_chunks, send_following
from ._module import unescape_path
from ._patterns import matches_any
from ._redact import redact_url
from .sumdb import SumDBAccess, SumDBUnreachableError
from .sumdb._client import AccessFinder, Locate

__all__ = ["SumDBCacheStatistics", "SumDBProxy", "SumDBResponse", "parse_sum_db"]

# What go asks a checksum database for; nothing else is forwarded.
_SUMDB_PATH = re.compile(r"latest|lookup/[A-Za-z0-9!._~/-]+@[A-Za-z0-9._+~!-]+|tile/[0-9a-z/.]+")
# A tile as golang.org/x/mod/sumdb/tlog names one: height, level (or data), index in
# three-digit elements, and a partial tile's width.  Kept only in this one spelling.
_TILE_PATH = re.compile(
    r"tile/([0-9]{1,2})/([0-9]{1,2}|data)/(?:x[0-9]{3}/)*[0-9]{3}(?:\.p/([0-9]{1,4}))?"
)
# A lookup's answer starts with its record number.
_LOOKUP_ANSWER = re.compile(rb"[0-9]+\n.*?\n\n", re.DOTALL)
#: Response headers passed back to the client.
_FORWARDED_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "cache-control",
    "etag",
    "last-modified",
)


#: An answer larger than this is passed through, not kept (a tile is 8 KiB, a data
#: tile or a lookup a few).
CACHE_ENTRY_MAX = 256 * 1024
#: All that is kept, at most, per process: answers, their keys and their bookkeeping.
CACHE_BYTES = 16 * 1024 * 1024
#: What an entry costs beyond its key and its bytes (dict, tuple, headers), counted.
_ENTRY_OVERHEAD = 512
#: Seconds a lookup is kept (its signed tree head ages); a tile a day, should a
#: database or a mirror have answered wrongly.
LOOKUP_KEPT = 3600.0
TILE_KEPT = 86400.0


def _keeps(path: str) -> float:
    """Seconds ``path``'s answer may be kept (0: never)."""
    if path.startswith("lookup/"):
        return LOOKUP_KEPT
    if _TILE_PATH.fullmatch(path):
        return TILE_KEPT
    return 0.0


def _plausible(path: str, body: bytes) -> bool:
    """Whether ``body`` has the shape of ``path``'s answer (checked before it is kept:
    a page a portal answered 200 with is passed on once, not replayed)."""
    if path.startswith("lookup/"):
        return _LOOKUP_ANSWER.match(body) is not None
    tile = _TILE_PATH.fullmatch(path)
    if tile is None:
        return False
    height, level, width = tile.groups()
    if level == "data":
        return bool(body)
    return len(body) == 32 * (int(width) if width else 1 << int(height))


#: A checksum database's name as go puts it in a URL path (``sum.golang.org``).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?")


def parse_sum_db(entry: str) -> tuple[str, str]:
    """A ``SumDBs`` entry's database name and the base URL its requests go to.

    ``https://host[/path]`` is served under ``host``; ``<name> https://url`` under
    ``name``.  Raises ValueError saying what is wrong (the config names the key)."""
    fields = entry.split()
    if len(fields) == 1:
        url = fields[0]
        name = urlsplit(url).netloc
    elif len(fields) == 2:
        name, url = fields
        if not _NAME.fullmatch(name):
            raise ValueError(f"{entry!r}: {name!r} is not a checksum database name")
    else:
        raise ValueError(f"{entry!r}: want a URL, or a database name and a URL")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(f"{entry!r}: {url!r} is not an http(s) URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{entry!r}: the URL may have no query, fragment or userinfo")
    return name, url.rstrip("/")


@dataclass
class SumDBResponse:
    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


@dataclass(frozen=True)
class SumDBCacheStatistics:
    """The kept answers: how many, their bytes, and requests answered from them or not."""

    entries: int
    bytes: int
    hits: int
    misses: int


class _Kept:
    """Whole answers by key, least recently used out first past ``max_bytes``."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, dict[str, str], bytes]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> tuple[dict[str, str], bytes] | None:
        """The kept headers (a copy) and bytes of ``key``, if kept and not expired."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] <= self._clock():
            self._drop(key)
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return dict(entry[1]), entry[2]

    def put(self, key: str, headers: dict[str, str], body: bytes, keep: float) -> None:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + keep, headers, body)
        self._bytes += _cost(key, headers, body)
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, headers, body = self._entries.pop(key)
        self._bytes -= _cost(key, headers, body)

    def statistics(self) -> SumDBCacheStatistics:
        return SumDBCacheStatistics(len(self._entries), self._bytes, self.hits, self.misses)


def _cost(key: str, headers: dict[str, str], body: bytes) -> int:
    return len(key) + sum(map(len, headers.values())) + len(body) + _ENTRY_OVERHEAD


def _failed(url: str, exc: httpx.HTTPError) -> UpstreamError:
    return UpstreamError(f"checksum database {redact_url(url)} failed: {exc!r}")


class _Chunks:
    """``first``, then what ``rest`` yields: a body partly read already (or whole).  A
    plain iterator, not a generator: one a client leaves unfinished needs no closing."""

    def __init__(self, first: bytes, rest: AsyncIterator[bytes] | None = None) -> None:
        self._first: bytes | None = first
        self._rest = rest

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._rest is None:
            raise StopAsyncIteration
        return await self._rest.__anext__()


class SumDBProxy:
    """Forwards checksum-database requests to the configured ``SumDBs`` by name."""

    def __init__(
        self,
        sum_dbs: list[str],
        no_sum_patterns: list[str],
        client: httpx.AsyncClient,
        *,
        locate: Locate | None = None,
        timeout: float = 30.0,
        cache_bytes: int = CACHE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstreams = dict(parse_sum_db(entry) for entry in sum_dbs)
        self._kept = _Kept(cache_bytes, clock)
        self._no_sum_patterns = list(no_sum_patterns)
        self._client = client
        # Databases named by their own URL (Athens' form) go, where ``locate`` finds one,
        # through the GOPROXY list's proxy serving them, as go reaches them: a proxy
        # whose only way out is its upstream proxy serves its clients' lookups too.
        self._access = {
            name: AccessFinder(
                name,
                SumDBAccess(url),
                locate if url == f"https://{name}" else None,
                timeout=timeout,
            )
            for name, url in self._upstreams.items()
        }

    def supported(self, host: str) -> bool:
        return host in self._upstreams

    def statistics(self) -> SumDBCacheStatistics:
        """What is kept of tiles and lookups, and how often it answered."""
        return self._kept.statistics()

    @contextlib.asynccontextmanager
    async def forward(self, host: str, path: str) -> AsyncIterator[SumDBResponse]:
        """Ask database ``host`` for ``path`` (what follows ``/sumdb/<host>/``)."""
        upstream = self._upstreams.get(host)
        if upstream is None:
            raise NotFoundError(f"{host!r} is not a checksum database this proxy serves")
        if not _SUMDB_PATH.fullmatch(path) or ".." in path.split("/"):
            raise InvalidRequestError(f"not a checksum database request: {path[:200]!r}")
        if path.startswith("lookup/"):
            module = unescape_path(path[len("lookup/") :].rpartition("@")[0])
            if matches_any(self._no_sum_patterns, module):
                raise ForbiddenError(f"{module} is private here (NoSumPatterns)")
        keep = _keeps(path)
        keeps = keep > 0
        key = f"{host}/{path}"
        if keeps and (kept := self._kept.get(key)) is not None:
            yield SumDBResponse(200, kept[0], _Chunks(kept[1]))
            return
        try:
            access = await self._access[host].get()
        except SumDBUnreachableError as exc:
            raise UpstreamError(f"checksum database {exc}") from None
        # What is kept is kept as the bytes themselves, for any client: not encoded.
        asked = {"Accept-Encoding": "identity"} if keeps else None
        request = self._client.build_request("GET", f"{access.url}/{path}", headers=asked)
        try:
            # Redirects followed as go follows them: a client gets the answer, not a
            # Location it would have to follow past this proxy.
            response = await send_following(self._client, request, access.auth)
        except RedirectRefused as exc:
            raise UpstreamError(f"checksum database {redact_url(access.url)}: {exc}") from None
        except httpx.HTTPError as exc:
            raise _failed(access.url, exc) from exc
        # httpx's body iterators, finished and the response closed on the way out,
        # however far they were read (raw_chunks).
        async with raw_chunks(response, 1 << 20) as raw:
            headers = {k: v for k, v in response.headers.items() if k in _FORWARDED_HEADERS}
            length = response.headers.get("content-length", "")
            if (
                not keeps
                or response.status_code != 200
                or content_encoding(response)
                or (length.isascii() and length.isdigit() and int(length) > CACHE_ENTRY_MAX)
            ):
                yield SumDBResponse(response.status_code, headers, raw)
                return
            # Read up to a keepable size (a database may send no length: go's own server
            # does not); past it, the rest streams on from where the reading stopped.
            read = b""
            try:
                async for chunk in raw:
                    read += chunk
                    if len(read) > CACHE_ENTRY_MAX:
                        break
            except httpx.HTTPError as exc:
                raise _failed(access.url, exc) from exc
            if len(read) > CACHE_ENTRY_MAX:
                yield SumDBResponse(200, headers, _Chunks(read, raw))
                return
            if _plausible(path, read):
                kept_headers = {"content-length": str(len(read))}
                if "content-type" in headers:
                    kept_headers["content-type"] = headers["content-type"]
                self._kept.put(key, kept_headers, read, keep)
            yield SumDBResponse(200, headers, _Chunks(read))
