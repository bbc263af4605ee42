"""The GOPROXY protocol's HTTP side as pure functions: no I/O, no framework.

What a request path asks for (:func:`parse_proxy_path`), which bytes a ``Range`` header
selects (:func:`parse_range`), whether an ``ETag`` matches (:func:`etag_matches`), how
long a response may be cached (:func:`cache_control`) and which status an exception
becomes (:func:`status_for`).  The app in ``_app.py`` only glues these to Quart and the
download protocol, so everything that decides what a go client sees is tested here.

Status codes carry meaning to the go command, which falls through to the next entry of
``GOPROXY=a,b`` on 404 and 410 only:

- 404 :class:`~athens_trio.NotFoundError`: the module or version does not exist (the
  only status that lets the go command fall through to the next proxy);
- 400 :class:`~athens_trio.InvalidRequestError`: a malformed path or version, refused
  before anything ran;
- 403 :class:`~athens_trio.ForbiddenError`: the operator's policy refuses it (FilterFile,
  ValidatorHook, NoSumPatterns);
- 301/303 :class:`~athens_trio.Redirected`: DownloadMode redirect / a filter's ``D`` rule;
- 416 :class:`RangeNotSatisfiableError`: the ``Range`` starts past the end of the zip;
- 504 :class:`~athens_trio.FetchTimeoutError`: go ran past its timeout;
- 502 :class:`~athens_trio.UpstreamError`: go could not reach or read the VCS.  We are a
  gateway to it, and a fault must never read as "does not exist", or a
  ``GOPROXY=ours,direct`` client would fall through and get a different answer;
- 500 anything else: a real fault of ours (:class:`~athens_trio.StorageError`, a bug).
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import NamedTuple

from .._exceptions import (
    AthensTrioError,
    FetchTimeoutError,
    ForbiddenError,
    InvalidPathError,
    InvalidRequestError,
    InvalidVersionError,
    NotFoundError,
    Redirected,
    UpstreamError,
)
from .._module import (
    check_canonical_version,
    is_canonical_version,
    unescape_path,
    unescape_version,
)

__all__ = [
    "CACHE_IMMUTABLE",
    "CACHE_NONE",
    "CACHE_SHORT",
    "ByteRange",
    "Endpoint",
    "NoSuchEndpointError",
    "ProxyRequest",
    "RangeNotSatisfiableError",
    "cache_control",
    "content_etag",
    "etag_matches",
    "if_range_allows",
    "most_severe",
    "parse_proxy_path",
    "parse_range",
    "status_for",
    "zip_etag",
]

#: ``.mod``, ``.zip`` and the ``.info`` of a canonical version: once stored, a version
#: never changes, so any cache may keep it for a year without asking again.
CACHE_IMMUTABLE = "public, max-age=31536000, immutable"
#: ``list``, ``@latest`` and ``.info`` of a query (a branch, ``latest``, ``v1.2``): they
#: move when upstream tags or pushes, so a cache may keep them for a minute only.
CACHE_SHORT = "public, max-age=60"
#: Errors and the health endpoints: a fault or a 404 must not outlive its cause.
CACHE_NONE = "no-store"

_QUOTE_LIMIT = 100


class Endpoint(enum.Enum):
    """The five GOPROXY endpoints."""

    LIST = "list"
    LATEST = "latest"
    INFO = "info"
    MOD = "mod"
    ZIP = "zip"


@dataclass(frozen=True)
class ProxyRequest:
    """A request path, unescaped and checked: ``module`` is a valid module path and
    ``version`` (None for list and latest) a valid version query, canonical for
    ``.mod`` and ``.zip``."""

    endpoint: Endpoint
    module: str
    version: str | None = None


class NoSuchEndpointError(NotFoundError):
    """The path is none of the GOPROXY endpoints (it has no ``/@v/`` or ``/@latest``)."""


class RangeNotSatisfiableError(AthensTrioError):
    """A ``Range`` header whose first byte lies past the end of the representation."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable: the representation has {size} bytes")
        self.size = size


def _quote(text: str) -> str:
    if len(text) <= _QUOTE_LIMIT:
        return repr(text)
    return f"{text[:_QUOTE_LIMIT]!r}... ({len(text)} characters)"


_VERSION_FILE = re.compile(r"(?P<version>.+)\.(?P<ext>info|mod|zip)", re.DOTALL)


def parse_proxy_path(path: str) -> ProxyRequest:
    """What a (percent-decoded) request path asks for.

    ``/<escaped module>/@v/list``, ``/<escaped module>/@latest`` and
    ``/<escaped module>/@v/<escaped version>.(info|mod|zip)``.  The module path and the
    version are case-unescaped and checked by :mod:`athens_trio._module`.  Raises
    :class:`~athens_trio.InvalidPathError` or :class:`~athens_trio.InvalidVersionError`
    for a malformed one (400), :class:`NoSuchEndpointError` (404) for a path that is
    no GOPROXY endpoint at all.
    """
    if not path.startswith("/"):
        raise InvalidPathError(f"request path {_quote(path)} does not start with '/'")
    # A module path has no "@", so the first "/@v/" is where the module ends.
    marker = path.find("/@v/")
    if marker >= 0:
        module = unescape_path(path[1:marker])
        rest = path[marker + len("/@v/") :]
        if rest == "list":
            return ProxyRequest(Endpoint.LIST, module)
        match = _VERSION_FILE.fullmatch(rest)
        if match is None:
            raise InvalidVersionError(
                f"{_quote(rest)}: expected list or <version>.info, .mod or .zip after /@v/"
            )
        version = unescape_version(match["version"])
        endpoint = Endpoint(match["ext"])
        if endpoint is not Endpoint.INFO:
            # .mod and .zip name one immutable version; only .info resolves queries.
            check_canonical_version(version)
        return ProxyRequest(endpoint, module, version)
    if path.endswith("/@latest"):
        return ProxyRequest(Endpoint.LATEST, unescape_path(path[1 : -len("/@latest")]))
    raise NoSuchEndpointError(
        f"{_quote(path)} is not a GOPROXY endpoint "
        "(<module>/@v/list, <module>/@v/<version>.info|.mod|.zip, <module>/@latest)"
    )


def cache_control(request: ProxyRequest) -> str:
    """The ``Cache-Control`` of a successful answer to ``request``."""
    if request.endpoint in (Endpoint.MOD, Endpoint.ZIP):
        return CACHE_IMMUTABLE
    if request.endpoint is Endpoint.INFO:
        assert request.version is not None
        # A canonical version's .info comes from storage, which never changes it.
        return CACHE_IMMUTABLE if is_canonical_version(request.version) else CACHE_SHORT
    return CACHE_SHORT


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
    def length(self) -> int:
        return self.stop - self.start

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


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


def status_for(error: BaseException) -> int:
    """The HTTP status an exception becomes (see the table in the module docstring)."""
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, ForbiddenError):
        return 403
    if isinstance(error, Redirected):
        return error.status
    if isinstance(error, InvalidRequestError):
        return 400
    if isinstance(error, RangeNotSatisfiableError):
        return 416
    if isinstance(error, FetchTimeoutError):
        return 504
    if isinstance(error, UpstreamError):
        return 502
    return 500


# Which error speaks for a group: a fault outranks a timeout, a timeout an upstream
# failure, and any of them "does not exist", so a group never hides a fault behind a 404.
_SEVERITY = {500: 7, 504: 6, 502: 5, 416: 4, 403: 3, 404: 2, 400: 1, 301: 0, 303: 0}


def most_severe(group: BaseExceptionGroup[Exception]) -> Exception:
    """The leaf of an exception group that decides the response status."""

    def leaves(error: BaseException) -> list[Exception]:
        if isinstance(error, BaseExceptionGroup):
            return [leaf for inner in error.exceptions for leaf in leaves(inner)]
        assert isinstance(error, Exception)
        return [error]

    return max(leaves(group), key=lambda error: _SEVERITY[status_for(error)])
