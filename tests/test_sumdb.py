"""The checksum database proxy against a local HTTP server standing in for sum.golang.org."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from athens_trio import (
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UpstreamError,
    serve,
)
from athens_trio import _sumdb as sumdb_proxy
from athens_trio._sumdb import SumDBProxy, parse_sum_db
from athens_trio.sumdb import SumDBAccess, SumDBUnreachableError

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import wait_until
from .staticproxy import static_proxy

TILE = bytes(range(256)) * 4096  # 1 MiB: streamed through, not buffered
SMALL_TILE = bytes(range(256)) * 32  # 8 KiB, as a full hash tile


async def start_sumdb(nursery: trio.Nursery, seen: list[str]) -> str:
    async def app(
        scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return
        seen.append(scope["path"])
        if scope["path"].startswith("/db/lookup/"):
            # A record, a blank line, the signed tree head (its shape as go parses it).
            body = b"1234\ngithub.com/a/b v1.0.0 h1:abc=\n\ngo.sum database tree\n5\n"
            status = 200
        elif scope["path"].startswith("/db/tile/8/2/"):
            body, status = b"<html>a portal's page</html>\n", 200  # no tile's shape
        elif scope["path"].startswith("/db/tile/8/1/"):
            body, status = SMALL_TILE, 200  # a level-1 hash tile's size: kept
        elif scope["path"].startswith("/db/tile/"):
            body, status = TILE, 200
        else:
            body, status = b"not found\n", 404
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),  # as sum.golang.org says it
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds: list[str] = await nursery.start(hypercorn_serve, app, config)
    return binds[0] + "/db"


async def test_sumdb_proxy_forwards_and_refuses() -> None:
    seen: list[str] = []
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        upstream = await start_sumdb(nursery, seen)
        host = upstream.split("//")[1].split("/")[0]
        proxy = SumDBProxy([upstream], ["github.com/corp"], client)
        assert proxy.supported(host)
        assert not proxy.supported("sum.golang.org")

        async with proxy.forward(host, "lookup/github.com/a/b@v1.0.0") as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/plain")
            assert b"".join([c async for c in response.body]).startswith(b"1234\n")
        async with proxy.forward(host, "tile/8/0/x001/234.p/5") as response:
            chunks = [c async for c in response.body]
            assert b"".join(chunks) == TILE
        async with proxy.forward(host, "latest") as response:
            assert response.status == 404  # upstream's answer, passed on

        with pytest.raises(ForbiddenError):
            async with proxy.forward(host, "lookup/github.com/corp/secret@v1.0.0"):
                pass
        for bad in ("lookup/../../etc/passwd@v1", "admin", "tile/../x", "lookup/a b@v1"):
            with pytest.raises(InvalidRequestError):
                async with proxy.forward(host, bad):
                    pass
        with pytest.raises(NotFoundError):
            async with proxy.forward("sum.golang.org", "latest"):
                pass
        nursery.cancel_scope.cancel()
    assert seen == ["/db/lookup/github.com/a/b@v1.0.0", "/db/tile/8/0/x001/234.p/5", "/db/latest"]


async def test_tiles_and_lookups_are_kept_latest_and_failures_are_not() -> None:
    """A warm build verifies its go.sum from what the proxy kept: a tile once fetched
    is answered from memory (for good), a lookup for LOOKUP_KEPT seconds; latest, a
    404 and an answer too large to keep always go to the database."""
    seen: list[str] = []
    now = [0.0]
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        upstream = await start_sumdb(nursery, seen)
        host = upstream.split("//")[1].split("/")[0]
        proxy = SumDBProxy([upstream], [], client, clock=lambda: now[0])

        async def body(path: str) -> tuple[int, bytes]:
            async with proxy.forward(host, path) as response:
                return response.status, b"".join([c async for c in response.body])

        paths = ["tile/8/1/000", "lookup/github.com/a/b@v1.0.0", "latest", "tile/8/0/000"]
        first = [await body(path) for path in paths]
        again = [await body(path) for path in paths]
        assert first == again
        assert first[0] == (200, SMALL_TILE)
        assert first[2][0] == 404
        now[0] += sumdb_proxy.LOOKUP_KEPT + 1
        assert await body("lookup/github.com/a/b@v1.0.0") == first[1]  # asked again
        assert await body("tile/8/1/000") == first[0]  # a tile stays
        nursery.cancel_scope.cancel()
    assert seen == [f"/db/{path}" for path in paths] + [
        "/db/latest",
        "/db/tile/8/0/000",
        "/db/lookup/github.com/a/b@v1.0.0",
    ]
    kept = proxy.statistics()
    assert (kept.entries, kept.hits, kept.misses) == (2, 3, 5)
    assert kept.bytes > len(SMALL_TILE) + len(first[1][1])  # keys and bookkeeping too


async def test_an_answer_without_the_shape_of_its_request_is_not_kept() -> None:
    """A 200 that is no tile (a portal's page, a mirror gone wrong) is passed on as it
    came, and asked for again next time, never replayed; a tile asked by another
    spelling than go's is passed through too."""
    seen: list[str] = []
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        upstream = await start_sumdb(nursery, seen)
        host = upstream.split("//")[1].split("/")[0]
        proxy = SumDBProxy([upstream], [], client)
        for path in ("tile/8/2/000", "tile/8/2/000", "tile/8/./1/000", "tile/8/./1/000"):
            async with proxy.forward(host, path) as response:
                assert response.status == 200
                assert [c async for c in response.body]
        nursery.cancel_scope.cancel()
    assert len(seen) == 4
    assert proxy.statistics().entries == 0


async def test_what_is_kept_is_bounded_least_recently_used_out() -> None:
    seen: list[str] = []
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        upstream = await start_sumdb(nursery, seen)
        host = upstream.split("//")[1].split("/")[0]
        two = 2 * (len(SMALL_TILE) + 1024)  # two tiles and their bookkeeping, not three
        proxy = SumDBProxy([upstream], [], client, cache_bytes=two)
        for path in ("tile/8/1/000", "tile/8/1/001", "tile/8/1/000", "tile/8/1/002"):
            async with proxy.forward(host, path) as response:
                assert b"".join([c async for c in response.body]) == SMALL_TILE
        assert proxy.statistics().entries == 2
        assert proxy.statistics().bytes <= two
        for path in ("tile/8/1/000", "tile/8/1/001"):  # 001 was the least recently used
            async with proxy.forward(host, path):
                pass
        nursery.cancel_scope.cancel()
    assert [p for p in seen if p.endswith("/001")] == ["/db/tile/8/1/001"] * 2
    assert seen.count("/db/tile/8/1/000") == 1


async def test_a_mirror_is_served_under_the_databases_own_name() -> None:
    seen: list[str] = []
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        upstream = await start_sumdb(nursery, seen)
        mirror_host = upstream.split("//")[1].split("/")[0]
        proxy = SumDBProxy([f"sum.golang.org {upstream}/"], [], client)
        assert proxy.supported("sum.golang.org")
        assert not proxy.supported(mirror_host)  # the mirror is no database of its own
        async with proxy.forward("sum.golang.org", "lookup/github.com/a/b@v1.0.0") as response:
            assert response.status == 200
            assert b"".join([c async for c in response.body]).startswith(b"1234\n")
        nursery.cancel_scope.cancel()
    assert seen == ["/db/lookup/github.com/a/b@v1.0.0"]


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("https://sum.golang.org", ("sum.golang.org", "https://sum.golang.org")),
        ("https://sum.example:8443/db/", ("sum.example:8443", "https://sum.example:8443/db")),
        (
            " sum.golang.org  https://proxy.golang.org/sumdb/sum.golang.org ",
            ("sum.golang.org", "https://proxy.golang.org/sumdb/sum.golang.org"),
        ),
    ],
)
def test_sum_db_entries(entry: str, parsed: tuple[str, str]) -> None:
    assert parse_sum_db(entry) == parsed


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "sum.golang.org",
        "a b https://c",
        "sum/x https://mirror.example",
        "sum.golang.org ftp://mirror.example",
        "sum.golang.org https://user:pw@mirror.example",
        "sum.golang.org https://mirror.example/?q=1",
    ],
)
def test_bad_sum_db_entries_say_what_is_wrong(entry: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(entry))):  # names the entry
        parse_sum_db(entry)


async def test_a_redirect_is_followed_not_passed_on(tmp_path: Path) -> None:
    # A client of the proxy gets the answer, not a Location past the proxy.
    seen: list[str] = []
    async with (
        trio.open_nursery() as nursery,
        static_proxy(tmp_path) as redirecting,
        httpx.AsyncClient() as client,
    ):
        upstream = await start_sumdb(nursery, seen)
        redirecting.redirect_to = upstream
        proxy = SumDBProxy([f"sum.golang.org {redirecting.url}"], [], client)
        async with proxy.forward("sum.golang.org", "lookup/github.com/a/b@v1.0.0") as response:
            assert response.status == 200
            assert b"".join([c async for c in response.body]).startswith(b"1234\n")
        nursery.cancel_scope.cancel()
    assert seen == ["/db/lookup/github.com/a/b@v1.0.0"]


async def test_a_failing_locate_is_shared_not_queued(tmp_path: Path) -> None:
    # The upstream proxy fails to say whether it serves the database: the requests
    # waiting meanwhile take that failure rather than each asking again in turn.
    asked: list[str] = []
    gate = trio.Event()

    async def locate(name: str) -> SumDBAccess | None:
        asked.append(name)
        await gate.wait()
        raise SumDBUnreachableError(f"{name}: the upstream answered 503")

    async with httpx.AsyncClient() as client:
        proxy = SumDBProxy(["https://sum.golang.org"], [], client, locate=locate)
        failures: list[str] = []

        async def ask() -> None:
            with pytest.raises(UpstreamError) as caught:
                async with proxy.forward("sum.golang.org", "latest"):
                    pass
            failures.append(str(caught.value))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(ask)
            await wait_until(lambda: len(asked) == 1)
            gate.set()
        assert asked == ["sum.golang.org"]
        assert failures == ["checksum database sum.golang.org: the upstream answered 503"] * 5


async def test_unreachable_sumdb_is_an_upstream_fault() -> None:
    async with httpx.AsyncClient() as client:
        proxy = SumDBProxy(["http://127.0.0.1:9"], [], client)
        with pytest.raises(UpstreamError):
            async with proxy.forward("127.0.0.1:9", "latest"):
                pass


async def test_sumdb_routes_on_the_server(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    seen: list[str] = []
    async with trio.open_nursery() as nursery:
        upstream = await start_sumdb(nursery, seen)
        host = upstream.split("//")[1].split("/")[0]
        # Config() directly: load_config would refuse a plain-http database, rightly.
        config = make_config(
            tmp_path, go_binary, go_fixtures, sum_dbs=[upstream], no_sum_patterns=["corp.io"]
        )
        async with (
            serve(config, host="127.0.0.1", port=0) as server,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            assert (await http.get(f"/sumdb/{host}/supported")).status_code == 200
            assert (await http.get("/sumdb/sum.golang.org/supported")).status_code == 404
            lookup = await http.get(f"/sumdb/{host}/lookup/github.com/a/b@v1.0.0")
            assert lookup.status_code == 200
            assert lookup.text.startswith("1234\n")
            tile = await http.get(f"/sumdb/{host}/tile/8/0/000")
            assert tile.content == TILE
            head = await http.head(f"/sumdb/{host}/tile/8/0/000")
            assert head.status_code == 200
            # The upstream's length, passed on for GET and HEAD alike.
            assert tile.headers["Content-Length"] == str(len(TILE))
            assert head.headers["Content-Length"] == str(len(TILE))
            assert (await http.get(f"/sumdb/{host}/lookup/corp.io/x@v1.0.0")).status_code == 403
            for _ in range(2):  # once from the database, once from what was kept
                small = await http.get(f"/sumdb/{host}/tile/8/1/000")
                assert small.content == SMALL_TILE
            metrics = (await http.get("/metrics")).text
            assert "athens_trio_sumdb_kept_hits_total 1.0" in metrics
            assert "athens_trio_sumdb_kept_answers 2.0" in metrics  # the tile, the lookup
            assert (await http.get(f"/sumdb/{host}/admin")).status_code == 400
        nursery.cancel_scope.cancel()
    assert seen.count("/db/tile/8/0/000") == 2
