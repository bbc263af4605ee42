"""The Quart-Trio app: the GOPROXY routes over an opened :class:`~athens_trio.Pipeline`.

``create_app(pipeline, go_version=...)`` returns an ASGI app; ``_serve.py`` runs it on
hypercorn.  Routes (all under the ``PathPrefix``):

- ``GET|HEAD /<module>/@v/list`` (text), ``/@v/<version>.info`` (JSON), ``.mod`` (text),
  ``.zip`` (streamed, with ``Range``), ``/<module>/@latest`` (JSON) — the download
  protocol; what each path means, its content type and its caching are in the endpoint
  table (``athens_trio/_endpoints.py``), read by ``_routing.py``.
- ``GET|HEAD /healthz`` (alive), ``/readyz`` (storage answers), ``/version`` (JSON).
- ``/metrics`` (Prometheus, ``_metrics``), ``/catalog`` and ``/index`` (what storage
  holds, ``_catalog``), ``/`` and ``/robots.txt`` (``_pages``).
- Any other method: 405.

Around every request, the envelope (``_envelope``): request ID, PathPrefix, basic auth,
one access line on ``athens_trio.access`` and the request metrics.  Faults (500) are
logged with their traceback on ``athens_trio.server``, upstream failures (502, 504) as
warnings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope
from quart import Response, request
from quart.wrappers.response import ResponseBody
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from .._endpoints import (
    CACHE_IMMUTABLE,
    CACHE_NONE,
    CACHE_SHORT,
    INFO,
    JSON,
    LATEST,
    LIST,
    MOD,
    TEXT,
    ZIP,
    Endpoint,
)
from .._exceptions import (
    GoBinaryError,
    NotFoundError,
    OverloadedError,
    RangeNotSatisfiableError,
    Redirected,
    StorageError,
    ValidatorError,
    status_of,
)
from .._module import is_canonical_version
from .._pipeline import Pipeline
from .._redact import redact_urls
from ..download import DownloadProtocol
from ..storage import TAKEDOWN_MARKER, StoredZip
from . import _admin
from ._auth import BasicAuth
from ._catalog import (
    DEFAULT_INDEX_LIMIT,
    DEFAULT_PAGE_SIZE,
    MAX_INDEX_LIMIT,
    MAX_PAGE_SIZE,
    CatalogBusyError,
    CatalogLane,
    Timestamps,
    catalog_page,
    index_entries,
    parse_count,
    parse_timestamp,
)
from ._envelope import Envelope
from ._express import ExpressLane
from ._fastpath import FastPath, ServedHook
from ._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ._metrics import Metrics
from ._pagecache import on_local_filesystem
from ._pages import ROBOTS_TXT, home_page, proxy_url
from ._routing import (
    ByteRange,
    ProxyRequest,
    content_etag,
    etag_matches,
    if_range_allows,
    parse_proxy_path,
    parse_range,
    zip_etag,
)

__all__ = ["create_app"]

log = logging.getLogger("athens_trio.server")

HTML = "text/html; charset=utf-8"

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


class _StreamBody(ResponseBody):
    """A body streamed from elsewhere; ``stack`` (the upstream response) is closed when
    the response ends, however it ends, HEAD included."""

    def __init__(self, chunks: AsyncIterator[bytes], stack: contextlib.AsyncExitStack) -> None:
        self._chunks = chunks
        self._stack = stack

    async def __aenter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def __aexit__(self, exc_type: type, exc_value: BaseException, tb: TracebackType) -> None:
        await self._stack.aclose()


class _ProxyApp(QuartTrio):
    """QuartTrio with the envelope (``_envelope``) around every HTTP request, and inside
    it the fast path (``_fastpath``) for stored files before Quart's dispatch."""

    envelope: Envelope
    fast_path: FastPath | None = None

    async def asgi_app(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await super().asgi_app(scope, receive, send)
            return
        await self.envelope(scope, receive, send, self._inside_envelope)

    async def _inside_envelope(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if self.fast_path is not None and await self.fast_path(scope, send):
            return
        await self.past_fast_path(scope, receive, send)

    async def past_fast_path(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Quart's dispatch: what answers a request the fast path declined."""
        await super().asgi_app(scope, receive, send)


def _text(body: str, status: int = 200, cache: str = CACHE_NONE) -> Response:
    return Response(body, status=status, content_type=TEXT, headers={"Cache-Control": cache})


def server_paths(config_paths: list[str]) -> list[str]:
    """The directories an error body must never show: the given ones, the temporary
    directory and HOME, resolved, longest first (so a nested one is cut whole)."""
    found = {*config_paths, tempfile.gettempdir(), os.environ.get("HOME", "")}
    resolved = {str(Path(p).expanduser().resolve()) for p in found if p} | {p for p in found if p}
    return sorted((p for p in resolved if p not in ("/", "")), key=len, reverse=True)


def scrub_paths(text: str, paths: list[str]) -> str:
    """``text`` with every server path in ``paths`` (and what follows it up to a space
    or quote) replaced by ``<server path>``: a last line of defence for error bodies."""
    for path in paths:
        text = re.sub(re.escape(path) + r"[^\s'\"]*", "<server path>", text)
    return text


def _error_response(error: Exception, paths: list[str] | None = None) -> Response:
    status = status_of(error)
    if status == 500:
        log.error("%s %r failed", request.method, request.path, exc_info=error)
        if isinstance(error, GoBinaryError | ValidatorError):
            # The operator's setup is broken; saying how helps whoever reads go's output
            # (without the go binary's path or the hook's credentials).
            what = scrub_paths(redact_urls(str(error)), paths or [])
        elif isinstance(error, StorageError):
            what = "storage failed"
        else:
            what = "unexpected error"
        response = _text(f"internal server error ({what}; see the proxy's log)\n", 500)
    else:
        if status in (502, 504):
            log.warning("%s %r: %s", request.method, request.path, error)
        response = _text(f"{scrub_paths(redact_urls(str(error)), paths or [])}\n", status)
    if isinstance(error, RangeNotSatisfiableError):
        response.headers["Content-Range"] = f"bytes */{error.size}"
    if isinstance(error, Redirected):
        response.headers["Location"] = error.location
    if isinstance(error, (CatalogBusyError, OverloadedError)):
        response.headers["Retry-After"] = str(error.retry_after)
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
        return _not_modified(etag, ZIP.cache)
    if stored.redirect_url is not None and request.method == "GET":
        # Storage hands the bytes out itself (S3's RedirectZips: a presigned GET, so a
        # HEAD is answered here).  The URL expires: the redirect is never cached.
        headers = {"Location": stored.redirect_url, "Cache-Control": CACHE_NONE}
        return Response(b"", status=307, headers=headers)
    headers = {"ETag": etag, "Cache-Control": ZIP.cache, "Accept-Ranges": "bytes"}
    if request.method == "HEAD":
        # Headers only: the body would be read from storage only to be dropped.
        response = Response(b"", content_type=ZIP.content_type, headers=headers)
        response.content_length = stored.size
        return response
    selected: ByteRange | None = None
    if if_range_allows(request.headers.get("If-Range"), etag):
        selected = parse_range(request.headers.get("Range"), stored.size)
    start, stop = (selected.start, selected.stop) if selected else (0, stored.size)
    response = Response(
        _ZipBody(stored, start, stop), content_type=ZIP.content_type, headers=headers
    )
    response.content_length = stop - start
    if selected is not None:
        response.status_code = 206
        response.headers["Content-Range"] = selected.content_range
    # Quart cuts a response that takes longer than RESPONSE_TIMEOUT to send; a large zip
    # to a slow client may take longer, and the client going away ends it anyway.
    response.timeout = None
    return response


async def _document_for(protocol: DownloadProtocol, wanted: ProxyRequest) -> bytes:
    """The body of a list, latest, info or mod request (everything but a zip)."""
    if wanted.endpoint is LIST:
        return "".join(f"{v}\n" for v in await protocol.list(wanted.module)).encode()
    if wanted.endpoint is LATEST:
        return await protocol.latest(wanted.module)
    assert wanted.version is not None
    if wanted.endpoint is MOD:
        return await protocol.go_mod(wanted.module, wanted.version)
    assert wanted.endpoint is INFO, "a zip is streamed, never held as a document"
    return await protocol.info(wanted.module, wanted.version)


def _fast_path_served(pipeline: Pipeline) -> ServedHook | None:
    """What the fast path tells of a hit: the protocol's outer wrappers (last served for
    retention, what clients ask for to the prefetcher) never see one."""
    activity, prefetcher = pipeline.activity, pipeline.prefetcher
    if activity is None and prefetcher is None:
        return None

    def served(endpoint: Endpoint, module: str, version: str, body: bytes | None) -> None:
        if activity is not None:
            activity.last_served.mark(module, version)
        if prefetcher is not None and endpoint is not ZIP:
            prefetcher.asked(module, version)
            if endpoint is MOD and body is not None:
                prefetcher.served(body)

    return served


def express_lane(app: QuartTrio, config: HypercornConfig) -> ExpressLane | None:
    """The express lane (``_express``) over ``app``'s envelope, fast path and Quart;
    None if the app has no fast path (then every request goes through hypercorn)."""
    if not isinstance(app, _ProxyApp) or app.fast_path is None:
        return None
    return ExpressLane(app.envelope, app.fast_path, app.past_fast_path, config)


def create_app(
    pipeline: Pipeline,
    *,
    go_version: str,
    metrics: Metrics | None = None,
    fast_path: bool = True,
) -> QuartTrio:
    """The GOPROXY app over ``pipeline``; ``go_version`` is what ``/version`` reports.

    ``metrics`` is what ``/metrics`` shows (a fresh :class:`Metrics` bound to the
    pipeline if None; ``serve`` passes one that also sees its connections).
    ``fast_path=False`` answers stored files through Quart too (what the fast path is
    tested against)."""
    # Imported here, not at the top: athens_trio/__init__.py may import this package.
    from .. import __version__

    config = pipeline.config
    if metrics is None:
        metrics = Metrics()
        metrics.bind(pipeline)
    auth = (
        BasicAuth(config.basic_auth_user, config.basic_auth_pass)
        if config.basic_auth_enabled
        else None
    )
    app = _ProxyApp("athens_trio.server")
    app.envelope = Envelope(prefix=config.path_prefix, auth=auth, metrics=metrics)
    if fast_path:
        app.fast_path = FastPath(
            pipeline.storage,
            cache_bytes=config.stored_file_cache_bytes,
            version_check=pipeline.filter_check,
            url_map=app.url_map,
            catch_all="proxy",
            served=_fast_path_served(pipeline),
            takedowns=(pipeline.storage_root / TAKEDOWN_MARKER if pipeline.storage_root else None),
            # Stored zips are opened on the event loop only on a local filesystem.
            loop_opens=(
                pipeline.storage_root is not None and on_local_filesystem(pipeline.storage_root)
            ),
        )
        metrics.bind_fast_path(app.fast_path)
    prefix = app.envelope.prefix
    timestamps = Timestamps()
    catalog_lane = CatalogLane()
    error_paths = server_paths(
        [
            str(config.disk_root),
            str(config.go_get_root),
            config.go_toolchain_dir,
            config.go_binary if "/" in config.go_binary else "",
        ]
    )
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
        return _error_response(error, error_paths)

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
            # Unauthenticated: the cause, but not where storage lives nor its secrets.
            return _text(f"not ready: {scrub_paths(redact_urls(str(exc)), error_paths)}\n", 503)
        return _text("ready\n")

    @app.get("/version")
    async def version() -> Response:
        return Response(version_document, content_type=JSON, headers={"Cache-Control": CACHE_NONE})

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(
            await metrics.render(),
            content_type=METRICS_CONTENT_TYPE,
            headers={"Cache-Control": CACHE_NONE},
        )

    @app.get("/catalog")
    async def catalog() -> Response:
        page_size = parse_count(
            request.args.get("pagesize"),
            name="pagesize",
            default=DEFAULT_PAGE_SIZE,
            maximum=MAX_PAGE_SIZE,
        )
        page = await catalog_page(
            pipeline.storage, catalog_lane, request.args.get("token", ""), page_size
        )
        return Response(
            msgspec.json.encode(page), content_type=JSON, headers={"Cache-Control": CACHE_NONE}
        )

    @app.get("/index")
    async def index() -> Response:
        since_arg = request.args.get("since", "")
        since = parse_timestamp(since_arg) if since_arg else None
        limit = parse_count(
            request.args.get("limit"),
            name="limit",
            default=DEFAULT_INDEX_LIMIT,
            maximum=MAX_INDEX_LIMIT,
        )
        entries = await index_entries(pipeline.storage, catalog_lane, timestamps, since, limit)
        body = b"".join(msgspec.json.encode(entry) + b"\n" for entry in entries)
        return Response(body, content_type=JSON, headers={"Cache-Control": CACHE_NONE})

    @app.get("/")
    async def home() -> Response:
        url = proxy_url(request.scheme, request.host, prefix)
        page = home_page(url=url, auth=auth is not None, version=__version__)
        return Response(page, content_type=HTML, headers={"Cache-Control": CACHE_NONE})

    @app.get("/robots.txt")
    async def robots() -> Response:
        return _text(ROBOTS_TXT, cache=CACHE_SHORT)

    @app.get("/sumdb/<host>/supported")
    async def sumdb_supported(host: str) -> Response:
        # 404 makes go talk to the checksum database itself, as without a proxy.
        if pipeline.sumdb is None or not pipeline.sumdb.supported(host):
            raise NotFoundError(f"{host!r} is not a checksum database this proxy serves")
        return _text("", cache=CACHE_NONE)

    @app.get("/sumdb/<host>/<anypath:path>")
    async def sumdb(host: str, path: str) -> Response:
        if pipeline.sumdb is None:
            raise NotFoundError("this proxy serves no checksum database")
        stack = contextlib.AsyncExitStack()
        try:
            upstream = await stack.enter_async_context(pipeline.sumdb.forward(host, path))
        except BaseException:
            await stack.aclose()
            raise
        if request.method == "HEAD":
            await stack.aclose()
            response = Response(b"", status=upstream.status, headers=upstream.headers)
        else:
            response = Response(_StreamBody(upstream.body, stack), status=upstream.status)
            response.headers.update(upstream.headers)
            response.timeout = None
        # The upstream's length (raw bytes are passed on) for GET and HEAD alike, not
        # the empty body's; none if it sent none.  httpx's header names are lower case.
        length = upstream.headers.get("content-length")
        if length is None:
            del response.content_length
        else:
            response.content_length = int(length)
        return response

    # The operator's routes (admin API, /ui): helper ops's one hook into the app.
    _admin.register(
        app,
        pipeline,
        auth=auth is not None,
        forget_stored=app.fast_path.forget if app.fast_path is not None else None,
    )

    @app.get("/<anypath:_target>")
    async def proxy(_target: str) -> Response:
        # The ASGI path as sent (decoded once, PathPrefix cut off): not the converter's
        # value nor request.path, which werkzeug strips of leading slashes.
        wanted = parse_proxy_path(request.scope["path"])
        fast = app.fast_path
        if wanted.endpoint is ZIP:
            assert wanted.version is not None
            stored = await protocol.zip(wanted.module, wanted.version)
            if fast is not None:
                fast.remember_zip(wanted.module, wanted.version, stored)
            return _zip_response(wanted, stored)
        body = await _document_for(protocol, wanted)
        if fast is not None and wanted.version is not None and is_canonical_version(wanted.version):
            fast.remember(wanted.endpoint, wanted.module, wanted.version, body)
        return _document(
            body, wanted.endpoint.content_type, wanted.endpoint.cache_control(wanted.version)
        )

    return app
