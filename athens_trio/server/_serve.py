"""Serving: the pipeline and hypercorn's trio worker in one nursery, stopped gracefully.

::

    async with serve(config, host="127.0.0.1", port=0) as server:
        print(server.url)          # http://127.0.0.1:<the port the OS chose>
        ...                        # the proxy answers while the block runs

Leaving the block (or :meth:`Server.shutdown`) stops accepting connections, lets the
requests in flight finish within the shutdown grace period, then closes the pipeline:
its nursery is cancelled, which kills the go process groups still fetching and removes
their temporary directories.  Cancelling the block's scope stops everything at once.

Where and how it listens comes from the config: ``UnixSocket`` (wins over ``Port``),
``TLSCertFile``/``TLSKeyFile`` (HTTPS, with HTTP/2 by ALPN), ``KeepAliveTimeout``,
``RequestHeaderTimeout``, ``WriteTimeout``, ``MaxConnections`` and ``ShutdownTimeout``
(see ``_listen``).
The metrics (``_metrics``) read the pipeline's statistics() at scrape time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import hypercorn.config
import trio

from .._config import Config, parse_listen_address
from .._exceptions import GoBinaryError
from .._pipeline import Pipeline, go_runner, open_pipeline
from ..storage import Backend
from ..upstream import Fetcher, Lister
from ._app import create_app, express_lane
from ._listen import ConnectionLimit, serve_app
from ._metrics import Metrics
from ._workers import metrics_dir, publish_metrics

__all__ = ["GO_CHECK_TIMEOUT", "Server", "check_go", "hypercorn_config", "serve"]

#: Seconds ``go version`` may take at start before the go binary is declared broken.
GO_CHECK_TIMEOUT = 60.0


class Server:
    """A running proxy: where it listens, and the pipeline behind it."""

    def __init__(self, pipeline: Pipeline, binds: list[str], stop: trio.Event) -> None:
        self.pipeline = pipeline
        #: Every address hypercorn listens on, as URLs (``http://127.0.0.1:3000``).
        self.binds = tuple(binds)
        self._stop = stop

    @property
    def url(self) -> str:
        """The first bound address, as a URL: what ``GOPROXY`` should say."""
        return self.binds[0]

    @property
    def port(self) -> int:
        """The bound port (the real one when asked for port 0)."""
        port = urlsplit(self.url).port
        if port is None:
            raise ValueError(f"{self.url} has no port (a unix socket)")
        return port

    def shutdown(self) -> None:
        """Begin a graceful shutdown now; the ``serve`` block's exit waits for it."""
        self._stop.set()


async def check_go(config: Config) -> str:
    """``go version`` of the configured go binary, or :class:`~athens_trio.GoBinaryError`."""
    try:
        with trio.fail_after(GO_CHECK_TIMEOUT):
            return await go_runner(config).check()
    except trio.TooSlowError:
        raise GoBinaryError(
            f"{config.go_binary} version did not answer within {GO_CHECK_TIMEOUT:g} s"
        ) from None


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    grace: float,
    fds: Sequence[int] = (),
) -> hypercorn.config.Config:
    """hypercorn's config for ``config``: where to bind (``host``/``port`` override
    ``UnixSocket`` and ``Port``; listening sockets inherited as ``fds`` override all),
    TLS, the keep-alive and the shutdown grace."""
    hyper = hypercorn.config.Config()
    if fds:
        hyper.bind = [f"fd://{fd}" for fd in fds]
    elif host is None and port is None and config.unix_socket:
        hyper.bind = [f"unix:{config.unix_socket}"]
    else:
        default_host, default_port = parse_listen_address(config.port)
        hyper.bind = [
            _bind(default_host if host is None else host, default_port if port is None else port)
        ]
    if config.tls_cert_file:
        hyper.certfile = config.tls_cert_file
        hyper.keyfile = config.tls_key_file
    hyper.keep_alive_timeout = config.keep_alive_timeout
    # A TLS handshake is part of getting a request's headers in.
    hyper.ssl_handshake_timeout = config.request_header_timeout
    hyper.graceful_timeout = grace
    hyper.accesslog = None  # the app logs each request itself, in one line
    hyper.errorlog = logging.getLogger("athens_trio.hypercorn")
    hyper.include_server_header = False
    return hyper


@contextlib.asynccontextmanager
async def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    storage: Backend | None = None,
    fetcher: Fetcher | None = None,
    lister: Lister | None = None,
    go_version: str | None = None,
    shutdown_timeout: float | None = None,
    fast_path: bool = True,
    fds: Sequence[int] = (),
) -> AsyncIterator[Server]:
    """Open the pipeline for ``config`` and serve it until the block ends.

    ``host`` and ``port`` default to ``config.port`` (Athens' ``Port``: ``:3000``,
    ``3000`` or ``127.0.0.1:3000``), or to ``config.unix_socket`` if set (given either,
    the socket is not used); port 0 picks a free one (:attr:`Server.port`).
    ``storage``, ``fetcher`` and ``lister`` replace the configured components.
    ``go_version`` is ``go version``'s output if the caller checked the go binary
    already; otherwise it is checked here (:class:`~athens_trio.GoBinaryError`).
    ``shutdown_timeout`` (seconds) bounds how long in-flight requests may take to
    finish once the block ends.  ``fast_path=False`` serves stored files through the
    full path too (see ``_fastpath``; for comparing the two).  As from any nursery (and
    from ``open_pipeline``), an exception the block raises comes out inside an
    ``ExceptionGroup``.  ``fds`` are listening sockets to serve instead (a worker's,
    see ``_workers``).
    """
    if go_version is None:
        go_version = await check_go(config)
    grace = config.shutdown_timeout if shutdown_timeout is None else shutdown_timeout
    hyper = hypercorn_config(config, host=host, port=port, grace=grace, fds=fds)
    if hyper.ssl_enabled:
        hyper.create_ssl_context()  # a bad certificate or key fails here, before anything runs
    metrics = Metrics()
    connections = ConnectionLimit(config.max_connections)

    async with open_pipeline(
        config,
        storage=storage,
        fetcher=fetcher,
        lister=lister,
    ) as pipeline:
        metrics.bind(pipeline, connections)
        app = create_app(pipeline, go_version=go_version, metrics=metrics, fast_path=fast_path)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            publishing = trio.CancelScope()
            peers = metrics_dir()  # one of several workers: metrics that add up
            if peers is not None:
                metrics.peers = peers

                async def publish(directory: Path) -> None:
                    with publishing:
                        await publish_metrics(metrics.render_own, directory)

                nursery.start_soon(publish, peers)
            binds: list[str] = await nursery.start(
                partial(
                    serve_app,
                    app,
                    hyper,
                    connections=connections,
                    header_timeout=config.request_header_timeout,
                    write_timeout=config.write_timeout,
                    shutdown_trigger=stop.wait,
                    express=express_lane(app, hyper),
                )
            )
            server = Server(pipeline, binds, stop)
            try:
                yield server
            finally:
                # Stop accepting; requests in flight get `grace` seconds, then the server
                # returns and open_pipeline cancels whatever the pipeline still runs.
                stop.set()
                publishing.cancel()
