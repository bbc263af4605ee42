"""The envelope around every HTTP request, outside the routes.

In order, for each request:

0. **Framing**: an HTTP/1 request with both ``Content-Length`` and ``Transfer-Encoding``
   is a 400 and its connection is closed (RFC 9112 section 6.1).  h11 accepts it, framing by
   ``Transfer-Encoding``; a front proxy framing by ``Content-Length`` would see the
   rest as one body where this server sees a second request (request smuggling).
1. **Request ID**: the ``Athens-Request-ID`` header if the client sent one, cut to
   printable, log-safe characters and at most :data:`MAX_REQUEST_ID` of them, else a
   fresh random 128-bit ID in 32 hex digits; set as :data:`athens_trio._logging.request_id` for the
   request's task (and the fetch it starts) and echoed in the response header.
2. **PathPrefix**: a path outside it is a 404; inside it, the prefix is cut off (on
   element boundaries: prefix ``/go`` serves ``/go/...``, not ``/golang.org/...``) and
   ``/go`` alone is the home page.
3. **Basic auth** (when configured): 401 with ``WWW-Authenticate`` unless the path is
   exempt (``/healthz``, ``/readyz``) or the credentials match (see ``_auth``).
4. The routes (Quart).
5. **The access line**, however the request ended (status 0 when the client went away
   before the response began): ``GET /path 200 1234 5.6ms`` on ``athens_trio.access``,
   with ``method``, ``path``, ``status``, ``bytes``, ``duration_ms``, ``route``,
   ``remote``, ``user_agent`` and ``request_id`` as fields (JSON logs show them all),
   and the request metrics.  The path is the raw one as sent (percent-encoded, so a
   hostile one cannot forge lines) with any ``user:password@`` of an absolute-form
   target masked; no header, ``Authorization`` least of all, is ever logged.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, HTTPScope

from .._logging import request_id
from ._auth import CHALLENGE, EXEMPT_PATHS, BasicAuth
from ._metrics import Metrics, route_label

__all__ = [
    "MAX_REQUEST_ID",
    "REQUEST_ID_HEADER",
    "Envelope",
    "ambiguous_framing",
    "clean_request_id",
]

access_log = logging.getLogger("athens_trio.access")

REQUEST_ID_HEADER = "Athens-Request-ID"
MAX_REQUEST_ID = 128

_REQUEST_ID_HEADER = REQUEST_ID_HEADER.lower().encode()
#: A response's body: in bytes, or as a file's range (ASGI's zero-copy extension).
_BODY_TYPES = ("http.response.body", "http.response.zerocopy")
_NOT_IN_ID = re.compile(rb"[^A-Za-z0-9._:/+=@-]")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")

#: What the envelope wraps: the app (past the envelope) answering the request.
Inner = Callable[[HTTPScope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


def clean_request_id(raw: bytes | None) -> str:
    """The client's request ID made safe to log and echo, or a fresh one."""
    if raw:
        cleaned = _NOT_IN_ID.sub(b"", raw)[:MAX_REQUEST_ID]
        if cleaned:
            return cleaned.decode("ascii")
    # Not uuid4: no system call and no UUID object per request (an ID needs to be
    # unique, not secret); forked workers' generators are reseeded by Python.
    return f"{random.getrandbits(128):032x}"


def _header(scope: HTTPScope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value
    return None


def ambiguous_framing(scope: HTTPScope) -> bool:
    """Whether the request's length is told twice, which RFC 9112 says to refuse."""
    if scope.get("http_version") not in ("1.0", "1.1"):
        return False  # HTTP/2 frames itself; h2 refuses Transfer-Encoding anyway
    names = {key.lower() for key, _ in scope["headers"]}
    return b"content-length" in names and b"transfer-encoding" in names


def _body_size(message: Mapping[str, Any]) -> int:
    """The bytes a body message carries (a zero-copy one: its ``count``)."""
    body = message.get("body")
    return len(body) if body is not None else int(message.get("count", 0))


def _loggable_path(scope: HTTPScope) -> str:
    raw = scope.get("raw_path") or scope["path"].encode("utf-8", "backslashreplace")
    path = raw.decode("ascii", "backslashreplace")
    # Only an absolute-form target (scheme://...) can carry user:password@.
    return path if path.startswith("/") else _USERINFO.sub(r"\1***@", path)


def strip_prefix(path: str, prefix: str) -> str | None:
    """``path`` without ``prefix`` (which has no trailing slash), or None if it is not
    under it."""
    if not prefix:
        return path
    if path == prefix:
        return "/"
    if path.startswith(prefix + "/"):
        return path[len(prefix) :]
    return None


class Envelope:
    """Request ID, PathPrefix, basic auth, the access line and request metrics."""

    def __init__(self, *, prefix: str, auth: BasicAuth | None, metrics: Metrics) -> None:
        self.prefix = prefix.rstrip("/")
        self._raw_prefix = self.prefix.encode("utf-8")
        self._auth = auth
        self._metrics = metrics

    def _strip_raw(self, scope: HTTPScope, path: str) -> bytes:
        """The raw path without the prefix (re-encoded from ``path`` if the client
        percent-encoded the prefix itself)."""
        raw = scope.get("raw_path") or b""
        if raw == self._raw_prefix:
            return b"/"
        if raw.startswith(self._raw_prefix + b"/"):
            return raw[len(self._raw_prefix) :]
        return quote(path).encode("ascii")

    async def __call__(
        self,
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        inner: Inner,
    ) -> None:
        """Serve the request through ``inner``."""
        started = time.perf_counter()
        rid = clean_request_id(_header(scope, _REQUEST_ID_HEADER))
        token = request_id.set(rid)
        status = 0
        sent = 0
        counts_body = scope["method"] != "HEAD"
        route = "other"

        async def enveloped_send(message: ASGISendEvent) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (_REQUEST_ID_HEADER, rid.encode())]
                message = {**message, "headers": headers}
            elif message["type"] in _BODY_TYPES:
                if counts_body:
                    sent += _body_size(message)
                if not message.get("more_body", False):
                    # Inside this last send hypercorn ends the exchange: it closes the
                    # stream (which tells the app "disconnected", on which Quart-Trio
                    # cancels the request's task), then recycles the connection for the
                    # next request or closes it.  Cut short by that cancellation, a
                    # "Connection: close" answer was never followed by a close and a
                    # kept-alive connection never went idle (nor timed out).  Hypercorn
                    # shields its socket writes already, so this waits on nothing more.
                    with trio.CancelScope(shield=True):
                        await send(message)
                    return
            await send(message)

        try:
            if ambiguous_framing(scope):
                await _plain(
                    scope,
                    enveloped_send,
                    400,
                    "400 Bad Request: both Content-Length and Transfer-Encoding\n",
                    # The bytes after this request's headers cannot be trusted to be
                    # the start of the next: h11 closes after this answer.
                    [(b"connection", b"close")],
                )
                return
            path = strip_prefix(scope["path"], self.prefix)
            if path is None:
                await _plain(scope, enveloped_send, 404, "404 Not Found\n")
                return
            route = route_label(path)
            if (
                self._auth is not None
                and path not in EXEMPT_PATHS
                and not self._auth.allows(_header(scope, b"authorization"))
            ):
                await _plain(
                    scope,
                    enveloped_send,
                    401,
                    "401 Unauthorized: this proxy needs a user name and password "
                    "(basic auth; for go, a netrc entry)\n",
                    [(b"www-authenticate", CHALLENGE.encode())],
                )
                return
            if self.prefix:
                inner_scope: HTTPScope = {
                    **scope,
                    "path": path,
                    "raw_path": self._strip_raw(scope, path),
                }
                await inner(inner_scope, receive, enveloped_send)
            else:
                await inner(scope, receive, enveloped_send)
        finally:
            self._account(scope, status, sent, started, route, rid)
            request_id.reset(token)

    def _account(
        self, scope: HTTPScope, status: int, sent: int, started: float, route: str, rid: str
    ) -> None:
        """The access line and the request metrics of one answered request."""
        seconds = time.perf_counter() - started
        if access_log.isEnabledFor(logging.INFO):
            _log_access(scope, status, sent, seconds, route, rid)
        self._metrics.observe_request(route, scope["method"], status, seconds, sent)


def _log_access(
    scope: HTTPScope, status: int, sent: int, seconds: float, route: str, rid: str
) -> None:
    """The access line.  The record is made and handled directly: ``Logger.info`` would
    walk the stack for the caller's file and line, which no formatter here shows, and
    that walk was the costliest part of a cached hit's line."""
    client = scope.get("client")
    method = scope["method"]
    path = _loggable_path(scope)
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "bytes": sent,
        "duration_ms": round(seconds * 1000, 1),
        "route": route,
        "remote": client[0] if client else None,
        "user_agent": (_header(scope, b"user-agent") or b"").decode("latin-1")[:200],
        "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
        "request_id": rid,
    }
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        0,
        "%s %s %d %d %.1fms",
        (method, path, status, sent, seconds * 1000),
        None,
        extra={"fields": fields},
    )
    access_log.handle(record)


async def _plain(
    scope: HTTPScope,
    send: ASGISendCallable,
    status: int,
    text: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
            "trailers": False,
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": b"" if scope["method"] == "HEAD" else body,
            "more_body": False,
        }
    )
