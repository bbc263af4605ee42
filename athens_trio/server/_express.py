"""The express lane: a plain HTTP/1.1 connection served from the socket, without hypercorn.

A profile of a warm ``go mod download`` (330 cached hits, the fast path already on) put
most of the server's time in hypercorn's per-request machinery rather than in the app:
a task per request, its stream and event objects, the connection's watcher waking on
every byte, three socket sends per answer (head, body, end).  For the requests a build
makes -- bodyless GETs of module files -- that machinery decides nothing.  So a plain
(not TLS) connection starts here: h11 parses each request, the fast path answers stored
files, and this loop writes the answers itself, head and body in one send.  A GET or
HEAD the fast path declines (a miss, a list, a refusal) goes through the app's full
path (Quart) on this lane too, its answer written the same way, so one miss does not
move the rest of a build's hits on that connection onto hypercorn.  While the app
works on it, the socket is watched: the client hanging up is the ASGI
``http.disconnect`` hypercorn would have sent (the request's task is cancelled, and a
fetch nobody waits for any more stops), and bytes it sends early (its next request)
are kept for after the answer.

The first request that is not a plain GET/HEAD without a body (or that h11 rejects) is
handed to hypercorn with the connection: the bytes read so far of that request, and
whatever followed, are replayed to hypercorn first (:meth:`WatchedStream.unread`), and
hypercorn serves the connection from there on as it serves every TLS connection.

What stays exactly as on hypercorn's path, because the same code does it: the envelope
(request ID, PathPrefix, basic auth, the access line, the request metrics), the fast
path's answers and the app's -- their statuses, headers and bodies
(``tests/test_fastpath.py`` compares the bytes on the wire with the full path's).  The
response headers hypercorn adds (``Date``) come from hypercorn's own config.  The
connection's limits are kept here as ``_connections`` keeps them for hypercorn:
``KeepAliveTimeout`` between requests, ``RequestHeaderTimeout`` from a request's first
byte to its last header, ``WriteTimeout`` on a stalled send (``WatchedStream``), and at
shutdown an idle connection closes at once while an answer being written (or a miss
being fetched) gets the grace period.

Not here: hypercorn's ``keep_alive_max_requests`` (a kept-alive connection is closed
after that many requests); this lane serves a connection's requests for as long as
the client keeps it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast
from urllib.parse import unquote

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    ConnectionState,
    HTTPScope,
)

from .._exceptions import StorageError
from ..storage import CHUNK_SIZE
from ._connections import Requests, WatchedStream
from ._envelope import Envelope
from ._fastpath import ZEROCOPY, FastPath
from ._pagecache import entirely_cached

__all__ = ["ExpressLane", "Handoff"]

log = logging.getLogger("athens_trio.server")

#: Bytes asked of the socket per receive (a request's head is well under it).
_RECEIVE_SIZE = 1 << 16
#: A body at most this big goes out in the same send as its head (one copy); a bigger
#: one in a send of its own (no copy).
_JOIN_BELOW = 1 << 16
_RECEIVE_BODYLESS: dict[str, Any] = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}
#: Request headers that take a request off this lane: a body, an upgrade, an expectation.
_NOT_EXPRESS_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"upgrade", b"expect"})


#: The app past the fast path: what answers a request the fast path declined.
FullPath = Callable[[HTTPScope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


class Handoff:
    """A connection the lane gives up: serve it on hypercorn, replaying ``received``."""

    __slots__ = ("received",)

    def __init__(self, received: bytes) -> None:
        self.received = received


class _ResponseHeaders:
    """hypercorn's own response headers (``Date``), made once a second."""

    def __init__(self, config: HypercornConfig) -> None:
        self._config = config
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []

    def now(self) -> list[tuple[bytes, bytes]]:
        second = int(time.time())
        if second != self._second:
            self._headers = self._config.response_headers("h11")
            self._second = second
        return self._headers


class _Idle:
    """The cancel scopes of connections waiting for their next request: all cancelled
    when the server stops (idle connections close at once; answers go on)."""

    def __init__(self) -> None:
        self.scopes: set[trio.CancelScope] = set()
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        for scope in self.scopes:
            scope.cancel()


class ExpressLane:
    """Serves a plain connection's bodyless GETs and HEADs: by ``fast_path``, or by
    ``full_path`` where the fast path declines."""

    def __init__(
        self,
        envelope: Envelope,
        fast_path: FastPath,
        full_path: FullPath,
        config: HypercornConfig,
    ) -> None:
        self._envelope = envelope
        self._fast_path = fast_path
        self._full_path = full_path
        self._max_head = config.h11_max_incomplete_size
        self._root_path = config.root_path
        self._response_headers = _ResponseHeaders(config)
        self._idle = _Idle()

    def stop(self) -> None:
        """The server is stopping: idle connections close now, and every connection
        once its current answer is out."""
        self._idle.stop()

    async def serve(
        self,
        stream: WatchedStream,
        requests: Requests,
        *,
        keep_alive_timeout: float,
        header_timeout: float,
    ) -> Handoff | None:
        """Answer the connection's requests until one is not the lane's (a
        :class:`Handoff`: not a bodyless GET or HEAD, or one h11 rejects), or the
        connection is done (None: close it)."""
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head)
        client = _address(stream.socket, peer=True)
        server = _address(stream.socket, peer=False)
        received = bytearray()  # of the request being read, for a handoff
        first_byte_at = math.inf
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError:
                return Handoff(bytes(received))  # hypercorn answers it, in its words
            if event is h11.NEED_DATA:
                data = await self._receive(
                    stream, bool(received), first_byte_at, keep_alive_timeout, header_timeout
                )
                if data is None:
                    return None
                if not data:  # the client's end of stream
                    # Mid-request: hypercorn answers the truncated request (a 400), as
                    # it would have; between requests there is nothing to answer.
                    return Handoff(bytes(received)) if received else None
                if not received:
                    first_byte_at = trio.current_time()
                received += data
                connection.receive_data(data)
                continue
            if not isinstance(event, h11.Request):
                return None  # the client closed (h11.ConnectionClosed)
            if not _is_express(event) or not _ends_here(connection):
                return Handoff(bytes(received))
            scope = self._scope(event, client, server)
            sender = _Sender(stream, connection, self._response_headers.now(), event.method)
            client_watch = _ClientWatch(stream, paused=bool(connection.trailing_data[0]))
            try:
                with requests.serving():
                    await self._envelope(scope, client_watch, sender.send, self._answer)
            except Exception as exc:
                if _client_went(exc):
                    return None  # the client went (or stalled) mid-answer
                # Not the client's fault: logged, and answered as hypercorn answers an
                # app that failed -- a 500 if nothing was sent yet, the head if only it
                # was (a half-sent answer cannot be mended) -- and the connection closes.
                log.exception("the express lane failed on %r", event.target)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    if connection.our_state is h11.SEND_RESPONSE:
                        await stream.send_all(_failed(connection, self._response_headers.now()))
                    else:
                        await sender.flush_head()
                return None
            if client_watch.early:  # the client's next request, read while it waited
                connection.receive_data(client_watch.early)
            if self._idle.stopping or connection.our_state is not h11.DONE:
                return None  # "Connection: close", an HTTP/1.0 client, or shutdown
            try:
                connection.start_next_cycle()
            except h11.LocalProtocolError:
                return None
            received = bytearray(connection.trailing_data[0])
            first_byte_at = trio.current_time() if received else math.inf

    async def _answer(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if not await self._fast_path(scope, send):
            await self._full_path(scope, receive, send)

    async def _receive(
        self,
        stream: WatchedStream,
        started: bool,
        first_byte_at: float,
        keep_alive_timeout: float,
        header_timeout: float,
    ) -> bytes | None:
        """The next bytes of a request, b"" at the client's end of stream; None if the
        connection should close (it broke, sat idle too long, its headers took too long,
        or the server stops)."""
        if started:
            with trio.move_on_at(first_byte_at + header_timeout):
                return await _received_or_none(stream)
            return None  # the request's headers took too long (slowloris)
        if self._idle.stopping:
            return None
        with trio.move_on_after(keep_alive_timeout) as idle:
            self._idle.scopes.add(idle)
            try:
                return await _received_or_none(stream)
            finally:
                self._idle.scopes.discard(idle)
        return None  # idle too long, or the server stops

    def _scope(
        self, request: h11.Request, client: tuple[str, int] | None, server: tuple[str, int] | None
    ) -> HTTPScope:
        # As hypercorn's HTTPStream makes it, for what the envelope and fast path read.
        raw_path, _, query = request.target.partition(b"?")
        scope: HTTPScope = {
            "type": "http",
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "http_version": request.http_version.decode(),
            "method": request.method.decode("ascii").upper(),
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": self._root_path,
            "headers": list(request.headers),
            "client": client,
            "server": server,
            "state": ConnectionState({}),
            # ASGI's zero-copy extension: the fast path may send a cached zip's pages
            # with sendfile(2) (hypercorn has no such thing).
            "extensions": {ZEROCOPY: {}},
        }
        return scope


def _is_express(request: h11.Request) -> bool:
    """A plain GET or HEAD of an origin-form, ASCII target, with no body, upgrade or
    expectation: what the fast path may answer."""
    if request.method not in (b"GET", b"HEAD") or not request.target.startswith(b"/"):
        return False
    if not request.target.isascii():
        return False
    return not any(name in _NOT_EXPRESS_HEADERS for name, _ in request.headers)


def _ends_here(connection: h11.Connection) -> bool:
    """Whether the request just read has ended (a bodyless one does, at once)."""
    try:
        return isinstance(connection.next_event(), h11.EndOfMessage)
    except h11.RemoteProtocolError:
        return False


async def _received_or_none(stream: WatchedStream) -> bytes | None:
    """The next bytes, b"" at the end of the stream, None if the connection broke."""
    try:
        return await stream.receive_some(_RECEIVE_SIZE)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return None


def _client_went(exc: BaseException) -> bool:
    """Whether ``exc`` says the client went or stalled (alone, or every one of a group:
    an app's task group wraps what its send raised)."""
    gone = (trio.BrokenResourceError, trio.ClosedResourceError)
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(gone)
        return rest is None
    return isinstance(exc, gone)


def _failed(connection: h11.Connection, extra_headers: list[tuple[bytes, bytes]]) -> bytes:
    """hypercorn's answer for an app that failed before it answered."""
    headers = [(b"content-length", b"0"), (b"connection", b"close"), *extra_headers]
    head = connection.send(h11.Response(status_code=500, headers=headers)) or b""
    return head + (connection.send(h11.EndOfMessage()) or b"")


class _ClientWatch:
    """ASGI's ``receive`` for a request the app answers on the lane: its (empty) body
    first; then, while the app works, the socket is read for the client hanging up --
    ``http.disconnect``, as hypercorn says it.  Bytes the client sends meanwhile (its
    next request, pipelined) are kept in ``early`` and the socket is left unread from
    then on until the answer is out, as hypercorn pauses reading: an end of stream right
    behind them is the end of the requests, not of this one's client.  ``paused``: the
    next request's bytes came with this one's already; nothing is read at all."""

    def __init__(self, stream: WatchedStream, *, paused: bool) -> None:
        self._stream = stream
        self._body_given = False
        self._paused = paused
        self.early = b""

    async def __call__(self) -> ASGIReceiveEvent:
        if not self._body_given:
            self._body_given = True
            return cast(ASGIReceiveEvent, _RECEIVE_BODYLESS)
        if not (self.early or self._paused):
            data = await _received_or_none(self._stream)
            if not data:  # its end of stream, or a broken connection
                return cast(ASGIReceiveEvent, _DISCONNECT)
            self.early = data
        await trio.sleep_forever()
        raise AssertionError("unreachable")


def _address(sock: trio.socket.SocketType, *, peer: bool) -> tuple[str, int] | None:
    try:
        address = sock.getpeername() if peer else sock.getsockname()
    except OSError:
        return None
    if isinstance(address, tuple):
        return (str(address[0]), int(address[1]))
    return None  # a unix socket: hypercorn gives no address either


#: Statuses whose answers have no body (with HEAD's): what an app sends is dropped,
#: as hypercorn drops it.
_BODYLESS_STATUSES = frozenset({204, 304, *range(100, 200)})


class _Sender:
    """ASGI's send for one answer, written through h11: the head waits for the body's
    first bytes and goes out in the same send."""

    def __init__(
        self,
        stream: WatchedStream,
        connection: h11.Connection,
        extra_headers: list[tuple[bytes, bytes]],
        method: bytes,
    ) -> None:
        self._stream = stream
        self._connection = connection
        self._extra_headers = extra_headers
        self._head: bytes = b""
        self._head_only = method == b"HEAD"

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == ZEROCOPY:
            await self._send_file(cast(Mapping[str, Any], message))
            return
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), *self._extra_headers]
            self._head_only = self._head_only or message["status"] in _BODYLESS_STATUSES
            self._head = _joined(
                self._connection.send_with_data_passthrough(
                    h11.Response(status_code=message["status"], headers=headers)
                )
                or ()
            )
            return
        if message["type"] != "http.response.body":
            return
        parts: list[Any] = [self._head] if self._head else []
        self._head = b""
        body = b"" if self._head_only else message.get("body", b"")
        if body:
            parts += self._connection.send_with_data_passthrough(h11.Data(data=body)) or ()
        if not message.get("more_body", False):
            parts += self._connection.send_with_data_passthrough(h11.EndOfMessage()) or ()
        if len(body) < _JOIN_BELOW:
            await self._stream.send_all(_joined(parts))
            return
        for part in parts:  # a big chunk goes out as it is, never copied
            if part:
                await self._stream.send_all(part)

    async def flush_head(self) -> None:
        """Send the head held for the body's first bytes, if any (the app failed first)."""
        head, self._head = self._head, b""
        if head:
            await self._stream.send_all(head)

    async def _send_file(self, message: Mapping[str, Any]) -> None:
        # h11 frames the body by its length and passes the range through untouched
        # (send_with_data_passthrough exists for this): the head, then sendfile(2).
        body = _FileRange(message["file"].fileno(), message.get("offset", 0), message["count"])
        parts: list[Any] = [self._head] if self._head else []
        self._head = b""
        data = h11.Data(data=cast(bytes, body))  # h11 takes only its len() here
        parts += self._connection.send_with_data_passthrough(data) or ()
        if not message.get("more_body", False):
            parts += self._connection.send_with_data_passthrough(h11.EndOfMessage()) or ()
        for part in parts:
            if isinstance(part, _FileRange):
                await self._send_range(part)
            elif part:
                await self._stream.send_all(part)

    async def _send_range(self, part: _FileRange) -> None:
        """The range by sendfile while its pages stay in memory; if a slow client
        outlasts them, the rest is read in a thread (never from the disk on the loop)."""
        offset, count = part.offset, part.count

        def still_cached(offset: int, count: int) -> bool:
            return entirely_cached(part.fd, offset, count)

        cached = True  # the fast path looked just now
        while count > 0:
            if cached:
                sent = await self._stream.send_file(part.fd, offset, count, still_cached)
                offset, count = offset + sent, count - sent
                cached = False  # stopped early: the pages went
            elif still_cached(offset, count):
                cached = True
            else:
                chunk = await trio.to_thread.run_sync(
                    os.pread, part.fd, min(CHUNK_SIZE, count), offset
                )
                if not chunk:
                    raise StorageError("a stored zip is shorter than when it was opened")
                await self._stream.send_all(chunk)
                offset, count = offset + len(chunk), count - len(chunk)


class _FileRange:
    """Bytes of a file, as h11 sees a body chunk: only its length."""

    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count


def _joined(parts: Iterable[Any]) -> bytes:
    return b"".join(parts)
