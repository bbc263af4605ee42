"""Listening: hypercorn's connection handling with the limits Go's http.Server has.

hypercorn's ``trio.serve`` has no cap on connections and no request-header timeout
(its ``read_timeout`` bounds *every* read, so a client waiting in silence for a slow
fetch would be cut off, and the request cancelled, mid-response).  :func:`serve_app`
is hypercorn's trio worker loop (its lifespan, its ``TCPServer`` per connection, its
graceful shutdown), with its own accept loop and connection class:

- **MaxConnections**: a semaphore is taken *before* each ``accept``, so at the cap the
  server stops accepting and new connections wait in the kernel's listen queue
  (hypercorn's ``backlog``, 100) until one closes, as Go's ``netutil.LimitListener``.
- **KeepAliveTimeout**: an idle connection (no request in progress and no byte of the
  next one) is closed after this many seconds (hypercorn's ``keep_alive_timeout``).
- **RequestHeaderTimeout**: once the first byte of a request arrives, its headers must be
  complete within this many seconds, or the connection is closed (slowloris).  Also the
  TLS handshake's bound.  The body and the response are not bounded by it: a fetch may
  take ``StashTimeout``.
- **ShutdownTimeout**: on shutdown the listeners close at once, idle connections close,
  and requests in flight get this long (hypercorn's ``graceful_timeout``).

Where hypercorn binds: ``host:port``, or ``unix:<path>`` (a stale socket file there is
replaced, and the file is removed again when serving ends); with ``certfile`` and
``keyfile`` set every bind is TLS, with ALPN offering ``h2`` then ``http/1.1``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework, ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

__all__ = ["ConnectionLimit", "serve_app"]

log = logging.getLogger("athens_trio.server")

# What accept(2) says when the process or the system is out of something: wait, retry
# (as trio.serve_listeners does), rather than give up serving.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY_SLEEP = 0.1


class ConnectionLimit:
    """MaxConnections: how many client connections may be open at once, and are."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = trio.Semaphore(limit)

    @property
    def open(self) -> int:
        return self.limit - self._slots.value

    async def acquire(self) -> None:
        await self._slots.acquire()

    def release(self) -> None:
        self._slots.release()


class _Connection(TCPServer):
    """hypercorn's connection with a request-header deadline.

    hypercorn runs ``_idle_timeout`` whenever the connection has no request in progress
    and cancels it as soon as a request's headers are complete.  Here it waits
    ``keep_alive_timeout`` for the first byte of the next request, then
    ``header_timeout`` for the rest of its headers, and closes the connection if either
    runs out (or at once when the server shuts down).

    A connection the client closes is let go at once (hypercorn would hold it until
    the keep-alive timer ran out, which matters once connections are counted).
    """

    def __init__(self, *args: Any, header_timeout: float) -> None:
        super().__init__(*args)
        self._header_timeout = header_timeout
        self._bytes_arrived = trio.Event()

    async def _read_data(self) -> None:
        # hypercorn's loop, minus its per-read timeout (see the module docstring).
        while True:
            try:
                data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            self._bytes_arrived.set()
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        # The client is gone: hypercorn would keep the connection (and its slot) until
        # the keep-alive timer ran out; nothing is left to keep alive.
        await self.idle_task.stop()
        await self.protocol.handle(Closed())

    async def _idle_timeout(self) -> None:
        self._bytes_arrived = arrived = trio.Event()
        terminated = self.context.terminated
        with trio.move_on_after(self.config.keep_alive_timeout):
            await _either(arrived.wait, terminated.wait)
        if arrived.is_set() and not terminated.is_set():
            with trio.move_on_after(self._header_timeout):
                await terminated.wait()
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()


async def _either(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as any of the ``waits`` returns."""
    async with trio.open_nursery() as nursery:

        async def wait_then_stop(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(wait_then_stop, wait)


async def _accept_loop(
    listener: trio.abc.Listener[Any],
    limit: ConnectionLimit,
    handle: Callable[[trio.abc.Stream], Awaitable[None]],
    handler_nursery: trio.Nursery,
) -> None:
    async with listener:
        while True:
            await limit.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                limit.release()
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("accept failed (%s); retrying in %g s", exc, _ACCEPT_RETRY_SLEEP)
                await trio.sleep(_ACCEPT_RETRY_SLEEP)
                continue
            except BaseException:
                limit.release()
                raise
            handler_nursery.start_soon(handle, stream)


def _unix_socket_paths(binds: list[str]) -> list[str]:
    return [bind[len("unix:") :] for bind in binds if bind.startswith("unix:")]


def _remove_socket_file(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def _listen(config: HypercornConfig) -> tuple[list[trio.abc.Listener[Any]], list[str]]:
    """Bind and listen where ``config.bind`` says; the listeners and their URLs."""
    sockets = config.create_sockets()
    bound = [*sockets.secure_sockets, *sockets.insecure_sockets]
    try:
        ssl_context = config.create_ssl_context() if config.ssl_enabled else None
        listeners: list[trio.abc.Listener[Any]] = []
        binds: list[str] = []
        for sock in bound:
            sock.listen(config.backlog)
            listener: trio.abc.Listener[Any] = trio.SocketListener(
                trio.socket.from_stdlib_socket(sock)
            )
            scheme = "http"
            if ssl_context is not None:
                listener = trio.SSLListener(listener, ssl_context, https_compatible=True)
                scheme = "https"
            listeners.append(listener)
            binds.append(f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}")
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return listeners, binds


async def serve_app(
    app: ASGIFramework,
    config: HypercornConfig,
    *,
    connections: ConnectionLimit,
    header_timeout: float,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` as hypercorn's ``trio.serve`` does, with ``connections`` capping the
    open connections and ``header_timeout`` bounding each request's headers; started
    (``nursery.start``) with the bound addresses as URLs.  Returns once
    ``shutdown_trigger()`` has returned and the requests in flight have finished (or
    ``config.graceful_timeout`` has passed)."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    unix_paths = _unix_socket_paths(config.bind)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        try:
            async with trio.open_nursery() as connection_nursery:
                listeners, binds = _listen(config)

                async def handle(stream: trio.abc.Stream) -> None:
                    try:
                        await _Connection(
                            wrapped,
                            config,
                            context,
                            ConnectionState(lifespan_state.copy()),
                            stream,
                            header_timeout=header_timeout,
                        ).run()
                    finally:
                        # As trio.serve_listeners: hypercorn's close may be cut short by
                        # the grace period's cancellation, which must not leave it open.
                        await trio.aclose_forcefully(stream)
                        connections.release()

                task_status.started(binds)
                try:
                    async with trio.open_nursery() as accept_nursery:
                        for listener in listeners:
                            accept_nursery.start_soon(
                                partial(
                                    _accept_loop, listener, connections, handle, connection_nursery
                                )
                            )
                        await shutdown_trigger()
                        # Stop accepting: each listener closes as its loop ends.
                        accept_nursery.cancel_scope.cancel()
                finally:
                    # Idle connections close now; requests in flight get the grace period.
                    await context.terminated.set()
                    connection_nursery.cancel_scope.deadline = (
                        trio.current_time() + config.graceful_timeout
                    )
        finally:
            for path in unix_paths:
                _remove_socket_file(path)
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
