"""Listening: hypercorn serving the app, with the limits Go's http.Server has.

hypercorn's ``trio.serve`` has no cap on connections and no request-header timeout
(its ``read_timeout`` bounds *every* read, so a client waiting in silence for a slow
fetch would be cut off, and the request cancelled, mid-response).  :func:`serve_app`
accepts the connections itself and has hypercorn serve each (``_hypercorn_worker``,
the one module that uses hypercorn past its documented API, says why); when a
connection closes is decided in ``_connections``.  The limits:

- **MaxConnections**: a semaphore is taken *before* each ``accept``, so at the cap the
  server stops accepting and new connections wait in the kernel's listen queue
  (hypercorn's ``backlog``, 100) until one closes, as Go's ``netutil.LimitListener``.
- **KeepAliveTimeout**: an idle connection (no request in progress and no byte of the
  next one) is closed after this many seconds (given as hypercorn's
  ``keep_alive_timeout``; the timer is ``_connections``'), and so is one whose client
  is gone.
- **RequestHeaderTimeout**: once the first byte of a request arrives, its headers must be
  complete within this many seconds, or the connection is closed (slowloris).  Also the
  TLS handshake's bound.  The body and the response are not bounded by it: a fetch may
  take ``StashTimeout``.
- **WriteTimeout**: a send to the client that takes no byte for this many seconds
  aborts the connection.  Go's ``WriteTimeout`` bounds the whole response instead, which
  would cut off a big zip to a slow but reading client; this bounds a stall.
- **ShutdownTimeout**: on shutdown the listeners close at once, idle connections close,
  and requests in flight get this long (hypercorn's ``graceful_timeout``).  The stop
  takes as long as the requests still being served need, no longer: once none is,
  every connection left is closed, whatever hypercorn still waits for on it.

Where hypercorn binds: ``host:port``, or ``unix:<path>`` (a stale socket file there is
replaced, and the file is removed again when serving ends); with ``certfile`` and
``keyfile`` set every bind is TLS, with ALPN offering ``h2`` then ``http/1.1``.
"""

from __future__ import annotations

import copy
import errno
import logging
import math
import os
import stat
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIFramework
from hypercorn.utils import repr_socket_addr

from ._connections import Requests, serve_connection, track_requests
from ._express import ExpressLane
from ._hypercorn_worker import open_worker

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


async def _accept_loop(
    listener: trio.SocketListener,
    limit: ConnectionLimit,
    handle: Callable[[trio.SocketStream], Awaitable[None]],
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


def _listen(config: HypercornConfig) -> tuple[list[trio.SocketListener], list[str]]:
    """Bind and listen where ``config.bind`` says; the listeners and their URLs."""
    sockets = config.create_sockets()
    bound = [*sockets.secure_sockets, *sockets.insecure_sockets]
    scheme = "https" if config.ssl_enabled else "http"
    try:
        listeners: list[trio.SocketListener] = []
        binds: list[str] = []
        for sock in bound:
            sock.listen(config.backlog)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
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
    write_timeout: float,
    shutdown_trigger: Callable[[], Awaitable[object]],
    express: ExpressLane | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` as hypercorn's ``trio.serve`` does, with ``connections`` capping the
    open connections, ``header_timeout`` bounding each request's headers and
    ``write_timeout`` each stalled send; started
    (``nursery.start``) with the bound addresses as URLs.  Returns once
    ``shutdown_trigger()`` has returned (or hypercorn's ``max_requests`` were served) and
    the requests in flight have finished, or ``config.graceful_timeout`` has passed."""
    keep_alive_timeout = config.keep_alive_timeout
    config = copy.copy(config)
    # The keep-alive timer is ours (_connections); hypercorn's would run on while a
    # request's first bytes are in, so it is left to close idle connections at shutdown.
    config.keep_alive_timeout = math.inf
    ssl_context = config.create_ssl_context() if config.ssl_enabled else None
    unix_paths = _unix_socket_paths(config.bind)
    all_requests = Requests()

    async with open_worker(track_requests(app), config) as worker:
        try:
            async with trio.open_nursery() as connection_nursery:
                listeners, binds = _listen(config)

                async def handle(stream: trio.SocketStream) -> None:
                    try:
                        await serve_connection(
                            worker,
                            stream,
                            all_requests=all_requests,
                            ssl_context=ssl_context,
                            keep_alive_timeout=keep_alive_timeout,
                            header_timeout=header_timeout,
                            write_timeout=write_timeout,
                            express=express,
                        )
                    finally:
                        connections.release()

                task_status.started(binds)
                try:
                    async with trio.open_nursery() as accept_nursery:

                        async def stop_accepting_after(
                            trigger: Callable[[], Awaitable[object]],
                        ) -> None:
                            await trigger()
                            # In the step the trigger returns in, so that no accept
                            # woken with it runs first; each listener closes as its
                            # loop ends.
                            accept_nursery.cancel_scope.cancel()

                        accept_nursery.start_soon(stop_accepting_after, shutdown_trigger)
                        accept_nursery.start_soon(stop_accepting_after, worker.wait_max_requests)
                        for listener in listeners:
                            accept_nursery.start_soon(
                                partial(
                                    _accept_loop, listener, connections, handle, connection_nursery
                                )
                            )
                finally:
                    # Idle connections close now; requests in flight get the grace period.
                    await worker.terminate()
                    if express is not None:
                        express.stop()
                    connection_nursery.cancel_scope.deadline = (
                        trio.current_time() + config.graceful_timeout
                    )
                # Only requests being served hold the stop: a connection with none (idle,
                # or one hypercorn waits on after its client went) is closed with the rest.
                await all_requests.wait_idle()
                connection_nursery.cancel_scope.cancel()
        finally:
            for path in unix_paths:
                _remove_socket_file(path)
