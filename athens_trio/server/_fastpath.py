"""The fast path: ``.info``, ``.mod`` and ``.zip`` of a stored canonical version, answered
at the ASGI layer, inside the envelope (``_envelope``: request ID, PathPrefix, basic
auth, the access line and the request metrics stay exactly as for every request) but
before Quart's dispatch.

Why: a profile of cached ``.info``/``.mod`` under load (cProfile, wrk, 16 connections)
put about half of the event loop's time under Quart-Trio's per-request machinery (its
request object, the two tasks it starts per request, its response wrappers), then
hypercorn's h11 protocol and socket sends, then the protocol pool and trio's thread hops
(two per request: read the ``.info``/``.mod``, read the ``.modhash``), then the
access line.  Here a request is: parse the path (the pure function the full path uses),
the filter's verdict, one dict lookup, two ASGI sends.

A path answered once is remembered with what it asks for (module, version, endpoint),
so the next request for it skips parsing and policy: both depend on the path and the
configuration alone.

What it answers, and what it leaves to the full path (:meth:`FastPath.__call__`
returns False, having sent nothing): it answers only what the full path would answer with a
stored file — a 200, 206 or 304 with the same status, headers and bytes — and leaves
everything else there: other methods and paths, malformed ones, queries (``.info`` of a
branch), versions the filter refuses or redirects, versions storage does not hold (a
miss fetches there, as DownloadMode says) or finds damaged (repaired there), a ``Range``
past the end (416).  The protocol pool (``ProtocolWorkers``) is not taken: a hit holds
no slot, so hits never queue behind misses.  ``ValidatorHook`` is asked per fetch only,
so it never applied to hits.

The cache: ``.info`` and ``.mod`` files of up to :data:`~athens_trio.storage.CHUNK_SIZE`
are kept in memory once read (a stored version never changes), up to
``StoredFileCacheBytes`` in all, least recently used first out.  A go.mod is checked
against its recorded hash once, when it enters the cache (storage's integrity wrapper
does it), not per request.  A bigger go.mod (go allows 16 MiB) is never cached nor held
whole: it is checked and streamed in chunks each time.  A version deleted through the
admin API or ``athens-trio gc`` is forgotten within a second by every worker (they
touch :data:`~athens_trio.storage.TAKEDOWN_MARKER`); one an operator removes from the
tree by hand stays served from the cache until it is pushed out or the server restarts.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import trio
from hypercorn.typing import ASGISendCallable, ASGISendEvent, HTTPScope
from werkzeug.routing import Map

from .._endpoints import CACHE_IMMUTABLE, INFO, MOD, ZIP, Endpoint
from .._exceptions import StorageError
from .._module import check_path_major, is_canonical_version, split_path_version
from ..storage import CHUNK_SIZE, Backend, StoredBytes, StoredZip
from ._pagecache import entirely_cached
from ._routing import (
    ByteRange,
    etag_matches,
    if_range_allows,
    parse_proxy_path,
    parse_range,
    zip_etag,
)

__all__ = ["ZEROCOPY", "FastPath", "FastPathStatistics", "StoredFileCache"]

#: A policy check as the filter makes it (``FilterCheck``): raises where the version
#: may not be served here.
VersionCheck = Callable[[str, str, Endpoint], None]

_SUFFIXES = (INFO.suffix, MOD.suffix, ZIP.suffix)
#: ASGI's zero-copy extension (in a scope's ``extensions`` where the server has it: the
#: express lane) and its message type.
ZEROCOPY = "http.response.zerocopy"
#: Bodies from this size on go zero-copy where they can; a smaller one is read (from
#: the page cache, on the loop) and sent with its head in one send, which costs less
#: than a head, a cache check and a sendfile.
ZEROCOPY_FROM = 64 << 10
_CACHE_CONTROL = (b"cache-control", CACHE_IMMUTABLE.encode())
# Quart's default content type, which its 304 carries (the full path's answer).
_NOT_MODIFIED_TYPE = (b"content-type", b"text/html; charset=utf-8")
#: Big go.mod files' ETags remembered (computing one reads the whole file).
ETAG_MEMO_SIZE = 1000
#: Stored zips remembered by where they are and their size (checked when first opened).
ZIP_MEMO_SIZE = 10_000
#: Request paths remembered with what they ask for (a path answered once is judged once).
VERDICT_MEMO_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class _Document:
    """A cached file with its answer's headers made once."""

    body: bytes
    etag: bytes
    headers: list[tuple[bytes, bytes]]


def _document(body: bytes, content_type: str) -> _Document:
    etag = _content_etag(hashlib.blake2b(body, digest_size=16)).encode()
    return _Document(body, etag, _document_headers(etag, content_type, len(body)))


def _content_etag(digest: hashlib.blake2b) -> str:
    # content_etag (in _routing) over bytes held whole; this over bytes streamed by.
    return f'"{digest.hexdigest()}"'


def _document_headers(etag: bytes, content_type: str, size: int) -> list[tuple[bytes, bytes]]:
    # The order the full path's Quart response has them in.
    return [
        _CACHE_CONTROL,
        (b"etag", etag),
        (b"content-type", content_type.encode()),
        (b"content-length", str(size).encode()),
    ]


#: Told of every answer: the endpoint, module, version, and the body if at hand (a
#: cached ``.info`` or go.mod) -- what the protocol's wrappers would have seen.
ServedHook = Callable[[Endpoint, str, str, "bytes | None"], None]


@dataclass(frozen=True)
class FastPathStatistics:
    """What :meth:`FastPath.statistics` returns."""

    #: Answers given, by endpoint name (each one a storage hit, as the full path counts).
    hits: Mapping[str, int]
    #: Files in the cache, their bytes, and the bound on those.
    cached_files: int
    cached_bytes: int
    max_cached_bytes: int


#: Seconds between two looks at the takedown marker.
TAKEDOWN_LOOK_EVERY = 1.0


class StoredFileCache:
    """Immutable files by key, bounded in bytes, least recently used first out."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, str, str], _Document] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def get(self, key: tuple[str, str, str]) -> _Document | None:
        document = self._entries.get(key)
        if document is not None:
            self._entries.move_to_end(key)
        return document

    def put(self, key: tuple[str, str, str], document: _Document) -> None:
        size = len(document.body)
        if size > self.max_bytes or key in self._entries:
            return
        while self.bytes + size > self.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self.bytes -= len(oldest.body)
        self._entries[key] = document
        self.bytes += size


def _header(scope: HTTPScope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _exact_and_prefixes(url_map: Map, catch_all: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The paths other routes than ``catch_all`` take: exact ones, and the static starts
    of those with variables (``/sumdb/``): such a path is theirs, not the fast path's."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for rule in url_map.iter_rules():
        if rule.endpoint == catch_all:
            continue
        static = rule.rule.split("<", 1)[0]
        if static == rule.rule:
            exact.add(static)
        else:
            prefixes.append(static)
    return frozenset(exact), tuple(prefixes)


class FastPath:
    """Answers stored ``.info``, ``.mod`` and ``.zip`` requests (see the module doc)."""

    def __init__(
        self,
        storage: Backend,
        *,
        cache_bytes: int,
        version_check: VersionCheck | None = None,
        url_map: Map | None = None,
        catch_all: str = "proxy",
        served: ServedHook | None = None,
        takedowns: Path | None = None,
        loop_opens: bool = False,
    ) -> None:
        self._storage = storage
        self._served = served
        # Looked at once a second at most: a takedown elsewhere empties the cache.
        self._takedowns = takedowns
        self._loop_opens = loop_opens
        self._takedowns_looked = -math.inf
        self._takedowns_stamp = self._takedown_stamp()
        self._check = version_check
        self._cache = StoredFileCache(cache_bytes)
        self._etags: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._hits: Counter[str] = Counter()
        self._verdicts: dict[str, tuple[Endpoint, str, str]] = {}
        self._zips: dict[tuple[str, str], tuple[Path, int]] = {}
        self._url_map = url_map
        self._catch_all = catch_all
        self._others: tuple[frozenset[str], tuple[str, ...]] | None = None

    def statistics(self) -> FastPathStatistics:
        return FastPathStatistics(
            hits=dict(self._hits),
            cached_files=len(self._cache),
            cached_bytes=self._cache.bytes,
            max_cached_bytes=self._cache.max_bytes,
        )

    def _other_route(self, path: str) -> bool:
        if self._url_map is None:
            return False
        if self._others is None:  # the routes are all there by the first request
            self._others = _exact_and_prefixes(self._url_map, self._catch_all)
        exact, prefixes = self._others
        return path in exact or path.startswith(prefixes)

    def remember(self, endpoint: Endpoint, module: str, version: str, body: bytes) -> None:
        """Keep what the full path just served of a stored canonical version (read and
        checked by storage there), so the fast path's first answer for it costs no
        storage read: after a cold build, the warm one's first requests are hits."""
        if endpoint in (INFO, MOD) and len(body) <= CHUNK_SIZE:
            key = (endpoint.name, module, version)
            if self._cache.get(key) is None:
                self._cache.put(key, _document(body, endpoint.content_type))

    def remember_zip(self, module: str, version: str, stored: StoredZip) -> None:
        """As :meth:`remember`, for a zip storage just opened (and checked) for the full
        path: where it is and its size."""
        if stored.path is not None and stored.redirect_url is None:
            if len(self._zips) >= ZIP_MEMO_SIZE:
                del self._zips[next(iter(self._zips))]  # the oldest
            self._zips[(module, version)] = (stored.path, stored.size)

    def forget(self) -> None:
        """Drop what is kept of stored files (versions were deleted)."""
        self._cache.clear()
        self._etags.clear()
        self._zips.clear()

    def _takedown_stamp(self) -> int | None:
        if self._takedowns is None:
            return None
        try:
            return os.stat(self._takedowns).st_mtime_ns
        except OSError:
            return None

    def _look_for_takedowns(self) -> None:
        now = time.monotonic()
        if self._takedowns is None or now - self._takedowns_looked < TAKEDOWN_LOOK_EVERY:
            return
        self._takedowns_looked = now
        stamp = self._takedown_stamp()  # one stat a second, on the loop: cheap enough
        if stamp != self._takedowns_stamp:
            self._takedowns_stamp = stamp
            self.forget()

    async def __call__(self, scope: HTTPScope, send: ASGISendCallable) -> bool:
        """Answer the request if it is a stored file's; False (nothing sent) if the full
        path must."""
        self._look_for_takedowns()
        method = scope["method"]
        path = scope["path"]
        if method not in ("GET", "HEAD"):
            return False
        verdict = self._verdicts.get(path)
        if verdict is None:
            verdict = self._judge(path)
            if verdict is None:
                return False
        endpoint, module, version = verdict
        body: bytes | None = None
        if endpoint is ZIP:
            answered = await self._zip(scope, send, module, version)
        else:
            answered, body = await self._document(scope, send, endpoint, module, version)
        if answered:
            self._hits[endpoint.name] += 1
            if self._served is not None:
                # What the full path's protocol wrappers see of a hit (last served,
                # prefetch): the body of a small .info or go.mod, as read already (a
                # big one streamed by is not kept).
                self._served(endpoint, module, version, body)
            if path not in self._verdicts:
                if len(self._verdicts) >= VERDICT_MEMO_SIZE:
                    del self._verdicts[next(iter(self._verdicts))]  # the oldest
                self._verdicts[path] = verdict
        return answered

    def _judge(self, path: str) -> tuple[Endpoint, str, str] | None:
        """What ``path`` asks for, if it is a stored file's kind of request: a canonical
        version's ``.info``, ``.mod`` or ``.zip`` that the filter lets through.  It
        depends on the path alone (and the configuration), so it is remembered."""
        if not path.endswith(_SUFFIXES) or self._other_route(path):
            return None
        try:
            wanted = parse_proxy_path(path)
            module, version = wanted.module, wanted.version
            if version is None or not is_canonical_version(version):
                return None
            check_path_major(version, split_path_version(module)[1])
            if self._check is not None:
                self._check(module, version, wanted.endpoint)
        except Exception:
            return None  # the full path says why, in its words
        return wanted.endpoint, module, version

    # --- .info and .mod ---------------------------------------------------------------

    async def _document(
        self,
        scope: HTTPScope,
        send: ASGISendCallable,
        endpoint: Endpoint,
        module: str,
        version: str,
    ) -> tuple[bool, bytes | None]:
        key = (endpoint.name, module, version)
        document = self._cache.get(key)
        if document is None:
            try:
                if endpoint is INFO:
                    stored: StoredZip = StoredBytes(await self._storage.info(module, version))
                else:
                    stored = await self._storage.go_mod_file(module, version)
            except Exception:
                return False, None  # not stored (a miss), damaged (a repair), a fault: all theirs
            if not isinstance(stored, StoredBytes) or stored.size > CHUNK_SIZE:
                return await self._stream_document(scope, send, endpoint, key, stored), None
            document = _document(stored.data, endpoint.content_type)
            self._cache.put(key, document)
        if etag_matches(_header(scope, b"if-none-match"), document.etag.decode()):
            await _not_modified(send, document.etag)
            return True, document.body
        await _start(send, 200, document.headers)
        await send(
            {
                "type": "http.response.body",
                "body": document.body if scope["method"] != "HEAD" else b"",
                "more_body": False,
            }
        )
        return True, document.body

    async def _stream_document(
        self,
        scope: HTTPScope,
        send: ASGISendCallable,
        endpoint: Endpoint,
        key: tuple[str, str, str],
        stored: StoredZip,
    ) -> bool:
        """A go.mod too big to cache: checked (by storage), then streamed in chunks."""
        memo = (key[1], key[2], stored.size)
        etag = self._etags.get(memo)
        if etag is None:
            digest = hashlib.blake2b(digest_size=16)
            async for chunk in stored.chunks():
                digest.update(chunk)
            etag = _content_etag(digest).encode()
            if len(self._etags) >= ETAG_MEMO_SIZE:
                self._etags.popitem(last=False)
            self._etags[memo] = etag
        if etag_matches(_header(scope, b"if-none-match"), etag.decode()):
            await _not_modified(send, etag)
            return True
        await _start(send, 200, _document_headers(etag, endpoint.content_type, stored.size))
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return True
        await _stream(send, stored, 0, stored.size)
        return True

    # --- .zip ------------------------------------------------------------------------

    async def _zip(
        self, scope: HTTPScope, send: ASGISendCallable, module: str, version: str
    ) -> bool:
        key = (module, version)
        try:
            return await self._zip_once(scope, send, key)
        except _ZipChanged:
            # Changed or gone since it was checked: storage looks again (and checks it).
            self._zips.pop(key, None)
        try:
            return await self._zip_once(scope, send, key)
        except _ZipChanged:
            return False  # changing under our feet: the full path's business

    async def _zip_once(
        self, scope: HTTPScope, send: ASGISendCallable, key: tuple[str, str]
    ) -> bool:
        module, version = key
        remembered = self._zips.get(key)
        if remembered is None:
            try:
                stored = await self._storage.zip(module, version)  # its tail checked once
            except Exception:
                return False
            if stored.redirect_url is not None:
                return False  # answered by a redirect: the full path's one decision
            if stored.path is None:
                return await self._answer_zip(scope, send, module, version, stored.size, stored)
            self.remember_zip(module, version, stored)
            remembered = (stored.path, stored.size)
        return await self._answer_zip(scope, send, module, version, remembered[1], remembered)

    async def _answer_zip(
        self,
        scope: HTTPScope,
        send: ASGISendCallable,
        module: str,
        version: str,
        size: int,
        source: StoredZip | tuple[Path, int],
    ) -> bool:
        """The zip's answer, False (nothing sent) for a Range past its end.  A
        ``(path, size)`` is read here directly, in fewer thread hops than storage's
        chunks; :class:`_ZipChanged` (nothing sent) if it is no longer that file."""
        etag = zip_etag(module, version, size)
        if etag_matches(_header(scope, b"if-none-match"), etag):
            await _not_modified(send, etag.encode())
            return True
        headers = [
            (b"etag", etag.encode()),
            _CACHE_CONTROL,
            (b"accept-ranges", b"bytes"),
            (b"content-type", ZIP.content_type.encode()),
        ]
        if scope["method"] == "HEAD":
            headers.append((b"content-length", str(size).encode()))
            await _start(send, 200, headers)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return True
        selected: ByteRange | None = None
        if if_range_allows(_header(scope, b"if-range"), etag):
            try:
                selected = parse_range(_header(scope, b"range"), size)
            except Exception:
                return False  # 416, in the full path's words
        start, stop = (selected.start, selected.stop) if selected else (0, size)
        headers.append((b"content-length", str(stop - start).encode()))
        if selected is not None:
            headers.append((b"content-range", selected.content_range.encode()))
        status = 206 if selected is not None else 200
        if isinstance(source, StoredZip):
            await _start(send, status, headers)
            await _stream(send, source, start, stop)
            return True
        if stop - start >= ZEROCOPY_FROM and ZEROCOPY in scope.get("extensions", {}):
            cached = await self._open_zip(source[0], size, start, stop, zerocopy=True)
            if cached is None:
                raise _ZipChanged
            if cached is not _WOULD_BLOCK:
                assert isinstance(cached, _OpenedZip)
                await _send_zerocopy(send, cached, start, stop, status, headers)
                return True
        # On the loop when the bytes are in the page cache (most hits: no thread hop);
        # in a thread when reading them would wait on the disk.
        opened = await self._open_zip(source[0], size, start, stop)
        if opened is _WOULD_BLOCK:
            opened = await trio.to_thread.run_sync(_open_zip, source[0], size, start, stop)
        if not isinstance(opened, _OpenedZip):
            raise _ZipChanged
        await _send_file(send, opened, start + len(opened.first), stop, status, headers)
        return True

    async def _open_zip(
        self, path: Path, size: int, start: int, stop: int, *, zerocopy: bool = False
    ) -> _OpenedZip | _WouldBlock | None:
        """:func:`_open_zip` from the page cache only: on the loop where storage is on a
        local filesystem (its lookups cached), in a thread where an open may go over a
        network."""
        opening = functools.partial(
            _open_zip, path, size, start, stop, nowait=True, zerocopy=zerocopy
        )
        if self._loop_opens:
            return opening()
        return await trio.to_thread.run_sync(opening)


class _ZipChanged(Exception):
    """The zip remembered is gone or no longer its size."""


@dataclass
class _OpenedZip:
    """A zip opened for one response: its descriptor (None once closed) and its first
    chunk, read in the same step as the open (none for a zero-copy send)."""

    fd: int | None
    first: bytes

    def fileno(self) -> int:
        assert self.fd is not None
        return self.fd


async def _send_zerocopy(
    send: ASGISendCallable,
    opened: _OpenedZip,
    start: int,
    stop: int,
    status: int,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """The answer's start, then bytes ``[start, stop)`` of the opened zip as ASGI's
    zero-copy message; the file is closed however the response ends."""
    message = {"type": ZEROCOPY, "file": opened, "offset": start, "count": stop - start}
    try:
        await _start(send, status, headers)
        await send(cast(ASGISendEvent, {**message, "more_body": False}))
    finally:
        if opened.fd is not None:
            os.close(opened.fd)
            opened.fd = None


class _WouldBlock:
    """A read that would wait on the disk: do it in a thread."""


_WOULD_BLOCK = _WouldBlock()


def _read_at(fd: int, wanted: int, offset: int, *, nowait: bool) -> bytes | _WouldBlock:
    """``wanted`` bytes at ``offset`` (fewer at the end of the file); with ``nowait``
    only from the page cache (``RWF_NOWAIT``), else :data:`_WOULD_BLOCK`."""
    if not nowait:
        return os.pread(fd, wanted, offset)
    buffer = bytearray(wanted)
    try:
        got = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
    except OSError:  # EAGAIN: not all cached; EOPNOTSUPP: a filesystem without it
        return _WOULD_BLOCK
    if got != wanted:
        return _WOULD_BLOCK  # partly cached (or short: the thread's read says which)
    # Typed as bytes, which ASGI's body is: every taker here reads any bytes-like
    # (hypercorn copies a body into bytes, the express lane sends it as it is), and a
    # chunk's copy into bytes is spared.
    return cast(bytes, buffer)


def _open_zip(
    path: Path, size: int, start: int, stop: int, *, nowait: bool = False, zerocopy: bool = False
) -> _OpenedZip | _WouldBlock | None:
    """Open the zip, check it is still ``size`` bytes, read its first chunk from
    ``start``, and close it already if that was all: one step for most zips.  None if
    it is gone or changed (then storage is asked again); with ``nowait``,
    :data:`_WOULD_BLOCK` if the chunk is not in the page cache.  (``nowait`` is for
    the event loop: a zip served before, so its path's lookup is cached too.)  With
    ``zerocopy``, nothing is read: the zip is opened for sendfile if bytes ``[start,
    stop)`` are all in the page cache (so it never waits for the disk on the loop),
    else :data:`_WOULD_BLOCK`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size != size:
            os.close(fd)
            return None
        if zerocopy:
            if entirely_cached(fd, start, stop - start):
                return _OpenedZip(fd, b"")
            os.close(fd)
            return _WOULD_BLOCK
        wanted = min(CHUNK_SIZE, stop - start)
        first = _read_at(fd, wanted, start, nowait=nowait)
        if isinstance(first, _WouldBlock) or len(first) != wanted:
            os.close(fd)
            return first if isinstance(first, _WouldBlock) else None
        if start + wanted >= stop:
            os.close(fd)
            return _OpenedZip(None, first)
        return _OpenedZip(fd, first)
    except BaseException:
        os.close(fd)
        raise


def _read_chunk(
    opened: _OpenedZip, offset: int, stop: int, *, nowait: bool = False
) -> bytes | _WouldBlock:
    """The next chunk from ``offset``, closing the file in the same step if it is the
    last; with ``nowait``, :data:`_WOULD_BLOCK` if it is not in the page cache."""
    assert opened.fd is not None
    wanted = min(CHUNK_SIZE, stop - offset)
    chunk = _read_at(opened.fd, wanted, offset, nowait=nowait)
    if isinstance(chunk, _WouldBlock):
        return chunk
    if len(chunk) != wanted:
        raise StorageError("a stored zip is shorter than when it was opened")
    if offset + wanted >= stop:
        fd, opened.fd = opened.fd, None
        os.close(fd)
    return chunk


async def _send_file(
    send: ASGISendCallable,
    opened: _OpenedZip,
    offset: int,
    stop: int,
    status: int,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """The answer's start, the opened zip's first chunk, then bytes ``[offset, stop)``;
    the file is closed however the response ends."""
    try:
        await _start(send, status, headers)
        await send({"type": "http.response.body", "body": opened.first, "more_body": True})
        while offset < stop:
            chunk = _read_chunk(opened, offset, stop, nowait=True)
            if isinstance(chunk, _WouldBlock):
                chunk = await trio.to_thread.run_sync(_read_chunk, opened, offset, stop)
                assert not isinstance(chunk, _WouldBlock)
            offset += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        if opened.fd is not None:
            os.close(opened.fd)
            opened.fd = None
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _start(send: ASGISendCallable, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _not_modified(send: ASGISendCallable, etag: bytes) -> None:
    await _start(send, 304, [(b"etag", etag), _CACHE_CONTROL, _NOT_MODIFIED_TYPE])
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stream(send: ASGISendCallable, stored: StoredZip, start: int, stop: int) -> None:
    """Bytes ``[start, stop)`` of ``stored``, a chunk per send; the file is closed however
    the response ends."""
    chunks = stored.chunks(start, stop)
    try:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
