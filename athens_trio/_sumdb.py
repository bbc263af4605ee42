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
``latest`` and every answer but 200 pass through, never kept.
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
from ._http import RedirectRefused, send_following
from ._module import unescape_path
from ._patterns import matches_any
from ._redact import redact_url
from .sumdb import SumDBAccess, SumDBUnreachableError
from .sumdb._client import AccessFinder, Locate

__all__ = ["SumDBCacheStatistics", "SumDBProxy", "SumDBResponse", "parse_sum_db"]

# What go asks a checksum database for; nothing else is forwarded.
_SUMDB_PATH = re.compile(r"latest|lookup/[A-Za-z0-9!._~/-]+@[A-Za-z0-9._+~!-]+|tile/[0-9a-z/.]+")
#: Response headers passed back to the client.
_FORWARDED_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "cache-control",
    "etag",
    "last-modified",
)


#: What is kept: tiles and lookups (see the module docstring).
_KEPT_PATHS = ("tile/", "lookup/")
#: An answer larger than this is passed through, not kept (a tile is 8 KiB, a data
#: tile or a lookup a few).
CACHE_ENTRY_MAX = 256 * 1024
#: All that is kept, at most, per process.
CACHE_BYTES = 16 * 1024 * 1024
#: Seconds a lookup is kept; a tile stays until pushed out.
LOOKUP_KEPT = 3600.0


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
        entry = self._entries.get(key)
        if entry is not None and entry[0] <= self._clock():
            self._drop(key)
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[1], entry[2]

    def put(self, key: str, headers: dict[str, str], body: bytes, keep: float) -> None:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + keep, headers, body)
        self._bytes += len(body)
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        self._bytes -= len(self._entries.pop(key)[2])

    def statistics(self) -> SumDBCacheStatistics:
        return SumDBCacheStatistics(len(self._entries), self._bytes, self.hits, self.misses)


async def _whole(body: bytes) -> AsyncIterator[bytes]:
    yield body


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
        keeps = path.startswith(_KEPT_PATHS)
        key = f"{host}/{path}"
        if keeps and (kept := self._kept.get(key)) is not None:
            yield SumDBResponse(200, kept[0], _whole(kept[1]))
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
            raise UpstreamError(
                f"checksum database {redact_url(access.url)} failed: {exc!r}"
            ) from exc
        try:
            headers = {k: v for k, v in response.headers.items() if k in _FORWARDED_HEADERS}
            length = response.headers.get("content-length", "")
            if (
                keeps
                and response.status_code == 200
                and "content-encoding" not in headers
                and length.isdigit()
                and int(length) <= CACHE_ENTRY_MAX
            ):
                body = await response.aread()  # at most CACHE_ENTRY_MAX, said up front
                keep = LOOKUP_KEPT if path.startswith("lookup/") else float("inf")
                self._kept.put(key, headers, body, keep)
                yield SumDBResponse(200, headers, _whole(body))
            else:
                yield SumDBResponse(response.status_code, headers, response.aiter_raw(1 << 20))
        finally:
            await response.aclose()
