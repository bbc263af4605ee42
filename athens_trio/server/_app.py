"""The Quart-Trio app: the GOPROXY routes over an opened :class:`~athens_trio.Pipeline`.

``create_app(pipeline, go_version=...)`` returns an ASGI app; ``_serve.py`` runs it on
hypercorn.  Routes:

- ``GET|HEAD /<module>/@v/list`` (text), ``/@v/<version>.info`` (JSON), ``.mod`` (text),
  ``.zip`` (streamed, with ``Range``), ``/<module>/@latest`` (JSON) — the download
  protocol; what each path means is decided in ``_routing.py``.
- ``GET|HEAD /healthz`` (alive), ``/readyz`` (storage answers), ``/version`` (JSON).
- Any other method: 405.

Each request is logged in one line on the ``athens_trio.access`` logger: method, path,
status, body bytes and milliseconds.  Faults (500) are logged with their traceback on
``athens_trio.server``, upstream failures (502, 504) as warnings.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import AsyncIterator, Iterator
from types import TracebackType

import msgspec
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from quart import Response, request
from quart.wrappers.response import ResponseBody
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from .._exceptions import StorageError
from .._pipeline import Pipeline
from ..storage import StoredZip
from ._routing import (
    CACHE_IMMUTABLE,
    CACHE_NONE,
    ByteRange,
    Endpoint,
    ProxyRequest,
    RangeNotSatisfiableError,
    cache_control,
    content_etag,
    etag_matches,
    if_range_allows,
    most_severe,
    parse_proxy_path,
    parse_range,
    status_for,
    zip_etag,
)

__all__ = ["create_app"]

access_log = logging.getLogger("athens_trio.access")
log = logging.getLogger("athens_trio.server")

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
ZIP = "application/zip"

#: How long /readyz waits for the storage before it says 503.
READY_TIMEOUT = 5.0
#: Request bodies are never read; this bounds what one may buffer anyway.
MAX_REQUEST_BODY = 64 * 1024


class _AnyPath(BaseConverter):
    """Matches every path, slashes, dots and empty elements included, so that every
    protocol path reaches :func:`~._routing.parse_proxy_path` and nothing else judges it."""

    regex = r"[\s\S]*"
    part_isolating = False


class _ZipBody(ResponseBody):
    """Bytes ``[start, stop)`` of a stored zip, streamed in storage's chunks.  The chunk
    iterator (and the file it holds) is closed when the response ends, however it ends."""

    def __init__(self, stored: StoredZip, start: int, stop: int) -> None:
        self._stored = stored
        self._start = start
        self._stop = stop
        self._chunks: AsyncIterator[bytes] | None = None

    async def __aenter__(self) -> AsyncIterator[bytes]:
        self._chunks = self._stored.chunks(self._start, self._stop)
        return self._chunks

    async def __aexit__(self, exc_type: type, exc_value: BaseException, tb: TracebackType) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class _ProxyApp(QuartTrio):
    """QuartTrio with a one-line access log around every HTTP request."""

    async def asgi_app(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await super().asgi_app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0
        counts_body = scope["method"] != "HEAD"

        async def counting_send(message: ASGISendEvent) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and counts_body:
                sent += len(message["body"])
            await send(message)

        try:
            await super().asgi_app(scope, receive, counting_send)
        finally:
            # The raw path as sent (percent-encoded), so a hostile one cannot forge lines.
            raw = scope["raw_path"] or scope["path"].encode("utf-8", "backslashreplace")
            path = raw.decode("ascii", "backslashreplace")
            access_log.info(
                "%s %s %d %d %.1fms",
                scope["method"],
                path,
                status,
                sent,
                (time.perf_counter() - started) * 1000,
            )


@contextlib.contextmanager
def _one_error() -> Iterator[None]:
    """Let a group of plain errors (from a nursery inside the pipeline) out as the one
    that decides the status; a group holding a cancellation goes on untouched."""
    try:
        yield
    except BaseExceptionGroup as group:
        errors, others = group.split(Exception)
        if errors is None or others is not None:
            raise
        raise most_severe(errors) from group


def _text(body: str, status: int = 200, cache: str = CACHE_NONE) -> Response:
    return Response(body, status=status, content_type=TEXT, headers={"Cache-Control": cache})


def _error_response(error: Exception) -> Response:
    status = status_for(error)
    if status == 500:
        log.error("%s %r failed", request.method, request.path, exc_info=error)
        what = "storage failed" if isinstance(error, StorageError) else "unexpected error"
        response = _text(f"internal server error ({what}; see the proxy's log)\n", 500)
    else:
        if status in (502, 504):
            log.warning("%s %r: %s", request.method, request.path, error)
        response = _text(f"{error}\n", status)
    if isinstance(error, RangeNotSatisfiableError):
        response.headers["Content-Range"] = f"bytes */{error.size}"
    return response


def _not_modified(etag: str, cache: str) -> Response:
    response = Response(b"", status=304, headers={"ETag": etag, "Cache-Control": cache})
    del response.content_length
    return response


def _document(body: bytes, content_type: str, cache: str) -> Response:
    """A small body held in memory; the immutable ones get an ETag and If-None-Match."""
    headers = {"Cache-Control": cache}
    if cache == CACHE_IMMUTABLE:
        etag = content_etag(body)
        if etag_matches(request.headers.get("If-None-Match"), etag):
            return _not_modified(etag, cache)
        headers["ETag"] = etag
    return Response(body, content_type=content_type, headers=headers)


def _zip_response(wanted: ProxyRequest, stored: StoredZip) -> Response:
    assert wanted.version is not None
    etag = zip_etag(wanted.module, wanted.version, stored.size)
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return _not_modified(etag, CACHE_IMMUTABLE)
    headers = {"ETag": etag, "Cache-Control": CACHE_IMMUTABLE, "Accept-Ranges": "bytes"}
    if request.method == "HEAD":
        # Headers only: the body would be read from storage only to be dropped.
        response = Response(b"", content_type=ZIP, headers=headers)
        response.content_length = stored.size
        return response
    selected: ByteRange | None = None
    if if_range_allows(request.headers.get("If-Range"), etag):
        selected = parse_range(request.headers.get("Range"), stored.size)
    start, stop = (selected.start, selected.stop) if selected else (0, stored.size)
    response = Response(_ZipBody(stored, start, stop), content_type=ZIP, headers=headers)
    response.content_length = stop - start
    if selected is not None:
        response.status_code = 206
        response.headers["Content-Range"] = selected.content_range
    # Quart cuts a response that takes longer than RESPONSE_TIMEOUT to send; a large zip
    # to a slow client may take longer, and the client going away ends it anyway.
    response.timeout = None
    return response


def create_app(pipeline: Pipeline, *, go_version: str) -> QuartTrio:
    """The GOPROXY app over ``pipeline``; ``go_version`` is what ``/version`` reports."""
    # Imported here, not at the top: athens_trio/__init__.py may import this package.
    from .. import __version__

    app = _ProxyApp("athens_trio.server")
    app.config.update(MAX_CONTENT_LENGTH=MAX_REQUEST_BODY, PROVIDE_AUTOMATIC_OPTIONS=False)
    app.url_map.converters["anypath"] = _AnyPath
    app.url_map.merge_slashes = False
    protocol = pipeline.protocol
    version_document = msgspec.json.encode(
        {
            "athens_trio": __version__,
            "python": platform.python_version(),
            "trio": trio.__version__,
            "go": go_version,
        }
    )

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = _text(f"{status} {error.name}\n", status)
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    async def error(error: Exception) -> Response:
        return _error_response(error)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _text("ok\n")

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            with trio.fail_after(READY_TIMEOUT):
                await pipeline.storage.ready()
        except trio.TooSlowError:
            return _text(f"not ready: storage did not answer in {READY_TIMEOUT:g} s\n", 503)
        except Exception as exc:
            log.warning("readiness check failed: %s", exc)
            return _text(f"not ready: {exc}\n", 503)
        return _text("ready\n")

    @app.get("/version")
    async def version() -> Response:
        return Response(version_document, content_type=JSON, headers={"Cache-Control": CACHE_NONE})

    @app.get("/<anypath:_target>")
    async def proxy(_target: str) -> Response:
        # request.path, not the converter's value: the ASGI path, decoded exactly once.
        wanted = parse_proxy_path(request.path)
        cache = cache_control(wanted)
        with _one_error():
            if wanted.endpoint is Endpoint.LIST:
                versions = await protocol.list(wanted.module)
                return _text("".join(f"{v}\n" for v in versions), cache=cache)
            if wanted.endpoint is Endpoint.LATEST:
                return _document(await protocol.latest(wanted.module), JSON, cache)
            assert wanted.version is not None
            if wanted.endpoint is Endpoint.INFO:
                return _document(await protocol.info(wanted.module, wanted.version), JSON, cache)
            if wanted.endpoint is Endpoint.MOD:
                return _document(await protocol.go_mod(wanted.module, wanted.version), TEXT, cache)
            return _zip_response(wanted, await protocol.zip(wanted.module, wanted.version))

    return app
