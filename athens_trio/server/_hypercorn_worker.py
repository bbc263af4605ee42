"""The one place that reaches past hypercorn's documented API, and why.

MaxConnections must stop *accepting* at the cap, so that new connections wait in the
kernel's listen queue (as Go's ``netutil.LimitListener``).  hypercorn's public
``hypercorn.trio.serve`` accepts by itself, from sockets it wraps itself, with no cap
and no way to be handed a listener or an accepted stream.  So ``_listen`` accepts, and
this module runs hypercorn's per-connection server on each stream it accepted, with
what hypercorn's own trio worker (``hypercorn.trio.run.worker_serve``) gives it: the
app wrapper, the worker context (shutdown and ``max_requests``), the ASGI lifespan and
the statsd logger.  Only those constructors and calls are used, as ``worker_serve``
uses them: no subclass, no private method, no event or protocol class.

These are not documented API, so they may change in any release:
:data:`TESTED_HYPERCORN` names the versions they were checked against, and
``tests/test_listen.py`` fails on any other, so that moving to another hypercorn is a
deliberate step (run the listening tests, then add the version).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from random import randint
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ASGIFramework, ConnectionState
from hypercorn.utils import wrap_app

__all__ = ["TESTED_HYPERCORN", "HypercornWorker", "open_worker"]

#: hypercorn versions this module was tested with (``tests/test_listen.py`` checks).
TESTED_HYPERCORN = frozenset({"0.18.0"})


class HypercornWorker:
    """hypercorn's trio worker, minus accepting: serves the connections it is given."""

    def __init__(self, app: AppWrapper, config: HypercornConfig, lifespan_state: dict[str, Any]):
        self._app = app
        self._config = config
        self._lifespan_state = lifespan_state
        max_requests = None
        if config.max_requests is not None:
            max_requests = config.max_requests + randint(0, config.max_requests_jitter)
        self._context = WorkerContext(max_requests)

    async def serve_connection(
        self, stream: trio.abc.Stream, state: MutableMapping[str, Any]
    ) -> None:
        """Serve one connection until it is done; ``state`` (the lifespan's state plus
        what the caller adds) is copied into each request's ASGI scope."""
        state = {**self._lifespan_state, **state}
        # TCPServer takes any trio stream; it looks for TLS by attribute.
        connection: Any = stream
        await TCPServer(
            self._app, self._config, self._context, ConnectionState(state), connection
        ).run()

    async def terminate(self) -> None:
        """Shutting down: idle connections close, busy ones once their response is out."""
        await self._context.terminated.set()

    async def wait_max_requests(self) -> None:
        """Return once ``max_requests`` requests were served (never, without it)."""
        await self._context.terminate.wait()


@asynccontextmanager
async def open_worker(
    app: ASGIFramework, config: HypercornConfig
) -> AsyncIterator[HypercornWorker]:
    """A worker for ``app``: the ASGI lifespan's startup on entry, its shutdown on exit.

    ``config`` is copied: the worker sets hypercorn's statsd logger class on its copy."""
    config = copy.copy(config)
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        yield HypercornWorker(wrapped, config, lifespan_state)
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
