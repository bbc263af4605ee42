"""Overload: cached hits never wait behind misses, queues are bounded, abandoned work stops.

- a cached version is served while every ProtocolWorkers slot is held by a hanging fetch;
- beyond ProtocolWorkers + ProtocolQueue (or GoGetWorkers + GoGetQueue) a miss is
  answered 503 with ``Retry-After``, never queued without bound;
- clients that hang up (HTTP/1.1 connections closed, HTTP/2 streams reset) leave no
  fetch running past ``AbandonedFetchGrace``, while a fetch someone waits for goes on;
- DownloadMode async starts at most ``BackgroundFetchQueue`` background fetches.

go is :func:`~tests.helpers.hanging_go`: every fetch hangs (with a child, as git) until
it is killed, so a fetch ends only by being cancelled.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import httpx
import pytest
import trio
import trio.testing

from athens_trio import Config, DiskStorage, load_config
from athens_trio._exceptions import ConfigError
from athens_trio.server import Server
from athens_trio.stash import Flights

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import (
    hanging_go,
    hello_path,
    leftover,
    process_alive,
    served,
    store_version,
    wait_for_pids,
    wait_until,
)

CACHED = "example.com/cached"
V1 = "v1.0.0"


def hanging_config(tmp_path: Path, fixtures: GoFixtures, **overrides: Any) -> Config:
    return make_config(tmp_path, str(hanging_go(tmp_path)), fixtures, **overrides)


def go_pids(tmp_path: Path) -> list[int]:
    """Every pid the hanging gos wrote so far (two per go run: go and its child)."""
    path = tmp_path / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cold(fixtures: GoFixtures, i: int, tail: str = "info") -> str:
    """A distinct version nobody stored: each one is a fetch of its own."""
    return hello_path(fixtures, f"v1.0.{100 + i}.{tail}")


async def get_until_cancelled(http: httpx.AsyncClient, path: str, seen: list[int]) -> None:
    """A client that waits for ``path`` until its task is cancelled (it hangs up)."""
    response = await http.get(path, timeout=None)
    seen.append(response.status_code)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "full-path"])
async def test_cached_version_is_served_while_misses_hold_every_protocol_slot(
    tmp_path: Path, go_fixtures: GoFixtures, fast_path: bool
) -> None:
    config = hanging_config(tmp_path, go_fixtures, protocol_workers=3, go_get_workers=10)
    storage = DiskStorage(config.disk_root)
    data = await store_version(storage, tmp_path, CACHED, V1, 2 << 20)
    statuses: list[int] = []
    async with (
        served(config, fast_path=fast_path) as server,
        httpx.AsyncClient(base_url=server.url) as http,
        trio.open_nursery() as clients,
    ):
        for i in range(6):  # three hold the slots, three wait for one
            clients.start_soon(get_until_cancelled, http, cold(go_fixtures, i), statuses)
        await wait_for_pids(tmp_path / "pids", 2 * 3)
        pool = server.pipeline.protocol_pool
        await wait_until(lambda: pool.statistics().waiting == 3)
        assert pool.statistics().in_use == 3

        with trio.fail_after(5):  # milliseconds, really: nothing to wait for
            cached_zip = await http.get(f"/{CACHED}/@v/{V1}.zip")
            cached_mod = await http.get(f"/{CACHED}/@v/{V1}.mod")
            cached_info = await http.get(f"/{CACHED}/@v/{V1}.info")
        assert cached_zip.status_code == 200
        assert cached_zip.content == data
        assert cached_mod.text == f"module {CACHED}\n"
        assert cached_info.json()["Version"] == V1
        # The hits took no slot and queued behind nothing.
        assert pool.statistics().in_use == 3
        assert pool.statistics().waiting == 3
        if not fast_path:  # else the server's fast path answered, the protocol never saw them
            assert server.pipeline.lookups.statistics().hits == {"zip": 1, "mod": 1, "info": 1}
        clients.cancel_scope.cancel()
    assert statuses == []
    pids = go_pids(tmp_path)
    await wait_until(lambda: not any(process_alive(pid) for pid in pids))
    assert leftover(config) == []


async def test_misses_beyond_the_protocol_queue_get_503_with_retry_after(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    config = hanging_config(tmp_path, go_fixtures, protocol_workers=1, protocol_queue=2)
    statuses: list[int] = []
    async with (
        served(config) as server,
        httpx.AsyncClient(base_url=server.url) as http,
        trio.open_nursery() as clients,
    ):
        for i in range(3):  # one holds the slot, two wait: the queue is full
            clients.start_soon(get_until_cancelled, http, cold(go_fixtures, i), statuses)
        pool = server.pipeline.protocol_pool
        await wait_until(lambda: pool.statistics().waiting == 2)

        refused = await http.get(cold(go_fixtures, 3))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert "too many" in refused.text
        # Upstream listing is a miss too; a stored version is not.
        assert (await http.get(hello_path(go_fixtures, "list"))).status_code == 503
        await store_version(server.pipeline.storage, tmp_path, CACHED, V1, 1024)
        assert (await http.get(f"/{CACHED}/@v/{V1}.zip")).status_code == 200
        assert pool.statistics().refused == 2
        assert pool.statistics().queue == 2
        clients.cancel_scope.cancel()
    assert statuses == []


async def test_fetches_beyond_the_goget_queue_get_503_with_retry_after(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    config = hanging_config(tmp_path, go_fixtures, go_get_workers=1, go_get_queue=2)
    statuses: list[int] = []
    async with (
        served(config) as server,
        httpx.AsyncClient(base_url=server.url) as http,
        trio.open_nursery() as clients,
    ):
        for i in range(3):  # one fetch runs, two wait for a go worker
            clients.start_soon(get_until_cancelled, http, cold(go_fixtures, i), statuses)
        stash_pool = server.pipeline.stash_pool
        await wait_until(lambda: stash_pool.statistics().waiting == 2)

        refused = await http.get(cold(go_fixtures, 3, "mod"))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        # A request joining a fetch that runs or waits is no new fetch: not refused.
        clients.start_soon(get_until_cancelled, http, cold(go_fixtures, 1), statuses)
        await wait_until(lambda: server.pipeline.singleflight.statistics().joined == 1)
        assert stash_pool.statistics().refused == 1
        metrics = (await http.get("/metrics")).text
        assert 'athens_trio_pool_refused_total{pool="stash"} 1.0' in metrics
        assert 'athens_trio_pool_refused_total{pool="protocol"} 0.0' in metrics
        await wait_for_pids(tmp_path / "pids", 2)
        assert len(go_pids(tmp_path)) == 2  # one go (and its child) ran, no more
        clients.cancel_scope.cancel()
    assert statuses == []


async def test_fetches_whose_clients_hung_up_end_after_the_grace(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    grace = 1.0
    config = hanging_config(tmp_path, go_fixtures, abandoned_fetch_grace=grace, go_get_workers=11)
    statuses: list[int] = []
    async with (
        served(config) as server,
        httpx.AsyncClient(base_url=server.url) as http,
        trio.open_nursery() as staying,
    ):
        # One client stays: its fetch must go on.
        staying.start_soon(get_until_cancelled, http, cold(go_fixtures, 99), statuses)
        async with trio.open_nursery() as leaving:
            for i in range(10):
                leaving.start_soon(get_until_cancelled, http, cold(go_fixtures, i), statuses)
            await wait_for_pids(tmp_path / "pids", 2 * 11)
            hung_up = trio.current_time()
            leaving.cancel_scope.cancel()  # ten clients hang up
        singleflight = server.pipeline.singleflight

        # Their ten fetches are cancelled after the grace: go and its child killed.
        await wait_until(lambda: singleflight.statistics().abandoned == 10, grace + 10)
        pids = go_pids(tmp_path)
        await wait_until(lambda: sum(process_alive(pid) for pid in pids) == 2)
        assert trio.current_time() - hung_up >= grace
        # The one still waited for goes on.
        assert singleflight.statistics().in_flight == 1
        assert server.pipeline.fetches.statistics().in_progress == 1
        assert server.pipeline.fetches.statistics().outcomes["cancelled"].count == 10
        assert len(leftover(config)) == 1  # the staying fetch's GOPATH only
        async with httpx.AsyncClient(base_url=server.url) as http:
            metrics = (await http.get("/metrics")).text
        assert "athens_trio_singleflight_abandoned_total 10.0" in metrics
        staying.cancel_scope.cancel()
    assert statuses == []
    await wait_until(lambda: not any(process_alive(pid) for pid in go_pids(tmp_path)))
    assert leftover(config) == []


async def test_a_client_coming_back_within_the_grace_keeps_the_fetch(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    config = hanging_config(tmp_path, go_fixtures, abandoned_fetch_grace=30)
    statuses: list[int] = []
    async with (
        served(config) as server,
        httpx.AsyncClient(base_url=server.url) as http,
        trio.open_nursery() as clients,
    ):
        async with trio.open_nursery() as first:
            first.start_soon(get_until_cancelled, http, cold(go_fixtures, 0), statuses)
            pids = await wait_for_pids(tmp_path / "pids", 2)
            first.cancel_scope.cancel()
        clients.start_soon(get_until_cancelled, http, cold(go_fixtures, 0), statuses)
        singleflight = server.pipeline.singleflight
        await wait_until(lambda: singleflight.statistics().joined == 1)
        assert all(process_alive(pid) for pid in pids)
        assert singleflight.statistics().abandoned == 0
        clients.cancel_scope.cancel()
    assert statuses == []


async def h2_reset_flood(server: Server, paths: list[str], batch: int = 50) -> None:
    """One HTTP/2 connection (prior knowledge, cleartext) sending the paths' HEADERS
    ``batch`` at a time, and once the server read them (a PING answered), a RST_STREAM
    for each: every request starts, and its client is gone a moment later."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()

    received = bytearray()

    async def ping() -> None:
        # The answer is looked for in the raw bytes: h2 skips the header blocks of
        # streams it reset, which would leave its HPACK table behind the server's.
        connection.ping(b"flooding")
        await stream.send_all(connection.data_to_send())
        ack = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00flooding"
        with trio.fail_after(30):
            while ack not in received:
                data = await stream.receive_some(65536)
                assert data, "the server closed the connection"
                received.extend(data)
        del received[: received.index(ack) + len(ack)]

    for start in range(0, len(paths), batch):
        stream_ids = [1 + 2 * i for i in range(start, min(start + batch, len(paths)))]
        for stream_id, path in zip(stream_ids, paths[start:], strict=False):
            headers = [
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", f"127.0.0.1:{server.port}"),
                (":path", path),
            ]
            connection.send_headers(stream_id, headers, end_stream=True)
        await ping()
        for stream_id in stream_ids:
            connection.reset_stream(stream_id)
        await ping()
    await stream.aclose()


async def test_an_http2_reset_flood_starts_a_bounded_number_of_fetches(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    grace = 2.0
    config = hanging_config(
        tmp_path, go_fixtures, go_get_workers=2, go_get_queue=3, abandoned_fetch_grace=grace
    )
    async with served(config) as server:
        flood_started = trio.current_time()
        await h2_reset_flood(server, [cold(go_fixtures, i) for i in range(400)])
        # Fetches given up make room for new ones: at most 5 per grace, ever.
        windows = 1 + int((trio.current_time() - flood_started) / grace)
        singleflight = server.pipeline.singleflight
        stash_pool = server.pipeline.stash_pool
        # Never more fetches than the go workers and their queue hold...
        assert singleflight.statistics().in_flight <= 2 + 3
        # ...and those are given up after the grace: nothing is left running.
        await wait_until(lambda: singleflight.statistics().in_flight == 0, grace + 10)
        pids = go_pids(tmp_path)
        await wait_until(lambda: not any(process_alive(pid) for pid in pids))
        started = server.pipeline.fetches.statistics().outcomes["cancelled"].count
        assert 1 <= started <= (2 + 3) * windows
        assert len(pids) <= 2 * started  # go and its child, per fetch started
        statistics = stash_pool.statistics()
        assert statistics.in_use == statistics.waiting == 0
        # A stream's request reached the protocol unless its reset came first (the fast
        # path's look in storage is a checkpoint); the queue bound refused most of the
        # fetches they asked for (the rest were given up after the grace).
        misses = server.pipeline.lookups.statistics().misses.get("info", 0)
        assert misses <= 400
        assert statistics.refused + started <= misses
        assert singleflight.statistics().abandoned <= 400 - statistics.refused
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/healthz")).status_code == 200
    assert leftover(config) == []


async def test_async_mode_drops_background_fetches_beyond_its_queue(
    tmp_path: Path, go_fixtures: GoFixtures, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "athens_trio.download")
    config = hanging_config(
        tmp_path,
        go_fixtures,
        download_mode="async",
        background_fetch_queue=3,
        go_get_workers=1,
        abandoned_fetch_grace=0.1,
    )
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        for i in range(10):  # quick 404s, each asking for a background fetch
            response = await http.get(cold(go_fixtures, i))
            assert response.status_code == 404
        lookups = server.pipeline.lookups
        assert lookups.statistics().background == 3
        assert lookups.statistics().background_dropped == 7
        assert server.pipeline.singleflight.statistics().in_flight == 3
        assert server.pipeline.stash_pool.statistics().waiting == 2
        # Nobody waits for them over HTTP, but they are wanted: never given up.
        await wait_for_pids(tmp_path / "pids", 2)
        # (Something that must not happen: watched for five graces, then it did not.)
        with trio.move_on_after(0.5):
            await wait_until(lambda: server.pipeline.singleflight.statistics().abandoned > 0)
        assert server.pipeline.singleflight.statistics().abandoned == 0
        dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(dropped) == 7
        assert "BackgroundFetchQueue" in dropped[0].getMessage()
    assert leftover(config) == []


def test_overload_settings_load_from_athens_variables() -> None:
    config = load_config(
        environ={
            "ATHENS_PROTOCOL_QUEUE": "7",
            "ATHENS_GOGET_QUEUE": "8",
            "ATHENS_BACKGROUND_FETCH_QUEUE": "9",
            "ATHENS_ABANDONED_FETCH_GRACE": "2.5",
        }
    )
    assert (config.protocol_queue, config.go_get_queue, config.background_fetch_queue) == (
        7,
        8,
        9,
    )
    assert config.abandoned_fetch_grace == 2.5
    defaults = load_config(environ={})
    assert defaults.abandoned_fetch_grace == 5
    with pytest.raises(ConfigError, match="ATHENS_GOGET_QUEUE"):
        load_config(environ={"ATHENS_GOGET_QUEUE": "-1"})
    with pytest.raises(ConfigError, match="AbandonedFetchGrace"):
        load_config(environ={"ATHENS_ABANDONED_FETCH_GRACE": "nan"})


# ---------------------------------------------------------------------------------------
# The single-flight's grace, in virtual time
# ---------------------------------------------------------------------------------------


async def test_work_nobody_waits_for_is_cancelled_after_the_grace_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cancelled_at: list[float] = []
    outcomes: list[str] = []

    async def work() -> str:
        try:
            await trio.sleep(1000)
        except trio.Cancelled:
            cancelled_at.append(trio.current_time())
            raise
        return "done"

    async def waiter(flights: Flights[str, str], after: float) -> None:
        with trio.move_on_after(after):
            outcomes.append(await flights.run("key", work, name="work"))

    async with trio.open_nursery() as pipeline_nursery:
        flights: Flights[str, str] = Flights(pipeline_nursery, abandon_after=5)
        await waiter(flights, 1)  # leaves at t+1: cancelled at t+6
        left = trio.current_time()
        # A caller coming back within the grace keeps it going...
        await trio.sleep(4)
        assert flights.running("key")
        await waiter(flights, 3)  # ...until it leaves too, at t+8: cancelled at t+13
        assert cancelled_at == []
        await trio.sleep(10)
        assert cancelled_at == [left + 4 + 3 + 5]
        assert (flights.joined, flights.abandoned, flights.in_flight) == (1, 1, {})
        # Waited for to its end: never given up.
        await waiter(flights, 2000)
        assert outcomes == ["done"]
        assert flights.abandoned == 1


async def test_singleflight_without_a_grace_runs_work_to_its_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished: list[bool] = []

    async def work() -> None:
        await trio.sleep(1000)
        finished.append(True)

    async with trio.open_nursery() as pipeline_nursery:
        flights: Flights[str, None] = Flights(pipeline_nursery)
        with trio.move_on_after(1):
            await flights.run("key", work, name="work")
    assert finished == [True]
    assert flights.abandoned == 0
