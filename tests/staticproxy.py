"""A GOPROXY tree on disk, served over loopback HTTP by hypercorn, with faults on demand.

The same tree also serves ``GOPROXY=file://<root>``.  Bodies go out in chunks with a
Content-Length, or chunked without one when asked, so clients meet both.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from athens_trio._module import escape_path, escape_version

__all__ = ["Seen", "StaticProxy", "add_version", "static_proxy"]

_CHUNK = 256 << 10


def add_version(
    root: Path,
    module: str,
    version: str,
    *,
    time: str = "2024-01-02T03:04:05Z",
    mod: bytes | None = None,
    zip_bytes: bytes = b"PK\x05\x06" + bytes(18),
    listed: bool = True,
) -> None:
    """Write ``module@version``'s .info, .mod and .zip under ``root`` (escaped paths)."""
    directory = root / escape_path(module) / "@v"
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / escape_version(version)
    stem.with_name(stem.name + ".info").write_text(json.dumps({"Version": version, "Time": time}))
    stem.with_name(stem.name + ".mod").write_bytes(mod or f"module {module}\n".encode())
    stem.with_name(stem.name + ".zip").write_bytes(zip_bytes)
    if listed:
        with (directory / "list").open("a") as f:
            f.write(version + "\n")


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class StaticProxy:
    """The ASGI app: files under :attr:`root` at ``<url>/<path>``; :attr:`faults` maps a
    path suffix to a status to answer instead, :attr:`hang` suffixes never answer,
    :attr:`stall` ones stop after the first chunk of the body, :attr:`unsized` ones
    are sent chunked without a Content-Length, and :attr:`gzipped` maps a suffix to a
    body answered with ``Content-Encoding: gzip`` whatever the client accepts.  With
    :attr:`redirect_to` set, every request is answered 302 to it plus the path (less
    :attr:`base`); with :attr:`require_auth` set, a request without that Authorization
    header is answered 401."""

    root: Path
    base: str = ""
    url: str = ""
    faults: dict[str, int] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    unsized: set[str] = field(default_factory=set)
    stall: set[str] = field(default_factory=set)
    gzipped: dict[str, bytes] = field(default_factory=dict)
    redirect_to: str = ""
    require_auth: str = ""
    seen: list[Seen] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [seen.path for seen in self.seen]

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return
        path: str = scope["path"]
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append(Seen(path, headers))

        def matches(suffixes: Iterable[str]) -> str | None:
            return next((s for s in suffixes if path.endswith(s)), None)

        if matches(self.hang):
            await trio.sleep_forever()
        fault = matches(self.faults)
        relative = path.removeprefix(self.base).lstrip("/")
        file = self.root / relative
        gzipped = matches(self.gzipped)
        if self.require_auth and headers.get("authorization") != self.require_auth:
            await _answer(send, 401, b"who are you?\n")
        elif self.redirect_to:
            location = (self.redirect_to + path.removeprefix(self.base)).encode()
            await _answer(send, 302, b"elsewhere\n", ((b"location", location),))
        elif fault is not None:
            await _answer(send, self.faults[fault], b"injected fault\n")
        elif gzipped is not None:
            await _answer(send, 200, self.gzipped[gzipped], ((b"content-encoding", b"gzip"),))
        elif not path.startswith(self.base + "/") or ".." in relative.split("/"):
            await _answer(send, 404, b"not here\n")
        elif not file.is_file():
            await _answer(send, 404, b"not found\n")
        else:
            sized, stall = matches(self.unsized) is None, matches(self.stall) is not None
            await _send_file(send, file, sized=sized, stall=stall)


async def _answer(
    send: Callable[..., Any], status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_file(send: Callable[..., Any], file: Path, *, sized: bool, stall: bool) -> None:
    headers = [(b"content-type", b"application/octet-stream")]
    if sized:
        headers.append((b"content-length", str(file.stat().st_size).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    with file.open("rb") as f:
        while chunk := f.read(_CHUNK):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if stall:
                await trio.sleep_forever()
    await send({"type": "http.response.body", "body": b""})


@contextlib.asynccontextmanager
async def static_proxy(
    root: Path, base: str = "", *, tls: tuple[Path, Path] | None = None
) -> AsyncIterator[StaticProxy]:
    """Serve ``root`` at ``http://127.0.0.1:<port><base>`` until the block ends; at
    ``https://`` with ``tls``'s certificate and key files when given (helpers'
    self_signed)."""
    proxy = StaticProxy(root, base)
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    if tls is not None:
        config.certfile, config.keyfile = str(tls[0]), str(tls[1])
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(hypercorn_serve, proxy, config)
        proxy.url = binds[0] + base
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
