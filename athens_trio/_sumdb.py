"""The checksum database proxy: ``/sumdb/<host>/...`` passed through to ``SumDBs``.

The go command asks ``<GOPROXY>/sumdb/<host>/supported`` and, on 200, fetches the
checksum database through the proxy (``lookup/<module>@<version>``, ``tile/...``,
``latest``): useful when only the proxy can reach the internet.  As in Athens, every
configured database answers ``supported``; lookups of modules matching
``NoSumPatterns`` are refused with 403, so go does not leak private module names.
Bodies stream through unchanged (httpx on trio), never held whole.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from ._exceptions import ForbiddenError, InvalidRequestError, NotFoundError, UpstreamError
from ._module import unescape_path
from ._patterns import matches_any

__all__ = ["SumDBProxy", "SumDBResponse"]

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


@dataclass
class SumDBResponse:
    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


class SumDBProxy:
    """Forwards checksum-database requests to the configured ``SumDBs`` by host."""

    def __init__(
        self, sum_dbs: list[str], no_sum_patterns: list[str], client: httpx.AsyncClient
    ) -> None:
        self._upstreams = {urlsplit(url).netloc: url.rstrip("/") for url in sum_dbs}
        self._no_sum_patterns = list(no_sum_patterns)
        self._client = client

    def supported(self, host: str) -> bool:
        return host in self._upstreams

    @contextlib.asynccontextmanager
    async def forward(self, host: str, path: str) -> AsyncIterator[SumDBResponse]:
        """Ask ``host``'s database for ``path`` (what follows ``/sumdb/<host>/``)."""
        upstream = self._upstreams.get(host)
        if upstream is None:
            raise NotFoundError(f"{host!r} is not a checksum database this proxy serves")
        if not _SUMDB_PATH.fullmatch(path) or ".." in path.split("/"):
            raise InvalidRequestError(f"not a checksum database request: {path[:200]!r}")
        if path.startswith("lookup/"):
            module = unescape_path(path[len("lookup/") :].rpartition("@")[0])
            if matches_any(self._no_sum_patterns, module):
                raise ForbiddenError(f"{module} is private here (NoSumPatterns)")
        request = self._client.build_request("GET", f"{upstream}/{path}")
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"checksum database {upstream} failed: {exc!r}") from exc
        try:
            headers = {k: v for k, v in response.headers.items() if k in _FORWARDED_HEADERS}
            yield SumDBResponse(response.status_code, headers, response.aiter_raw(1 << 20))
        finally:
            await response.aclose()
