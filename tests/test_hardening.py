"""Hardening of the HTTP side: stalled readers, request smuggling, the catalog's own
lane, secrets and server paths kept out of answers and logs."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from pathlib import Path

import httpx
import pytest
import trio

from athens_trio import Backend, Config, DiskStorage, MemoryStorage
from athens_trio._exceptions import UpstreamError
from athens_trio._redact import redact_url, redact_urls
from athens_trio.server._catalog import CATALOG_WAITING, CATALOG_WALKS

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import raw_request, served, settle, store_version

MODULE = "example.com/big"


async def _small_window_request(port: int, target: str, receive_buffer: int) -> trio.SocketStream:
    """A connection with a small receive buffer that asks for ``target``."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return stream


async def _closed_by_server(stream: trio.SocketStream) -> bool:
    """Read to the end: whether the server closed (or reset) the connection."""
    try:
        while await stream.receive_some(1 << 20):
            pass
    except trio.BrokenResourceError:
        pass
    return True


def _storage(kind: str, config: Config) -> Backend:
    # Memory: streamed in chunks; disk: a zip the page cache holds goes by sendfile(2).
    return MemoryStorage() if kind == "memory" else DiskStorage(config.disk_root)


@pytest.mark.parametrize("kind", ["memory", "disk"])
async def test_clients_that_stop_reading_are_dropped_after_write_timeout(
    tmp_path: Path, go_fixtures: GoFixtures, kind: str
) -> None:
    config = make_config(
        tmp_path, "/nonexistent/go", go_fixtures, max_connections=3, write_timeout=1
    )
    storage = _storage(kind, config)
    await store_version(storage, tmp_path, MODULE, "v1.0.0", 8 << 20)
    async with served(config, storage=storage) as server:
        stalled = [
            await _small_window_request(server.port, f"/{MODULE}/@v/v1.0.0.zip", 4096)
            for _ in range(3)
        ]
        try:
            # Every slot is held by a client that reads nothing; once they are dropped
            # the next connection is served.  Without a write timeout it never is.
            with trio.fail_after(30):
                health = await raw_request(server.url, b"/healthz")
            assert health.status == 200
            with trio.fail_after(10):
                for stream in stalled:
                    assert await _closed_by_server(stream)
        finally:
            for stream in stalled:
                await stream.aclose()


@pytest.mark.parametrize("kind", ["memory", "disk"])
async def test_a_slow_reader_that_keeps_reading_gets_the_whole_zip(
    tmp_path: Path, go_fixtures: GoFixtures, kind: str
) -> None:
    # The timeout bounds a stall, not the response: 4 MiB read in small sips over more
    # than WriteTimeout seconds arrives whole.  On disk, the kernel drops the zip's pages
    # now and then while it is sent by sendfile: the rest comes from a thread's reads.
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures, write_timeout=1)
    storage = _storage(kind, config)
    data = await store_version(storage, tmp_path, MODULE, "v1.0.0", 4 << 20)
    stored = config.disk_root / MODULE / "@v" / "v1.0.0.zip"

    def drop_pages() -> None:
        fd = os.open(stored, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    async with served(config, storage=storage) as server:
        stream = await _small_window_request(server.port, f"/{MODULE}/@v/v1.0.0.zip", 65536)
        received = bytearray()
        started = trio.current_time()
        async with stream:
            with trio.fail_after(60):
                while len(received) < len(data) or not received.endswith(data):
                    chunk = await stream.receive_some(64 << 10)
                    assert chunk, "closed before the zip was whole"
                    received += chunk
                    if kind == "disk":
                        drop_pages()
                    await trio.sleep(0.03)
        assert trio.current_time() - started > 1
        assert received.endswith(data)


async def _exchange(port: int, request: bytes) -> tuple[bytes, bool]:
    """Send ``request`` raw and read the first response (it has a Content-Length); then
    up to 2 s more: what came back in all, and whether the server closed the connection."""
    received = bytearray()
    closed = False
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)

        async def receive() -> None:
            nonlocal closed
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                chunk = b""
            closed = not chunk
            received.extend(chunk)

        with trio.fail_after(30):
            while not closed:
                head, found, body = bytes(received).partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if found and length and len(body) >= int(length[1]):
                    break
                await receive()
        with trio.move_on_after(2):
            while not closed:
                await receive()
    return bytes(received), closed


async def test_content_length_with_transfer_encoding_is_400_and_closes(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    # RFC 9112 6.1: a front proxy that frames by Content-Length would see the rest as
    # the body, this server (by Transfer-Encoding) as a second request: smuggling.
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures, keep_alive_timeout=30)
    async with served(config, storage=MemoryStorage()) as server:
        ambiguous = (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        received, closed = await _exchange(server.port, ambiguous)
        assert received.startswith(b"HTTP/1.1 400 "), received
        assert b"connection: close" in received.lower()
        assert closed
        # With a request smuggled behind it, that one is never answered.  (Whether
        # the 400 itself gets out depends on when h11 sees the bytes after it: the
        # connection may be closed first.)
        received, closed = await _exchange(
            server.port, ambiguous + b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert b"HTTP/1.1 200" not in received, received
        assert received.count(b"HTTP/1.1 ") <= 1, received
        assert closed
        # Either header alone is fine, and the connection is kept.
        for header in (b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n"):
            body = b"0\r\n\r\n" if b"chunked" in header else b""
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n" + body
            received, closed = await _exchange(server.port, request)
            assert received.startswith(b"HTTP/1.1 200 "), received
            assert not closed


class _HeldWalks(DiskStorage):
    """Disk storage whose catalog walks block in their thread until released."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()
        self.walking = 0

    def _catalog_sync(self) -> list[tuple[str, str]]:
        self.walking += 1
        self.release.wait(60)
        return super()._catalog_sync()


async def test_catalog_walks_keep_to_their_own_lane_and_zips_are_served(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    storage = _HeldWalks(tmp_path / "storage")
    data = await store_version(storage, tmp_path, MODULE, "v1.0.0", 1 << 20)
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures)
    default_threads = trio.to_thread.current_default_thread_limiter()
    clients = 50
    async with (
        served(config, storage=storage) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
        trio.open_nursery() as nursery,
    ):
        statuses: list[int] = []
        retry_after: set[str | None] = set()

        async def walk(path: str) -> None:
            response = await http.get(path)
            statuses.append(response.status_code)
            if response.status_code == 503:
                retry_after.add(response.headers.get("Retry-After"))

        try:
            for n in range(clients):
                nursery.start_soon(walk, "/index" if n % 2 else "/catalog")
            refused = clients - CATALOG_WALKS - CATALOG_WAITING
            assert await settle(
                lambda: storage.walking == CATALOG_WALKS and len(statuses) == refused
            )
            assert statuses == [503] * refused
            assert retry_after == {"5"}
            # The walks in progress hold none of the threads storage reads share ...
            assert default_threads.borrowed_tokens == 0
            # ... so a stored zip is served while they walk.
            with trio.fail_after(30):
                zipped = await http.get(f"/{MODULE}/@v/v1.0.0.zip")
            assert zipped.content == data
            assert storage.walking == CATALOG_WALKS
        finally:
            storage.release.set()
    assert sorted(statuses) == [200] * (CATALOG_WALKS + CATALOG_WAITING) + [503] * refused


def test_redact_url_masks_userinfo_query_and_fragment_only() -> None:
    assert (
        redact_url("https://gopher:s3cret@hooks.example/check?token=abc&v#frag")
        == "https://***@hooks.example/check?token=***&***#***"
    )
    assert redact_url("http://127.0.0.1:8080/plain") == "http://127.0.0.1:8080/plain"
    assert (
        redact_urls("hook http://u:p@h/x?k=v, and https://h2/y|file:///z")
        == "hook http://***@h/x?k=***, and https://h2/y|file:///z"
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_failing_validator_hook_never_shows_its_credentials(
    tmp_path: Path, go_fixtures: GoFixtures, caplog: pytest.LogCaptureFixture
) -> None:
    hook = f"http://gopher:hunter2@127.0.0.1:{_closed_port()}/allow?token=t0ps3cret"
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures, validator_hook=hook)
    caplog.set_level(logging.DEBUG)
    async with served(config, storage=MemoryStorage()) as server:
        answer = await raw_request(server.url, f"/{MODULE}/@v/v1.0.0.info".encode())
    assert answer.status == 500
    assert "127.0.0.1" in answer.text  # still says which hook
    assert "/allow" in answer.text
    logged = caplog.text
    assert "/allow" in logged
    for secret in ("gopher", "hunter2", "t0ps3cret"):
        assert secret not in answer.text
        assert secret not in logged


async def test_error_bodies_never_show_server_paths(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures)
    leaked = f"{config.disk_root}/{MODULE}/@v/v1.0.0.info and {config.go_get_dir}/gopath"

    class Leaky(MemoryStorage):
        async def info(self, module: str, version: str) -> bytes:
            raise UpstreamError(f"no such file: {leaked}")

    async with served(config, storage=Leaky()) as server:
        answer = await raw_request(server.url, f"/{MODULE}/@v/v1.0.0.info".encode())
    assert answer.status == 502
    assert str(tmp_path) not in answer.text
    assert "<server path>" in answer.text
