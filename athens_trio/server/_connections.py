"""One client connection: hypercorn serves it, this decides when it ends.

hypercorn knows HTTP; what it cannot tell apart is a client waiting in silence for a
slow response (to be left alone) from one that never finishes its headers (slowloris),
and it has no notion of a client that is gone while hypercorn still waits on it.  Two
plain observers give the facts, and :func:`_closing_time` decides from them:

- the *stream* (:class:`WatchedStream`, under TLS if any): bytes arriving, the client
  gone (end of stream, reset, a failed send);
- the *app* (:func:`track_requests`, an ASGI front): the requests being served, per
  connection and in all (the connection's :class:`Requests` reaches the front in the
  ASGI state hypercorn copies into each request's scope).

A connection is closed when, with no request being served, nothing arrives for
``KeepAliveTimeout`` seconds, or a request's first bytes arrived but its headers are
not complete ``RequestHeaderTimeout`` seconds later (with TLS the handshake counts as
part of the headers), or the client is gone.  A request being served is never cut
short by these: only the shutdown grace ends it (``_listen``) -- or its client, when
the client accepts no byte of a send for ``WriteTimeout`` seconds: then the connection
is aborted, the request with it (a slow reader is fine, one that stopped reading
would hold its connection, and its slot under MaxConnections, for ever).
"""

from __future__ import annotations

import errno
import math
import os
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from trio_util import AsyncValue, wait_any

from .._exceptions import StorageError
from ._hypercorn_worker import HypercornWorker

if TYPE_CHECKING:
    from ._express import ExpressLane

__all__ = [
    "Changes",
    "Requests",
    "WatchedStream",
    "serve_connection",
    "track_requests",
]

# Where a connection's Requests travels in the ASGI state, from here to the front.
_STATE_KEY = "athens_trio.connection_requests"


class Changes:
    """Wakes a connection's watcher (:func:`_closing_time`) when what it watches changes:
    bytes arrived, a request started, the client went.  One event, renewed per wait, in
    place of a task per condition per idle spell (which cost a cached hit dearly)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Until the next :meth:`notify`.  Check the condition right before: nothing can
        change between that check and this call, which does not checkpoint first."""
        self._event = trio.Event()
        await self._event.wait()


class Requests:
    """Requests being served (on one connection, or on all: ``parent``)."""

    def __init__(self, parent: Requests | None = None, changes: Changes | None = None) -> None:
        self.in_flight: AsyncValue[int] = AsyncValue(0)
        #: How many have started, ever.
        self.started = 0
        self._parent = parent
        self._changes = changes

    @contextmanager
    def serving(self) -> Iterator[None]:
        self.started += 1
        self._add(1)
        if self._changes is not None:
            self._changes.notify()
        try:
            yield
        finally:
            self._add(-1)

    def _add(self, n: int) -> None:
        self.in_flight.value += n
        if self._parent is not None:
            self._parent._add(n)

    async def wait_idle(self) -> None:
        await self.in_flight.wait_value(0)


def track_requests(app: ASGIFramework) -> ASGIFramework:
    """``app``, counting each HTTP request it serves on its connection's :class:`Requests`."""

    async def tracked(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        requests = None
        if scope["type"] != "lifespan":
            # The scope's state is this request's own copy: the app never sees the key.
            requests = scope.get("state", {}).pop(_STATE_KEY, None)
        if requests is None:
            await app(scope, receive, send)
            return
        with requests.serving():
            await app(scope, receive, send)

    return tracked


class WatchedStream(trio.abc.HalfCloseableStream):
    """A client's socket stream that notes bytes arriving and the client going."""

    def __init__(
        self,
        stream: trio.SocketStream,
        write_timeout: float = math.inf,
        changes: Changes | None = None,
    ) -> None:
        self._stream = stream
        self._write_timeout = write_timeout
        self._changes = changes or Changes()
        #: As on trio's SocketStream: hypercorn reads both ends' addresses here.
        self.socket = stream.socket
        #: Set once the client is gone: end of stream, reset, or a send that failed.
        self.gone = trio.Event()
        #: Set once a send took no byte for ``write_timeout`` seconds (and so failed).
        self.stalled = trio.Event()
        #: How many times bytes arrived from the client.
        self.receipts = 0
        self._unread = b""

    def unread(self, data: bytes) -> None:
        """Have the next receives return ``data`` first: bytes already read off the
        socket by someone else (the express lane, handing a request over).  If that
        reader met the end of the stream too, the client is not gone until ``data`` is
        read: the next reader gets the bytes, then the end."""
        self._unread = data + self._unread
        if self.gone.is_set() and self._unread:
            self.gone = trio.Event()

    def _went(self) -> None:
        self.gone.set()
        self._changes.notify()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._unread:
            await trio.lowlevel.checkpoint()
            size = len(self._unread) if max_bytes is None else max_bytes
            data, self._unread = self._unread[:size], self._unread[size:]
            self.receipts += 1
            self._changes.notify()
            return data
        try:
            data = await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._went()
            raise
        if data:
            self.receipts += 1
            self._changes.notify()
        else:
            self._went()
        return bytes(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._send_bounded(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._went()
            raise

    async def _send_bounded(self, data: bytes | bytearray | memoryview) -> None:
        # trio's SocketStream.send_all would block for as long as the client reads
        # nothing; each socket send here returns as soon as *some* bytes are taken, so
        # the timeout bounds one stall, never the whole (maybe huge, maybe slow) write.
        if self._stream.socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        with memoryview(data) as whole:
            remaining = whole
            if not remaining:
                await trio.lowlevel.checkpoint()
            while remaining:
                with trio.move_on_after(self._write_timeout):
                    try:
                        sent = await self._stream.socket.send(remaining)
                    except OSError as exc:
                        if exc.errno == errno.EBADF:
                            raise trio.ClosedResourceError("the socket was closed") from None
                        raise trio.BrokenResourceError(exc) from exc
                    remaining = remaining[sent:]
                    continue
                self.stalled.set()
                raise trio.BrokenResourceError(
                    f"the client accepted no bytes for {self._write_timeout:g} s"
                )

    async def send_file(
        self,
        fd: int,
        offset: int,
        count: int,
        still_cached: Callable[[int, int], bool] | None = None,
    ) -> int:
        """Send up to ``count`` bytes of file ``fd`` from ``offset`` with ``sendfile(2)``
        (no copy through Python; the caller knows the pages are in memory, so the kernel
        never waits for the disk here), a stall bounded as :meth:`send_all` bounds it.
        After each wait for the client, ``still_cached(offset, count)`` is asked about
        what is left: if the pages went meanwhile, it stops.  The bytes sent."""
        sock = self._stream.socket
        if sock.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        waited = False
        total = 0
        try:
            while count > 0:
                try:
                    sent = os.sendfile(sock.fileno(), fd, offset, count)
                except BlockingIOError:
                    with trio.move_on_after(self._write_timeout):
                        await trio.lowlevel.wait_writable(sock)
                        waited = True
                        if still_cached is not None and not still_cached(offset, count):
                            return total
                        continue
                    self.stalled.set()
                    raise trio.BrokenResourceError(
                        f"the client accepted no bytes for {self._write_timeout:g} s"
                    ) from None
                if sent == 0:
                    raise StorageError("a stored zip is shorter than when it was opened")
                offset += sent
                count -= sent
                total += sent
        except OSError as exc:
            self._went()
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("the socket was closed") from None
            raise trio.BrokenResourceError(exc) from exc
        except trio.BrokenResourceError:
            self._went()
            raise
        if not waited:
            await trio.lowlevel.checkpoint()
        return total

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _closing_time(
    stream: WatchedStream,
    requests: Requests,
    changes: Changes,
    keep_alive_timeout: float,
    header_timeout: float,
) -> None:
    """Return when the connection should be closed (see the module docstring)."""
    gone = stream.gone.is_set
    while True:
        await requests.wait_idle()
        if requests.in_flight.value:
            continue  # the next request started before this task woke
        started = requests.started
        if gone():
            # Nothing is being served and nobody is there to answer: hypercorn might wait
            # on for bytes that cannot come (hypercorn's HTTP/1.1 parked on "can read").
            # A request whose bytes came before the end of stream has started by now:
            # hypercorn starts it before it reads on, and the front counts it at once.
            return
        receipts = stream.receipts
        with trio.move_on_after(keep_alive_timeout):
            while stream.receipts == receipts and requests.started == started and not gone():
                await changes.wait()
        if requests.started != started or gone():
            continue
        if stream.receipts == receipts:
            return  # idle for KeepAliveTimeout
        with trio.move_on_after(header_timeout):
            while requests.started == started and not gone():
                await changes.wait()
        if requests.started == started and not gone():
            return  # the request's headers took too long


async def serve_connection(
    worker: HypercornWorker,
    socket_stream: trio.SocketStream,
    *,
    all_requests: Requests,
    ssl_context: ssl.SSLContext | None,
    keep_alive_timeout: float,
    header_timeout: float,
    write_timeout: float,
    express: ExpressLane | None = None,
) -> None:
    """Serve one accepted connection until hypercorn is done with it or it is time to
    close it; the stream is closed in the end, whatever happened.  A plain (not TLS)
    connection starts on the ``express`` lane, if given, and goes to hypercorn at the
    first request the lane does not take (one with a body, say)."""
    changes = Changes()
    watched = WatchedStream(socket_stream, write_timeout, changes)
    stream: trio.abc.Stream = watched
    if ssl_context is not None:
        stream = trio.SSLStream(watched, ssl_context, server_side=True, https_compatible=True)
    requests = Requests(parent=all_requests, changes=changes)
    state = {_STATE_KEY: requests}
    serve: Callable[[], Awaitable[Any]] = partial(worker.serve_connection, stream, state)
    close = partial(_closing_time, watched, requests, changes, keep_alive_timeout, header_timeout)
    try:
        if express is not None and ssl_context is None:
            handoff = await express.serve(
                watched,
                requests,
                keep_alive_timeout=keep_alive_timeout,
                header_timeout=header_timeout,
            )
            if handoff is None:
                return
            watched.unread(handoff.received)
        # A stalled client is dropped at once, request in flight or not: hypercorn would
        # otherwise only note the failed send and leave the request running on.
        await wait_any(serve, close, watched.stalled.wait)
    finally:
        # As trio.serve_listeners: hypercorn's close may be cut short by a cancellation,
        # which must not leave the socket open.
        await trio.aclose_forcefully(stream)
