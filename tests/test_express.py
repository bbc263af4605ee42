"""The express lane (``server/_express``): one connection, both lanes, nothing lost.

A plain connection starts on the express lane.  Its bodyless GETs and HEADs stay there,
answered by the fast path or, where it declines (a miss, a list), by the app; it moves
to hypercorn at the first request that is not one (a POST, a body); the bytes of that
request (and of any pipelined after it) must reach hypercorn whole, every request must
be answered once, in order, logged once and counted once.  What each answer looks like
is ``test_fastpath``'s business (it compares the bytes on the wire with the full
path's); the connection limits on the lane are ``test_operator``'s and
``test_hardening``'s.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import httpx
import pytest
import trio
from hypercorn.typing import ASGISendCallable, HTTPScope

from athens_trio import Config, DiskStorage
from athens_trio.server import Server
from athens_trio.server._app import _ZipBody
from athens_trio.server._fastpath import FastPath
from athens_trio.server._hypercorn_worker import HypercornWorker

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import go_script, hello_path, served, store_version, wait_for_pids, wait_until

MODULE = "example.com/express/mod"
V = f"/{MODULE}/@v/v1.0.0"


def _config(tmp_path: Path, **overrides: object) -> Config:
    config = Config(
        storage_type="disk",
        download_mode="none",
        network_mode="offline",
        go_binary="/nonexistent/go",
        keep_alive_timeout=30,
        **overrides,  # type: ignore[arg-type]
    )
    config.storage.disk.root_path = str(tmp_path / "storage")
    return config


@pytest.fixture
def on_hypercorn(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the connections handed to hypercorn (one entry each)."""
    handed: list[int] = []
    original = HypercornWorker.serve_connection

    async def counting(self: HypercornWorker, *args: object, **kwargs: object) -> None:
        handed.append(1)
        await original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(HypercornWorker, "serve_connection", counting)
    return handed


@pytest.fixture
async def config(tmp_path: Path) -> Config:
    config = _config(tmp_path)
    await store_version(DiskStorage(config.disk_root), tmp_path, MODULE, "v1.0.0", 3 << 20)
    return config


def _request(method: str, target: str, *extra: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _responses(
    stream: trio.SocketStream, methods: list[str]
) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Read one response per method from ``stream``, in order (h11 as the client)."""
    client = h11.Connection(h11.CLIENT)
    answers: list[tuple[int, dict[bytes, bytes], bytes]] = []
    for method in methods:
        client.send(h11.Request(method=method, target="/", headers=[("Host", "test")]))
        client.send(h11.EndOfMessage())
        status, headers, body = 0, {}, bytearray()
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await stream.receive_some(1 << 16))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        answers.append((status, headers, bytes(body)))
        if client.our_state is h11.MUST_CLOSE:
            break
        client.start_next_cycle()
    return answers


async def _alone(server: Server, method: str, target: str) -> tuple[int, bytes]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.request(method, target)
        return response.status_code, response.content


async def test_one_connection_moves_to_hypercorn_at_the_first_request_not_express(
    config: Config, caplog: pytest.LogCaptureFixture, on_hypercorn: list[int]
) -> None:
    # Pipelined in one write: three answered on the lane (the list by the app), the
    # POST handed over with the two after it already read; then more on the same
    # connection, now hypercorn's.
    first = [("GET", V + ".info"), ("HEAD", V + ".zip"), ("GET", f"/{MODULE}/@v/list")]
    first += [("POST", V + ".info"), ("GET", V + ".zip"), ("GET", V + ".mod")]
    then = [("GET", V + ".info"), ("GET", f"/{MODULE}/@v/v9.9.9.info"), ("GET", V + ".mod")]
    caplog.set_level(logging.INFO, logger="athens_trio.access")
    async with served(config) as server:
        with trio.fail_after(30):
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
                await stream.send_all(b"".join(_request(m, t) for m, t in first))
                got = await _responses(stream, [m for m, _ in first])
                # The rest, one at a time, the last one split mid-line.
                for method, target in then[:-1]:
                    await stream.send_all(_request(method, target))
                    got += await _responses(stream, [method])
                last = _request(*then[-1])
                await stream.send_all(last[:7])
                await trio.sleep(0.05)  # two packets, as a slow client sends them
                await stream.send_all(last[7:])
                got += await _responses(stream, [then[-1][0]])
            assert len(on_hypercorn) == 1  # the one connection, from the POST on
            expected = [await _alone(server, method, target) for method, target in first + then]
    assert [(status, body) for status, _, body in got] == expected
    assert [status for status, _ in expected] == [200, 200, 200, 405, 200, 200, 200, 404, 200]
    assert len(got[4][2]) > 3 << 20  # the whole zip, in several chunks
    # Each request logged once (the 9 on the connection, the 9 alone), none twice.
    lines = [r.getMessage() for r in caplog.records if r.name == "athens_trio.access"]
    assert len(lines) == 18, lines
    for method, target in first + then:
        times = (first + then).count((method, target))
        assert sum(line.startswith(f"{method} {target} ") for line in lines) == 2 * times, target


async def test_an_http10_client_gets_its_answer_then_the_connection_closes(
    config: Config,
) -> None:
    async with served(config) as server:
        with trio.fail_after(30):
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
                await stream.send_all(f"GET {V}.info HTTP/1.0\r\n\r\n".encode())
                received = bytearray()
                while chunk := await stream.receive_some(1 << 16):
                    received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body.startswith(b'{"Version":"v1.0.0"') or b"v1.0.0" in body


async def test_a_malformed_request_gets_hypercorns_answer(tmp_path: Path, config: Config) -> None:
    bad = b"GET " + V.encode() + b".info HTTP/1.1\r\nHost: test\r\nNo colon here\r\n\r\n"

    async def answer(server: Server) -> bytes:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(bad)
            received = bytearray()
            while chunk := await stream.receive_some(1 << 16):
                received += chunk
        return b"\r\n".join(
            line for line in bytes(received).split(b"\r\n") if not line.startswith(b"date:")
        )

    with trio.fail_after(30):
        async with served(config) as express, served(config, fast_path=False) as plain:
            assert await answer(express) == await answer(plain)
            assert (await answer(express)).startswith(b"HTTP/1.1 400 ")


async def test_shutdown_closes_idle_express_connections_at_once(config: Config) -> None:
    config.shutdown_timeout = 30
    with trio.fail_after(20):
        async with served(config, shutdown_timeout=30) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(_request("GET", V + ".info"))
            assert [s for s, _, _ in await _responses(stream, ["GET"])] == [200]
            stopping_at = trio.current_time()
        # Not the 30 s grace: nothing was being answered.
        assert trio.current_time() - stopping_at < 5
        async with stream:
            assert await stream.receive_some(1 << 16) == b""


async def _whole_answer(server: Server, request: bytes, *, shut_write: bool = False) -> bytes:
    """Everything the server sends back to ``request`` until it closes, Date cut out."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(request)
        if shut_write:
            await stream.send_eof()
        received = bytearray()
        while chunk := await stream.receive_some(1 << 16):
            received += chunk
    lines = bytes(received).split(b"\r\n")
    varying = (b"date:", b"athens-request-id:")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(varying))


async def test_a_truncated_request_then_end_of_stream_gets_hypercorns_400(
    config: Config,
) -> None:
    truncated = f"GET {V}.info HTTP/1.1\r\nHost: te".encode()
    with trio.fail_after(30):
        async with served(config) as express, served(config, fast_path=False) as plain:
            answer = await _whole_answer(express, truncated, shut_write=True)
            assert answer == await _whole_answer(plain, truncated, shut_write=True)
            assert answer.startswith(b"HTTP/1.1 400 ")


async def test_a_fast_path_that_fails_before_answering_is_a_500_as_on_hypercorn(
    tmp_path: Path, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    request = _request("GET", V + ".zip", "Connection: close")
    zip_file = config.disk_root / MODULE / "@v" / "v1.0.0.zip"
    async with served(config) as server:
        with trio.fail_after(30):
            assert (await _whole_answer(server, request)).startswith(b"HTTP/1.1 200 ")
            # Remembered where it is; now opening it fails (not "gone": a fault).
            zip_file.unlink()
            zip_file.symlink_to(zip_file.name)  # a loop: ELOOP
            answer = await _whole_answer(server, request)
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    assert b"content-length: 0" in answer.lower()
    assert "the express lane failed" in caplog.text


async def test_requests_the_fast_path_declines_are_answered_on_the_lane(
    config: Config, monkeypatch: pytest.MonkeyPatch, on_hypercorn: list[int]
) -> None:
    # A miss, a list, a HEAD of a miss and a 404 of the envelope are the app's, on the
    # lane: the fast path looks once at each, hypercorn never sees the connection, and
    # the answers are the ones each request gets alone.
    looked: list[str] = []
    original = FastPath.__call__

    async def counting(self: FastPath, scope: HTTPScope, send: ASGISendCallable) -> bool:
        looked.append(scope["path"])
        return await original(self, scope, send)

    monkeypatch.setattr(FastPath, "__call__", counting)
    miss, hit, listed = f"/{MODULE}/@v/v9.9.9.info", V + ".info", f"/{MODULE}/@v/list"
    asked = [("GET", miss), ("GET", hit), ("GET", listed), ("HEAD", miss), ("HEAD", listed)]
    asked += [("GET", V + ".zip"), ("GET", "/healthz")]
    async with served(config) as server:
        with trio.fail_after(30):
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
                await stream.send_all(b"".join(_request(m, t) for m, t in asked[:2]))
                got = await _responses(stream, [m for m, _ in asked[:2]])
                for method, target in asked[2:]:
                    await stream.send_all(_request(method, target))
                    got += await _responses(stream, [method])
            expected = [await _alone(server, method, target) for method, target in asked]
    assert [(status, body) for status, _, body in got] == expected
    assert [status for status, _ in expected] == [404, 200, 200, 404, 200, 200, 200]
    assert looked[: len(asked)] == [target for _, target in asked]
    assert on_hypercorn == []


async def test_a_request_sent_while_a_miss_is_fetched_is_answered_after_it(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, on_hypercorn: list[int]
) -> None:
    # The client's next request arrives while the app waits on a fetch (the lane reads
    # the socket then, to see the client hang up): it is kept, and answered next.
    barrier, started = tmp_path / "barrier", tmp_path / "pids"
    go = go_script(
        tmp_path,
        "waiting-go",
        f'if [ "$1" != version ]; then echo $$ >> {started}; '
        f"while [ ! -e {barrier} ]; do sleep 0.01; done; fi\n"
        f'exec {go_binary} "$@"\n',
    )
    config = make_config(tmp_path, str(go), go_fixtures)
    await store_version(DiskStorage(config.disk_root), tmp_path, MODULE, "v1.0.0", 1 << 10)
    miss, hit = hello_path(go_fixtures, "v1.0.0.info"), V + ".mod"
    async with served(config) as server:
        with trio.fail_after(60):
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
                await stream.send_all(_request("GET", miss))
                await wait_for_pids(started, 1)
                await stream.send_all(_request("GET", hit))
                await trio.sleep(0.05)  # read by the lane while the fetch waits
                barrier.touch()
                got = await _responses(stream, ["GET", "GET"])
    assert [status for status, _, _ in got] == [200, 200]
    assert b'"Version":"v1.0.0"' in got[0][2]
    assert got[1][2] == f"module {MODULE}\n".encode()
    assert on_hypercorn == []


def _app_answers_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path declines every request: the app answers them, on the lane."""

    async def never(self: FastPath, scope: HTTPScope, send: ASGISendCallable) -> bool:
        return False

    monkeypatch.setattr(FastPath, "__call__", never)


async def test_pipelined_requests_then_end_of_stream_the_first_is_answered(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second request and the client's end of stream came with the first, which the
    # app takes a while to answer: the end of stream is the end of the requests, not of
    # the first one's client (hypercorn stops reading at the next request; so does the
    # lane).  What becomes of the second is a race on both, as the end is known by then.
    _app_answers_everything(monkeypatch)
    original = DiskStorage.ready

    async def slow_ready(self: DiskStorage) -> None:
        await trio.sleep(0.2)  # an answer that takes a while, nothing waited for
        await original(self)

    monkeypatch.setattr(DiskStorage, "ready", slow_ready)
    asked = _request("GET", "/readyz") + _request("GET", "/healthz")
    with trio.fail_after(30):
        async with served(config) as express, served(config, fast_path=False) as plain:
            for server in (express, plain):
                answer = await _whole_answer(server, asked, shut_write=True)
                assert answer.startswith(b"HTTP/1.1 200 "), answer
                assert b"\r\n\r\nready\n" in answer


async def test_a_client_that_stops_reading_an_apps_answer_is_no_server_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # WriteTimeout ends the answer (a failed send inside the app's task group): the
    # connection closes, the request is logged, and nothing is logged as a failure.
    _app_answers_everything(monkeypatch)
    config = _config(tmp_path, write_timeout=0.5)
    await store_version(DiskStorage(config.disk_root), tmp_path, MODULE, "v1.0.0", 8 << 20)
    caplog.set_level(logging.INFO)
    async with served(config) as server:
        with trio.fail_after(30):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await stream.send_all(_request("GET", V + ".zip"))
            await wait_until(
                lambda: any(
                    r.name == "athens_trio.access" and f"{V}.zip" in r.getMessage()
                    for r in caplog.records
                ),
                20,
            )
            await stream.aclose()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_an_app_failing_after_its_head_sends_the_head_as_hypercorn_does(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    _app_answers_everything(monkeypatch)

    def broken_disk() -> list[bytes]:
        raise RuntimeError("the disk broke")

    async def failing(self: _ZipBody) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:  # fails at its first chunk
            for chunk in broken_disk():
                yield chunk

        return chunks()

    monkeypatch.setattr(_ZipBody, "__aenter__", failing)
    asked = _request("GET", V + ".zip")
    with trio.fail_after(30):
        async with served(config) as express, served(config, fast_path=False) as plain:
            answer = await _whole_answer(express, asked)
            assert answer == await _whole_answer(plain, asked)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\n")  # the head, then the connection closed
