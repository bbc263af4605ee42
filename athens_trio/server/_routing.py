"""The GOPROXY protocol's HTTP side as pure functions: no I/O, no framework.

What a request path asks for (:func:`parse_proxy_path`, by the endpoint table in
``athens_trio/_endpoints.py``), which bytes a ``Range`` header selects
(:func:`parse_range`) and whether an ``ETag`` matches (:func:`etag_matches`).  The app in
``_app.py`` only glues these, the endpoint table and the status each exception carries
(the tree in ``athens_trio/_exceptions.py``) to Quart and the download protocol, so
everything that decides what a go client sees is tested without a server.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import NamedTuple

from .._endpoints import ENDPOINTS, VERSIONS, Endpoint
from .._exceptions import (
    InvalidPathError,
    InvalidVersionError,
    NoSuchEndpointError,
    RangeNotSatisfiableError,
)
from .._module import check_canonical_version, unescape_path, unescape_version

__all__ = [
    "ByteRange",
    "NoSuchEndpointError",
    "ProxyRequest",
    "RangeNotSatisfiableError",
    "content_etag",
    "etag_matches",
    "if_range_allows",
    "parse_proxy_path",
    "parse_range",
    "zip_etag",
]

_QUOTE_LIMIT = 100


@dataclass(frozen=True)
class ProxyRequest:
    """A request path, unescaped and checked: ``module`` is a valid module path and
    ``version`` (None for list and latest) a valid version query, canonical where the
    endpoint needs one (``.mod`` and ``.zip``)."""

    endpoint: Endpoint
    module: str
    version: str | None = None


def _quote(text: str) -> str:
    if len(text) <= _QUOTE_LIMIT:
        return repr(text)
    return f"{text[:_QUOTE_LIMIT]!r}... ({len(text)} characters)"


_VERSIONED = {endpoint.suffix: endpoint for endpoint in ENDPOINTS if endpoint.versioned}
_UNVERSIONED = [endpoint for endpoint in ENDPOINTS if not endpoint.versioned]
_VERSION_FILE = re.compile(
    "(?P<version>.+)(?P<suffix>" + "|".join(map(re.escape, _VERSIONED)) + ")", re.DOTALL
)
_EXPECTED = ", ".join(
    f"<module>{VERSIONS}<version>{e.suffix}" if e.versioned else f"<module>{e.suffix}"
    for e in ENDPOINTS
)


def parse_proxy_path(path: str) -> ProxyRequest:
    """What a (percent-decoded) request path asks for: one of the endpoint table's paths.

    The module path and the version are case-unescaped and checked by
    :mod:`athens_trio._module`.  Raises :class:`~athens_trio.InvalidPathError` or
    :class:`~athens_trio.InvalidVersionError` for a malformed one (400),
    :class:`~athens_trio.server.NoSuchEndpointError` (404) for a path that is no GOPROXY
    endpoint at all.
    """
    if not path.startswith("/"):
        raise InvalidPathError(f"request path {_quote(path)} does not start with '/'")
    # A module path has no "@", so the first "/@v/" is where the module ends.
    marker = path.find(VERSIONS)
    if marker >= 0:
        module = unescape_path(path[1:marker])
        for endpoint in _UNVERSIONED:
            if path[marker:] == endpoint.suffix:
                return ProxyRequest(endpoint, module)
        match = _VERSION_FILE.fullmatch(path, marker + len(VERSIONS))
        if match is None:
            raise InvalidVersionError(
                f"{_quote(path[marker + len(VERSIONS) :])}: expected list or "
                "<version>.info, .mod or .zip after /@v/"
            )
        version = unescape_version(match["version"])
        endpoint = _VERSIONED[match["suffix"]]
        if endpoint.canonical_only:
            check_canonical_version(version)
        return ProxyRequest(endpoint, module, version)
    for endpoint in _UNVERSIONED:
        if path.endswith(endpoint.suffix):
            return ProxyRequest(endpoint, unescape_path(path[1 : -len(endpoint.suffix)]))
    raise NoSuchEndpointError(f"{_quote(path)} is not a GOPROXY endpoint ({_EXPECTED})")


# ---------------------------------------------------------------------------------------
# Entity tags
# ---------------------------------------------------------------------------------------


def content_etag(body: bytes) -> str:
    """A strong ETag for a small body held in memory: a hash of its bytes."""
    return f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'


def zip_etag(module: str, version: str, size: int) -> str:
    """A strong ETag for a stored zip, without reading it: a stored version never
    changes, so its identity (and, for good measure, its size) names its bytes."""
    identity = f"zip\0{module}\0{version}\0{size}".encode()
    return f'"{hashlib.blake2b(identity, digest_size=16).hexdigest()}"'


_ENTITY_TAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, and ``*``)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(match.group(2) == etag for match in _ENTITY_TAG.finditer(header))


def if_range_allows(header: str | None, etag: str) -> bool:
    """Whether a ``Range`` may be honoured given ``If-Range``: absent, or exactly our
    strong ETag.  A date or another tag means "send it all" (we keep no dates)."""
    return header is None or header.strip() == etag


# ---------------------------------------------------------------------------------------
# Ranges
# ---------------------------------------------------------------------------------------


class ByteRange(NamedTuple):
    """Bytes ``[start, stop)`` of a representation of ``size`` bytes."""

    start: int
    stop: int
    size: int

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*", re.ASCII | re.IGNORECASE)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The bytes one ``Range`` header asks for, of a representation of ``size`` bytes.

    ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` (the last n bytes).  None means "send
    the whole representation": no header, another unit, several ranges, or a malformed
    one, all of which RFC 9110 lets a server ignore.  Raises
    :class:`RangeNotSatisfiableError` (416) when the range starts at or past the end.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        if last and int(last) < start:
            return None  # bytes=5-3 is invalid syntax: ignored, as RFC 9110 says
        if start >= size:
            raise RangeNotSatisfiableError(size)
        return ByteRange(start, min(int(last) + 1, size) if last else size, size)
    if not last:
        return None  # "bytes=-"
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiableError(size)
    return ByteRange(max(size - suffix, 0), size, size)
