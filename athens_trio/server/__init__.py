"""The HTTP side: the GOPROXY routes (Quart-Trio) and serving them on hypercorn.

- :func:`serve` — async context manager: open the pipeline and serve it; see ``_serve``.
- :func:`create_app` — the ASGI app over an opened :class:`~athens_trio.Pipeline`.
- ``_routing`` — the protocol's HTTP rules as pure functions (paths, ranges, ETags), by
  the endpoint table (``athens_trio/_endpoints.py``); statuses are the exceptions' own.
- ``_envelope`` — around every request: request ID, PathPrefix, basic auth (``_auth``),
  the access line and the request metrics (``_metrics``, also ``/metrics``).
- ``_listen`` — accepting (MaxConnections), TLS (HTTP/2 by ALPN), unix sockets and the
  graceful stop; ``_connections`` — when a connection closes (KeepAliveTimeout,
  RequestHeaderTimeout, the client gone); ``_hypercorn_worker`` — hypercorn serving
  each connection (the one use of hypercorn past its documented API).
- ``_catalog`` (``/catalog``, ``/index``) and ``_pages`` (``/``, ``/robots.txt``).
"""

from __future__ import annotations

from ._app import create_app
from ._routing import NoSuchEndpointError, RangeNotSatisfiableError
from ._serve import Server, check_go, serve

__all__ = [
    "NoSuchEndpointError",
    "RangeNotSatisfiableError",
    "Server",
    "check_go",
    "create_app",
    "serve",
]
