"""Upstream GOPROXYs as the go command walks them: the plan, and an HTTP (or file://) client.

The plan is cmd/go's reading of ``GOPROXY``, ``GONOPROXY`` and ``GOPRIVATE``
(:func:`plan_from_env`, :func:`parse_goproxy`):

* ``GOPROXY`` empty or unset means :data:`DEFAULT_GOPROXY`.  Entries are separated by
  ``,`` (the next entry is tried only when this one said 404 or 410, "does not exist")
  or ``|`` (the next entry is tried after any error); the separator *after* an entry
  decides.  Blank entries are skipped; a list with none left is an error.
* ``direct`` (fetch from the VCS: the caller runs go) and ``off`` (refuse) end the list;
  whatever follows them is ignored.
* Anything else is a URL.  A word without ``.``, ``:`` or ``/`` is reserved and refused;
  something with a ``.`` or ``:`` but no ``:/`` (``corp-proxy.example``,
  ``localhost:8080``) gets ``https://`` in front.  Schemes are ``https``, ``http`` and
  ``file`` (a path only).  Userinfo (``https://user:pass@host``) is sent as basic auth;
  without it, an https proxy gets the netrc's login for its host, as go sends it
  (:func:`read_netrc`, :func:`auth_for`), never a plain http one.
* ``GONOPROXY`` (default ``GOPRIVATE``) is a comma-separated list of module path globs
  (:mod:`athens_trio._patterns`): a module matching one goes direct whatever
  ``GOPROXY`` says, even ``off``.

Where we are stricter than go: an http(s) URL must name a host, and no URL may carry a
query or a fragment (go would send them along on every request).  Redirects are
followed as go's web client follows them: at most ten, none from https to http.

:class:`GoproxyClient` walks the plan for one request as cmd/go's ``TryProxies`` does.
The first answer wins.  Reaching ``direct`` raises :class:`UseDirect`: the caller runs go
(with ``GOPROXY=direct``).  When the walk stops without an answer it raises the most
useful error it saw, ranked as go ranks them: a fault (:class:`UpstreamError`, or
:class:`FetchTimeoutError` for a timeout) before "does not exist"
(:class:`NotFoundError`), and a later error of the same rank before an earlier one.
So NotFoundError comes out only when every entry tried said 404/410 (or ``off``, which
go counts as "does not exist", :class:`ProxyOffError`).

Bodies are asked for unencoded, read raw in chunks (:data:`CHUNK_BYTES`) and capped
(go's limits for zips and go.mod files, small ones for the rest); an answer with a
Content-Encoding anyway is a fault of that entry, never decoded (see
:mod:`athens_trio._http`); a zip goes to a temporary file next to its
destination and is renamed there only when complete.  Error messages name the module,
the version and the proxy's scheme and host, never a URL's userinfo, a local path, or
what the upstream wrote in its error body.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import netrc
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import httpx
import msgspec
import trio

from athens_trio._exceptions import (
    AthensTrioError,
    ConfigError,
    FetchTimeoutError,
    InvalidRequestError,
    NotFoundError,
    StorageError,
    UpstreamError,
)
from athens_trio._http import (
    IDENTITY,
    NOT_EXIST_STATUSES,
    RedirectRefused,
    aclose_shielded,
    content_encoding,
    raw_chunks,
    send_following,
)
from athens_trio._module import (
    check_canonical_version,
    check_module_version,
    check_path,
    check_version_query,
    escape_path,
    escape_version,
    is_canonical_version,
    is_pseudo_version,
    pseudo_version_time,
)
from athens_trio._patterns import matches_any, split_patterns
from athens_trio._redact import redact_url

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_GOPROXY",
    "EntryKind",
    "GoproxyClient",
    "PlanEntry",
    "ProxyOffError",
    "ProxyPlan",
    "SizeLimits",
    "UpstreamInfo",
    "UseDirect",
    "NetrcLogins",
    "auth_for",
    "parse_goproxy",
    "plan_from_env",
    "read_netrc",
]

log = logging.getLogger("athens_trio.upstream")

DEFAULT_GOPROXY = "https://proxy.golang.org,direct"
"""What go uses when ``GOPROXY`` is unset or empty."""

CHUNK_BYTES = 1 << 20
"""Bodies are read, and zips written, this many bytes at a time."""

_T = TypeVar("_T")

NetrcLogins = Mapping[str, tuple[str, str]]
"""Login and password by machine name (lower case), from a netrc file."""


# ---------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------


class EntryKind(enum.StrEnum):
    PROXY = "proxy"
    DIRECT = "direct"
    OFF = "off"


@dataclass(frozen=True)
class PlanEntry:
    """One entry of a ``GOPROXY`` list.

    For a proxy, :attr:`url` is its base URL without userinfo or trailing slash;
    :attr:`username` and :attr:`password` are the userinfo, percent-decoded (sent as basic
    auth, never shown).  :attr:`fall_back_on_error` is true when a ``|`` follows it.
    """

    kind: EntryKind
    url: str = ""
    fall_back_on_error: bool = False
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @property
    def is_file(self) -> bool:
        return self.url.startswith("file:")

    @property
    def label(self) -> str:
        """How messages name this entry: scheme and host, nothing secret or local."""
        if self.kind is not EntryKind.PROXY:
            return self.kind.value
        if self.is_file:
            return "file:// GOPROXY"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def file_root(self) -> Path:
        return Path(unquote(urlsplit(self.url).path))


DIRECT = PlanEntry(EntryKind.DIRECT)
OFF = PlanEntry(EntryKind.OFF)


@dataclass(frozen=True)
class ProxyPlan:
    """The parsed ``GOPROXY`` list and the ``GONOPROXY`` patterns that bypass it."""

    entries: tuple[PlanEntry, ...]
    no_proxy: tuple[str, ...] = ()

    @property
    def has_proxies(self) -> bool:
        """Whether any entry is a proxy (else go alone fetches, or nothing does)."""
        return any(entry.kind is EntryKind.PROXY for entry in self.entries)

    def for_module(self, module: str) -> tuple[PlanEntry, ...]:
        """The entries go would try for ``module``: only ``direct`` if GONOPROXY matches."""
        if matches_any(self.no_proxy, module):
            return (DIRECT,)
        return self.entries

    def goes_direct(self, module: str) -> bool:
        """Whether ``module`` skips every proxy (so the caller may run go at once)."""
        return self.for_module(module)[0].kind is EntryKind.DIRECT


def plan_from_env(env: Mapping[str, str], *, config_key: str = "GoBinaryEnvVars") -> ProxyPlan:
    """The plan for a go process with environment ``env`` (GOPROXY, GONOPROXY, GOPRIVATE).

    Empty values count as unset, as in go.  Raises :class:`ConfigError` naming
    ``config_key`` for a GOPROXY go would refuse.
    """
    goproxy = env.get("GOPROXY") or DEFAULT_GOPROXY
    gonoproxy = env.get("GONOPROXY") or env.get("GOPRIVATE") or ""
    return parse_goproxy(goproxy, gonoproxy, config_key=config_key)


def parse_goproxy(
    goproxy: str, gonoproxy: str = "", *, config_key: str = "GoBinaryEnvVars"
) -> ProxyPlan:
    """Parse a ``GOPROXY`` value and a ``GONOPROXY`` pattern list, as cmd/go does."""
    entries: list[PlanEntry] = []
    rest = goproxy
    while rest:
        cut = min((i for i in (rest.find(","), rest.find("|")) if i >= 0), default=-1)
        if cut >= 0:
            text, fall_back, rest = rest[:cut], rest[cut] == "|", rest[cut + 1 :]
        else:
            text, fall_back, rest = rest, False, ""
        text = text.strip()
        if not text:
            continue
        if text == "off":
            entries.append(OFF)
            break
        if text == "direct":
            entries.append(DIRECT)
            break
        entries.append(_parse_proxy_url(text, fall_back, config_key))
    if not entries:
        raise ConfigError(config_key, "GOPROXY list is not the empty string, but has no entries")
    return ProxyPlan(tuple(entries), split_patterns(gonoproxy))


def _parse_proxy_url(text: str, fall_back: bool, config_key: str) -> PlanEntry:
    # Single words are reserved for keywords; a host without a scheme means https.
    if any(c in text for c in ".:/") and ":/" not in text and not text.startswith("/"):
        text = "https://" + text
    parts = urlsplit(text)
    shown = redact_url(text)

    def refuse(reason: str) -> ConfigError:
        return ConfigError(config_key, f"GOPROXY entry {shown!r}: {reason}")

    if any(c.isspace() or ord(c) < 0x20 for c in text):
        raise refuse("a proxy URL may not contain spaces or control characters")
    if parts.query or parts.fragment:
        raise refuse("a proxy URL may not have a query or fragment")
    if parts.scheme in ("http", "https"):
        try:
            port = parts.port  # urlsplit checks the port only when asked
        except ValueError:
            raise refuse("invalid port") from None
        if not parts.hostname:
            raise refuse("missing host")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if port is not None:
            netloc += f":{port}"
        return PlanEntry(
            EntryKind.PROXY,
            f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}",
            fall_back,
            unquote(parts.username or ""),
            unquote(parts.password or ""),
        )
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise refuse("invalid file:// proxy URL with non-path elements")
        return PlanEntry(EntryKind.PROXY, f"file://{parts.path.rstrip('/')}", fall_back)
    if not parts.scheme:
        raise refuse("invalid proxy URL missing scheme")
    raise refuse("invalid proxy URL scheme (must be https, http, file)")


# ---------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------


class UseDirect(Exception):
    """The walk reached ``direct``: the caller should fetch ``module`` with go itself.

    :attr:`after` holds the messages of the errors that entries before it gave.
    """

    def __init__(self, module: str, after: tuple[str, ...] = ()) -> None:
        super().__init__(f"{module}: GOPROXY says direct")
        self.module = module
        self.after = after

    def __reduce__(self) -> tuple[type[UseDirect], tuple[str, tuple[str, ...]]]:
        return (type(self), (self.module, self.after))


class ProxyOffError(NotFoundError):
    """The walk reached ``off``, which go counts as "does not exist"."""


class UpstreamInfo(msgspec.Struct, frozen=True, rename="pascal"):
    """An ``.info`` or ``@latest`` answer: ``{"Version": ..., "Time": ...}``."""

    version: str
    time: datetime


@dataclass(frozen=True)
class SizeLimits:
    """The largest body accepted for each kind of request, in bytes."""

    zip: int = 500 << 20  # go's codehost.MaxZipFile
    go_mod: int = 16 << 20  # go's codehost.MaxGoMod
    info: int = 64 << 10
    list: int = 4 << 20


_info_decoder = msgspec.json.Decoder(UpstreamInfo)


class _Body(Protocol):
    """A response body: :meth:`read` returns the next chunk, ``b""`` at the end."""

    length: int | None

    async def read(self) -> bytes: ...


class _HttpBody:
    def __init__(
        self, response: httpx.Response, chunks: AsyncIterator[bytes], what: str, label: str
    ) -> None:
        self.length: int | None = None
        declared = response.headers.get("content-length", "")
        if declared.isdigit():  # the body is read raw, and only unencoded ones are
            self.length = int(declared)
        self._chunks = chunks
        self._what = what
        self._label = label

    async def read(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return b""
        except httpx.HTTPError as exc:
            raise _http_failure(exc, self._what, self._label) from None


class _FileBody:
    def __init__(
        self, read: Callable[[int], Awaitable[bytes]], length: int, chunk: int, what: str
    ) -> None:
        self.length: int | None = length
        self._read = read
        self._chunk = chunk
        self._what = what

    async def read(self) -> bytes:
        try:
            return await self._read(self._chunk)
        except OSError as exc:
            raise UpstreamError(
                f"{self._what}: reading the file:// GOPROXY: {exc.strerror}"
            ) from None


def _http_failure(exc: httpx.HTTPError, what: str, label: str) -> UpstreamError:
    # httpx's messages describe the socket or the protocol, not the URL; the request URL
    # never carries userinfo anyway (it goes in the Authorization header).
    if isinstance(exc, httpx.TimeoutException):
        return FetchTimeoutError(f"{what}: {label} timed out ({type(exc).__name__})")
    message = f"{what}: {label} failed: {type(exc).__name__}: {exc}"
    if (errno := _socket_errno(exc)) is not None:
        # The socket's own reason, in go's words ("connect: connection refused").
        message += f" ({os.strerror(errno).lower()})"
    return UpstreamError(message)


def _socket_errno(exc: BaseException) -> int | None:
    """The errno of the first OSError in ``exc``'s causes (trio groups one per address)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


class GoproxyClient:
    """Asks the proxies of a :class:`ProxyPlan` over an injected :class:`httpx.AsyncClient`.

    ``timeout`` bounds each :meth:`list`, :meth:`latest`, :meth:`info` and :meth:`mod`
    call as a whole (every entry tried), ``download_timeout`` each :meth:`download_zip`;
    past it they raise :class:`FetchTimeoutError`.  The client's own timeouts (connect,
    read) apply per request and count as faults of that entry.  ``netrc`` holds the
    logins (:func:`read_netrc`) sent to https proxies whose URL has no userinfo.
    """

    def __init__(
        self,
        plan: ProxyPlan,
        client: httpx.AsyncClient,
        *,
        timeout: float = 60,
        download_timeout: float = 300,
        limits: SizeLimits = SizeLimits(),
        chunk_bytes: int = CHUNK_BYTES,
        netrc: NetrcLogins | None = None,
    ) -> None:
        self.plan = plan
        self._netrc: NetrcLogins = netrc or {}
        self._client = client
        self._timeout = timeout
        self._download_timeout = download_timeout
        self._limits = limits
        self._chunk = chunk_bytes

    # -- the protocol's five requests ---------------------------------------------------

    async def list(self, module: str) -> list[str]:
        """The versions upstream lists for ``module``, in its order.

        Only each line's first field counts (go allows a time after it); blank lines are
        skipped, and a version the project would not accept is dropped with a warning.
        """
        what = f"listing {module}"
        data = await self._walk(
            module,
            what,
            lambda entry: self._get(entry, module, "@v/list", what, self._limits.list),
            self._timeout,
        )
        versions: list[str] = []
        for fields in _list_lines(data):
            try:
                check_canonical_version(fields[0])
            except InvalidRequestError as exc:
                log.warning("%s: upstream listed an unusable version: %s", what, exc)
                continue
            versions.append(fields[0])
        return versions

    async def latest(self, module: str) -> UpstreamInfo:
        """``@latest``; where a proxy does not have it, go's fallback on its ``@v/list``."""
        what = f"{module}@latest"
        return await self._walk(
            module, what, lambda entry: self._latest(entry, module, what), self._timeout
        )

    async def info(self, module: str, query: str) -> UpstreamInfo:
        """``@v/<query>.info``: ``query`` is a version or anything go resolves (a branch)."""
        check_version_query(query)
        what = f"{module}@{query}"
        return await self._walk(
            module, what, lambda entry: self._info(entry, module, query, what), self._timeout
        )

    async def mod(self, module: str, version: str) -> bytes:
        """``@v/<version>.mod``; ``version`` must be canonical."""
        check_canonical_version(version)
        what = f"{module}@{version} go.mod"
        tail = f"@v/{escape_version(version)}.mod"
        return await self._walk(
            module,
            what,
            lambda entry: self._get(entry, module, tail, what, self._limits.go_mod),
            self._timeout,
        )

    async def download_zip(self, module: str, version: str, dest: Path) -> int:
        """Stream ``@v/<version>.zip`` to ``dest`` (its directory must exist); return its size.

        Written to a temporary file beside ``dest`` and renamed onto it when complete;
        nothing is left behind on failure or cancellation.
        """
        check_canonical_version(version)
        what = f"{module}@{version} zip"
        tail = f"@v/{escape_version(version)}.zip"
        return await self._walk(
            module,
            what,
            lambda entry: self._download(entry, module, tail, what, dest),
            self._download_timeout,
        )

    # -- walking the plan ----------------------------------------------------------------

    async def _walk(
        self,
        module: str,
        what: str,
        attempt: Callable[[PlanEntry], Awaitable[_T]],
        seconds: float,
    ) -> _T:
        check_path(module)  # refused before anything is asked, even with GOPROXY=off
        best: AthensTrioError | None = None
        seen: list[str] = []
        with trio.move_on_after(seconds) as deadline:
            for entry in self.plan.for_module(module):
                if entry.kind is EntryKind.DIRECT:
                    raise UseDirect(module, tuple(seen))
                error: NotFoundError | UpstreamError
                if entry.kind is EntryKind.OFF:
                    error = ProxyOffError(f"{what}: module lookup disabled by GOPROXY=off")
                else:
                    try:
                        return await attempt(entry)
                    except (NotFoundError, UpstreamError) as exc:
                        error = exc
                seen.append(str(error))
                not_exist = isinstance(error, NotFoundError)
                # go's ranking: a fault beats "does not exist"; the later of a rank wins.
                if not not_exist or best is None or isinstance(best, NotFoundError):
                    best = error
                if not not_exist and not entry.fall_back_on_error:
                    break
                log.debug("%s; trying the next GOPROXY entry", error)
        if deadline.cancelled_caught:
            raise FetchTimeoutError(f"{what}: the upstream proxies took longer than {seconds}s")
        assert best is not None, "a plan always has an entry"
        raise best

    # -- one entry -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _open(
        self, entry: PlanEntry, module: str, tail: str, what: str
    ) -> AsyncIterator[_Body]:
        """Open ``<entry>/<escaped module>/<tail>``: NotFoundError for 404/410 (or a
        missing file), UpstreamError (FetchTimeoutError) for any other failure."""
        escaped = escape_path(module)
        if entry.is_file:
            path = entry.file_root.joinpath(*escaped.split("/"), *tail.split("/"))
            try:
                file = await trio.open_file(path, "rb")
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise NotFoundError(f"{what}: not found in the {entry.label}") from None
            except OSError as exc:
                raise UpstreamError(f"{what}: {entry.label}: {exc.strerror}") from None
            async with file:
                size = os.fstat(file.fileno()).st_size
                yield _FileBody(file.read, size, self._chunk, what)
            return

        try:
            response = await self._get_following(entry, f"{entry.url}/{escaped}/{tail}", what)
        except httpx.HTTPError as exc:
            raise _http_failure(exc, what, entry.label) from None
        # Raw: counted against the cap as they come, never decoded (see _http).
        async with raw_chunks(response, self._chunk) as chunks:
            status = response.status_code
            if status in NOT_EXIST_STATUSES:
                raise NotFoundError(f"{what}: {entry.label} answered {status} (not found)")
            if not 200 <= status < 300:
                raise UpstreamError(
                    f"{what}: {entry.label} answered {status} {response.reason_phrase}"
                )
            if encoding := content_encoding(response):
                raise UpstreamError(
                    f"{what}: {entry.label} answered with Content-Encoding {encoding!r} "
                    "though asked for identity"
                )
            yield _HttpBody(response, chunks, what, entry.label)

    def auth(self, entry: PlanEntry) -> httpx.Auth | None:
        """The credentials ``entry`` gets (:func:`auth_for`)."""
        return auth_for(entry, self._netrc)

    async def status_of(self, entry: PlanEntry, url: str, what: str) -> int:
        """The status ``entry`` answers a GET of ``url`` with, redirects followed as for
        modules (UpstreamError for a refused one; httpx's errors as they come)."""
        response = await self._get_following(entry, url, what)
        await aclose_shielded(response)
        return response.status_code

    async def _get_following(self, entry: PlanEntry, url: str, what: str) -> httpx.Response:
        """GET ``url``, streamed, following redirects as go does (:func:`send_following`:
        at most 10, never from https to http)."""
        request = self._client.build_request("GET", url, headers=IDENTITY)
        try:
            return await send_following(self._client, request, self.auth(entry))
        except RedirectRefused as exc:
            raise UpstreamError(f"{what}: {entry.label} {exc}") from None

    async def _copy(
        self,
        entry: PlanEntry,
        module: str,
        tail: str,
        what: str,
        cap: int,
        sink: Callable[[bytes], Awaitable[None]],
    ) -> int:
        """Copy the body into ``sink`` chunk by chunk, refusing more than ``cap`` bytes."""
        too_large = UpstreamError(f"{what}: {entry.label} sent more than {cap} bytes")
        async with self._open(entry, module, tail, what) as body:
            if body.length is not None and body.length > cap:
                raise too_large
            total = 0
            while chunk := await body.read():
                total += len(chunk)
                if total > cap:
                    raise too_large
                await sink(chunk)
            return total

    async def _get(self, entry: PlanEntry, module: str, tail: str, what: str, cap: int) -> bytes:
        parts: list[bytes] = []

        async def keep(chunk: bytes) -> None:
            parts.append(chunk)

        await self._copy(entry, module, tail, what, cap, keep)
        return b"".join(parts)

    async def _info(self, entry: PlanEntry, module: str, query: str, what: str) -> UpstreamInfo:
        tail = f"@v/{escape_version(query)}.info"
        info = self._decode_info(
            await self._get(entry, module, tail, what, self._limits.info), module, what, entry
        )
        # As go: asked for a version valid for the module, a proxy must answer that
        # version or fail (a branch, or v2.0.0 of a v1 path, may resolve to another).
        if info.version != query and _valid_for(module, query):
            raise UpstreamError(f"{what}: {entry.label} answered for {info.version} instead")
        return info

    async def _latest(self, entry: PlanEntry, module: str, what: str) -> UpstreamInfo:
        try:
            data = await self._get(entry, module, "@latest", what, self._limits.info)
        except NotFoundError:
            pass  # @latest is optional in the protocol; go falls back on the list
        else:
            return self._decode_info(data, module, what, entry)
        listed = await self._get(entry, module, "@v/list", what, self._limits.list)
        # go's fallback: the newest by the time a line gives or a pseudo-version holds;
        # tagged versions without a time are ignored (go's Versions would have found them).
        best: tuple[datetime, str, bool] | None = None
        for fields in _list_lines(listed):
            version, from_pseudo = fields[0], False
            try:
                check_canonical_version(version)
                if len(fields) >= 2:
                    when = datetime.fromisoformat(fields[1])
                elif is_pseudo_version(version):
                    when, from_pseudo = pseudo_version_time(version), True
                else:
                    continue
            except ValueError:  # InvalidVersionError is one too
                continue
            if when.tzinfo is not None and (best is None or when > best[0]):
                best = (when, version, from_pseudo)
        if best is None:
            raise NotFoundError(f"{what}: {entry.label} has no versions (no commits)")
        when, version, from_pseudo = best
        if from_pseudo:
            # The pseudo-version's time is UTC; the proxy's .info has the commit's own.
            return await self._info(entry, module, version, f"{module}@{version}")
        return UpstreamInfo(version, when)

    @staticmethod
    def _decode_info(data: bytes, module: str, what: str, entry: PlanEntry) -> UpstreamInfo:
        try:
            info = _info_decoder.decode(data)
            check_module_version(module, info.version)
            check_canonical_version(info.version)
        except (msgspec.DecodeError, msgspec.ValidationError, InvalidRequestError) as exc:
            problem = str(exc)[:200]
            raise UpstreamError(f"{what}: invalid response from {entry.label}: {problem}") from None
        return info

    async def _download(
        self, entry: PlanEntry, module: str, tail: str, what: str, dest: Path
    ) -> int:
        spool = _Spool(dest, what)
        try:
            size = await self._copy(entry, module, tail, what, self._limits.zip, spool.write)
            await spool.finish()
        finally:
            spool.discard()
        return size


class _Spool:
    """A download written to a temporary file beside ``dest`` and renamed onto it once
    complete; nothing is left behind on failure or cancellation (:meth:`discard`).

    Each chunk is held until the next one comes, so the last one is written, the file
    closed and renamed in one thread hop: a zip of one chunk (most) costs one hop rather
    than creating the file on the event loop and a hop per write and for the close."""

    def __init__(self, dest: Path, what: str) -> None:
        self._dest = dest
        self._what = what
        self._held = b""
        self._file: BinaryIO | None = None
        self._temp: Path | None = None
        self._renamed = False

    async def write(self, chunk: bytes) -> None:
        if self._held:
            held, self._held = self._held, b""
            await trio.to_thread.run_sync(self._write_sync, held)
        self._held = chunk

    async def finish(self) -> None:
        """Write what is held, close the file and give it its name."""
        held, self._held = self._held, b""
        await trio.to_thread.run_sync(self._finish_sync, held)

    def _write_sync(self, chunk: bytes) -> None:
        file = self._opened()
        try:
            file.write(chunk)
        except OSError as exc:
            raise StorageError(f"{self._what}: writing the zip: {exc.strerror}") from None

    def _finish_sync(self, chunk: bytes) -> None:
        self._write_sync(chunk)  # (creating the file even for an empty body)
        file, temp = self._opened(), self._temp
        assert temp is not None  # named when opened
        try:
            file.close()
            os.replace(temp, self._dest)
        except OSError as exc:
            raise StorageError(f"{self._what}: writing the zip: {exc.strerror}") from None
        self._renamed = True

    def _opened(self) -> BinaryIO:
        if self._file is None:
            try:
                fd, name = tempfile.mkstemp(
                    prefix=f".{self._dest.name}.", suffix=".part", dir=self._dest.parent
                )
            except OSError as exc:
                raise StorageError(
                    f"{self._what}: cannot create a temporary file: {exc.strerror}"
                ) from None
            self._temp = Path(name)
            self._file = os.fdopen(fd, "wb")
        return self._file

    def discard(self) -> None:
        """Close the temporary file and remove it unless it was renamed: quick and
        synchronous, so that it also runs while being cancelled."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self._temp is not None and not self._renamed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)


def read_netrc(path: Path) -> dict[str, tuple[str, str]]:
    """The logins of the netrc file at ``path`` by machine name (lower case).

    ``default`` is not used (go ignores it).  A file that cannot be read or parsed gives
    none, with a warning: go's parser skips what it does not understand, and the file
    is go's first.  Blocking: read once, at start.
    """
    try:
        parsed = netrc.netrc(str(path))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    except netrc.NetrcParseError as exc:
        reason = f"cannot parse line {exc.lineno}"  # its message may quote a secret
    else:
        return {
            machine.lower(): (login or "", password or "")
            for machine, (login, _account, password) in parsed.hosts.items()
            if machine != "default"
        }
    log.warning("netrc: %s; the upstream proxies get no credentials from it", reason)
    return {}


def auth_for(entry: PlanEntry, logins: NetrcLogins) -> httpx.BasicAuth | None:
    """The credentials for requests to ``entry`` (redirects aside: they go with the
    first request only): its userinfo, else the login ``logins`` has for its host
    (``host:port`` where it has a port), https only.

    Never a netrc password over plain http, where anyone on the path could read it
    (go sends them over https only too).
    """
    if entry.username or entry.password:
        return httpx.BasicAuth(entry.username, entry.password)
    if not entry.url.startswith("https://"):
        return None
    # As go: the machine is the proxy URL's host as written (with its port if it has
    # one, ":443" too, and an IPv6 address's brackets), not httpx's normal form of it.
    machine = urlsplit(entry.url).netloc
    login = logins.get(machine.lower())
    return httpx.BasicAuth(*login) if login is not None else None


def _valid_for(module: str, version: str) -> bool:
    """Whether ``version`` is a canonical version ``module``'s path allows (module.Check)."""
    try:
        check_module_version(module, version)
    except InvalidRequestError:
        return False
    return is_canonical_version(version)


def _list_lines(data: bytes) -> list[list[str]]:
    """The whitespace-separated fields of each non-blank line of a ``@v/list`` body."""
    text = data.decode("utf-8", errors="replace")
    return [fields for line in text.split("\n") if (fields := line.split())]
