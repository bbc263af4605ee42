"""Running it in production: TLS and HTTP/2, basic auth with go's netrc, a unix socket,
PathPrefix, metrics, JSON logs with request IDs, the catalog and index, the operator's
pages, and the connection limits (header timeout, keep-alive, MaxConnections).

The go client reaches the proxy only (``GOPROXY=<server>``), the proxy's go only the
local fixture repositories; certificates are made here, for 127.0.0.1.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import os
import ssl
import sys
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from athens_trio import MemoryStorage
from athens_trio._logging import request_id, setup_logging
from athens_trio._semver import compare
from athens_trio.server import Server, serve
from athens_trio.server._auth import BasicAuth
from athens_trio.server._catalog import sort_entries
from athens_trio.server._envelope import clean_request_id, strip_prefix
from athens_trio.server._metrics import route_label

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import (
    REPO_ROOT,
    client_env,
    go_script,
    hello_path,
    run_go,
    self_signed,
    served,
    wait_until,
)

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def metric_values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics page, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@contextmanager
def captured_logs(log_format: str) -> Iterator[io.StringIO]:
    """What :func:`setup_logging` writes while the block runs (the root logger's level
    and our handler are put back afterwards)."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = setup_logging("info", log_format, stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


BIG = "example.com/catalog"


def tiny_zip(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/go.mod", "module x\n")
    return path


def info(version: str, time: str) -> bytes:
    return json.dumps({"Version": version, "Time": time}).encode()


@asynccontextmanager
async def served_storage(
    tmp_path: Path, go_fixtures: GoFixtures, storage: MemoryStorage, **overrides: Any
) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures, **overrides)
    async with (
        served(config, storage=storage) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        yield server, http


# ---------------------------------------------------------------------------------------
# TLS, HTTP/2 and basic auth, with a real go client
# ---------------------------------------------------------------------------------------


async def test_tls_http2_and_basic_auth_with_go_and_its_netrc(
    tmp_path: Path,
    go_fixtures: GoFixtures,
    go_binary: str,
    go_build_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = self_signed(tmp_path)
    user, password = "gopher", "s3cret-Pa55"
    config = make_config(
        tmp_path,
        go_binary,
        go_fixtures,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        basic_auth_user=user,
        basic_auth_pass=password,
    )
    caplog.set_level(logging.INFO)
    spec = f"{go_fixtures.hello}@v1.0.0"
    trusted = ssl.create_default_context(cafile=str(cert))
    async with served(config) as server:
        assert server.url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(base_url=server.url, verify=trusted, http2=True) as http:
            refused = await http.get(hello_path(go_fixtures, "v1.0.0.info"))
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == 'Basic realm="athens-trio"'
            assert refused.http_version == "HTTP/2"  # ALPN chose h2
            wrong = await http.get("/metrics", auth=(user, "wrong"))
            assert wrong.status_code == 401
            assert (await http.get("/healthz")).status_code == 200  # probes need nothing
            assert (await http.get("/readyz")).status_code == 200
            allowed = await http.get("/metrics", auth=(user, password))
            assert allowed.status_code == 200
            assert allowed.http_version == "HTTP/2"

        # go with no netrc entry: the 401 and our reason reach its user.
        env = client_env(tmp_path, go_fixtures, go_build_cache, server.url, name="anonymous")
        env.update(SSL_CERT_FILE=str(cert), NETRC=str(tmp_path / "no-netrc"))
        refused_go = await run_go(
            go_binary, ["mod", "download", "-json", spec], cwd=tmp_path / "a", env=env, check=False
        )
        assert refused_go.returncode != 0
        error = json.loads(refused_go.stdout)["Error"]
        assert "401 Unauthorized" in error
        assert "needs a user name and password" in error

        # go 1.24+ matches a netrc machine against host:port when the URL has a port.
        netrc = tmp_path / "netrc"
        netrc.write_text(
            f"machine 127.0.0.1:{server.port} login {user} password {password}\n"
            f"machine 127.0.0.1 login {user} password {password}\n"
        )
        env = client_env(tmp_path, go_fixtures, go_build_cache, server.url, name="gopher")
        env.update(SSL_CERT_FILE=str(cert), NETRC=str(netrc))
        fetched = await run_go(
            go_binary, ["mod", "download", "-json", spec], cwd=tmp_path / "g", env=env
        )
    assert json.loads(fetched.stdout)["Version"] == "v1.0.0"

    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert password not in logged
    assert "authorization" not in logged.lower()
    assert "gopher:" not in logged


def test_basic_auth_header_parsing() -> None:
    auth = BasicAuth("u", "p:with:colons")
    good = b"Basic " + base64.b64encode(b"u:p:with:colons")
    assert auth.allows(good)
    assert auth.allows(b"basic " + good.split()[1])
    for bad in (
        None,
        b"",
        b"Basic",
        b"Bearer " + good.split()[1],
        b"Basic !!!not-base64",
        b"Basic " + base64.b64encode(b"u:p"),
        b"Basic " + base64.b64encode(b"U:p:with:colons"),
        b"Basic " + base64.b64encode(b"no colon"),
        b"Basic " + b"A" * 10_000,
    ):
        assert not auth.allows(bad), bad
    with pytest.raises(ValueError, match="both"):
        BasicAuth("u", "")


# ---------------------------------------------------------------------------------------
# Unix socket, PathPrefix, pages
# ---------------------------------------------------------------------------------------


async def test_unix_socket_wins_over_port_and_is_removed_afterwards(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    sock = tmp_path / "athens.sock"
    config = make_config(
        tmp_path, "/nonexistent/go", go_fixtures, unix_socket=str(sock), port="127.0.0.1:1"
    )
    async with serve(config, go_version="go version test", storage=MemoryStorage()) as server:
        assert server.binds == (f"http://unix:{sock}",)
        with pytest.raises(ValueError, match="unix socket"):
            _ = server.port
        transport = httpx.AsyncHTTPTransport(uds=str(sock))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as http:
            health = await http.get("/healthz")
            assert health.status_code == 200
            home = await http.get("/")
            assert "GOPROXY=http://proxy" in home.text
            assert (await http.get("/version")).json()["go"] == "go version test"
    assert not sock.exists()


async def test_path_prefix_serves_go_under_it_and_nothing_outside(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str, go_build_cache: Path
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures, path_prefix="/go/")
    spec = f"{go_fixtures.hello}@v1.1.0"
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/go/healthz")).status_code == 200
        assert (await http.get("/go/metrics")).status_code == 200
        assert (await http.get("/healthz")).status_code == 404
        assert (await http.get(hello_path(go_fixtures, "list"))).status_code == 404
        assert (await http.get("/gomods/healthz")).status_code == 404
        home = await http.get("/go")
        assert home.status_code == 200
        assert f"GOPROXY={server.url}/go<" in home.text
        assert (await http.get("/go/robots.txt")).text == "User-agent: *\nDisallow: /\n"

        env = client_env(tmp_path, go_fixtures, go_build_cache, f"{server.url}/go")
        result = await run_go(
            go_binary, ["mod", "download", "-json", spec], cwd=tmp_path / "w", env=env
        )
    assert json.loads(result.stdout)["Version"] == "v1.1.0"


def test_prefix_request_id_and_route_rules() -> None:
    assert strip_prefix("/go/x/@v/list", "/go") == "/x/@v/list"
    assert strip_prefix("/go", "/go") == "/"
    assert strip_prefix("/golang.org/x/@v/list", "/go") is None
    assert strip_prefix("/anything", "") == "/anything"

    assert clean_request_id(b"abc-123_ok.:/+=@") == "abc-123_ok.:/+=@"
    assert clean_request_id(b"a b\r\nc\"d'e\x00") == "abcde"
    assert len(clean_request_id(b"x" * 1000)) == 128
    generated = clean_request_id(None)
    assert len(generated) == 32
    assert int(generated, 16) >= 0
    assert clean_request_id(b"\r\n ") != clean_request_id(b"\r\n ")  # fresh each time

    assert route_label("/m/@v/list") == "list"
    assert route_label("/m/@v/v1.0.0.info") == "info"
    assert route_label("/m/@v/v1.0.0.mod") == "mod"
    assert route_label("/m/@v/v1.0.0.zip") == "zip"
    assert route_label("/m/@latest") == "latest"
    assert route_label("/metrics") == "other"


# ---------------------------------------------------------------------------------------
# Metrics and logs
# ---------------------------------------------------------------------------------------


async def test_metrics_count_cold_and_warm_requests_fetches_and_joins(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str
) -> None:
    # A go that takes half a second to download, and downloads v1.1.0 only once the
    # test opens the gate: the concurrent requests for it surely overlap.
    gate = tmp_path / "gate"
    slow = go_script(
        tmp_path,
        "slow-go",
        f'case " $* " in *" mod download "*) sleep 0.5 ;; esac\n'
        f'case " $* " in *" mod download "*@v1.1.0*)\n'
        f"  until [ -e {gate} ]; do sleep 0.01; done ;;\n"
        "esac\n"
        f'exec {go_binary} "$@"\n',
    )
    config = make_config(tmp_path, str(slow), go_fixtures)
    async with served(config) as server, httpx.AsyncClient(base_url=server.url, timeout=60) as http:

        async def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            page = await http.get("/metrics")
            assert page.headers["content-type"].startswith("text/plain")
            return metric_values(page.text)

        before = await scrape()
        assert value(before, "athens_trio_fetches_total", outcome="ok") == 0
        assert value(before, "athens_trio_pool_size", pool="stash") == config.go_get_workers
        assert value(before, "athens_trio_pool_size", pool="protocol") == config.protocol_workers
        assert value(before, "athens_trio_connections_max") == config.max_connections

        # (The zip first: an .info miss fetches only the go.mod part.)
        cold = await http.get(hello_path(go_fixtures, "v1.0.0.zip"))  # fetches
        assert cold.status_code == 200
        warm = await http.get(hello_path(go_fixtures, "v1.0.0.info"))  # from storage
        assert warm.status_code == 200
        after = await scrape()
        assert value(after, "athens_trio_fetches_total", outcome="ok") == 1
        assert value(after, "athens_trio_fetch_duration_seconds_count", outcome="ok") == 1
        assert value(after, "athens_trio_fetch_duration_seconds_sum", outcome="ok") >= 0.5
        assert value(after, "athens_trio_cache_misses_total", endpoint="zip") == 1
        assert value(after, "athens_trio_cache_hits_total", endpoint="info") == 1
        assert value(after, "athens_trio_cache_hits_total", endpoint="zip") == 0
        for route in ("info", "zip"):
            assert (
                value(
                    after,
                    "athens_trio_http_requests_total",
                    route=route,
                    method="GET",
                    status="200",
                )
                == 1
            )
        assert value(after, "athens_trio_http_response_bytes_total", route="zip") == len(
            cold.content
        )
        assert value(after, "athens_trio_http_request_duration_seconds_count", route="info") == 1
        assert value(after, "athens_trio_connections_open") >= 1
        assert value(after, "athens_trio_fetches_in_progress") == 0

        # Five at once for a version not stored: one fetch, four joins, five misses.
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(http.get, hello_path(go_fixtures, "v1.1.0.mod"))
            await wait_until(lambda: server.pipeline.singleflight.statistics().joined == 4)
            gate.touch()
        joined = await scrape()
        assert value(joined, "athens_trio_fetches_total", outcome="ok") == 2
        assert value(joined, "athens_trio_singleflight_joins_total") == 4
        assert value(joined, "athens_trio_cache_misses_total", endpoint="mod") == 5
        assert value(joined, "athens_trio_singleflight_in_flight") == 0
        assert value(joined, "athens_trio_pool_in_use", pool="stash") == 0

        # A version that does not exist: a failed fetch, by outcome.
        missing = await http.get(hello_path(go_fixtures, "v1.9.9.info"))
        assert missing.status_code == 404
        failed = await scrape()
        assert value(failed, "athens_trio_fetches_total", outcome="not_found") == 1
        assert (
            value(
                failed, "athens_trio_http_requests_total", route="info", method="GET", status="404"
            )
            == 1
        )


async def test_json_logs_carry_the_request_id_into_the_access_line_and_the_fetch(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures)
    with captured_logs("json") as stream:
        async with (
            served(config) as server,
            httpx.AsyncClient(base_url=server.url, timeout=60) as http,
        ):
            given = await http.get(
                hello_path(go_fixtures, "v1.0.0.mod"), headers={"Athens-Request-ID": "req-42"}
            )
            assert given.headers["athens-request-id"] == "req-42"
            made = await http.get("/healthz")
            generated = made.headers["athens-request-id"]
            hostile = await http.get(
                "/healthz", headers={"Athens-Request-ID": 'x" "level":"error y'}
            )
            assert hostile.headers["athens-request-id"] == "xlevel:errory"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "athens_trio.access"]
    assert [(a["request_id"], a["status"]) for a in access] == [
        ("req-42", 200),
        (generated, 200),
        ("xlevel:errory", 200),
    ]
    first = access[0]
    assert first["method"] == "GET"
    assert first["path"] == hello_path(go_fixtures, "v1.0.0.mod")
    assert first["route"] == "mod"
    assert first["bytes"] > 0
    assert first["level"] == "info"
    assert first["message"].startswith(f"GET {first['path']} 200 ")
    assert first["time"].endswith("Z")
    (fetch,) = [line for line in lines if line["logger"] == "athens_trio.fetch"]
    assert fetch["request_id"] == "req-42"  # the fetch that request started
    assert fetch["module"] == go_fixtures.hello
    assert fetch["version"] == "v1.0.0"
    assert fetch["outcome"] == "ok"
    assert fetch["duration_ms"] > 0


async def test_plain_logs_end_with_the_request_id_and_mask_credentials_in_a_url(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    async with served_storage(tmp_path, go_fixtures, MemoryStorage()) as (server, _):
        with captured_logs("plain") as stream:
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as raw:
                await raw.send_all(
                    b"GET http://user:hunter2@proxy/healthz HTTP/1.1\r\nHost: proxy\r\n"
                    b"Athens-Request-ID: abc\r\n\r\n"
                )
                received = b""
                with trio.fail_after(5):
                    while not received.endswith(b"\r\n\r\nok\n"):  # hypercorn served /healthz
                        received += await raw.receive_some()
                await wait_until(lambda: "athens_trio.access" in stream.getvalue())
    (line,) = stream.getvalue().splitlines()
    assert "hunter2" not in line
    assert "http://***@proxy/healthz" in line
    assert line.endswith(" request_id=abc")
    assert " INFO athens_trio.access: GET " in line


def test_log_level_and_plain_lines_with_a_traceback() -> None:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = setup_logging("warn", "plain", stream)
    log = logging.getLogger("athens_trio.test")
    token = request_id.set("rid-1")
    try:
        log.info("not shown")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        request_id.reset(token)
        root.removeHandler(handler)
        root.setLevel(level)
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith(" ERROR athens_trio.test: failed request_id=rid-1")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"


# ---------------------------------------------------------------------------------------
# Catalog and index
# ---------------------------------------------------------------------------------------


def catalog_versions(count: int) -> list[str]:
    """Versions whose semver order is not their string order."""
    versions = []
    for minor in range(count):
        versions.append(f"v1.{minor}.0")
    versions[1] = "v1.1.0-rc.1"
    versions[2] = "v0.0.0-20240101000000-abcdefabcdef"
    return versions


async def test_catalog_pages_over_2500_versions_return_each_once_in_order(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    storage = MemoryStorage()
    zip_file = tiny_zip(tmp_path)
    stored = []
    for m in range(50):
        module = f"example.com/m{m:02d}"
        for version in catalog_versions(50):
            await storage.save(
                module,
                version,
                info=info(version, "2024-01-01T00:00:00Z"),
                mod=b"",
                zip_file=zip_file,
            )
            stored.append((module, version))
    assert len(stored) == 2500

    async with served_storage(tmp_path, go_fixtures, storage) as (_, http):
        seen: list[tuple[str, str]] = []
        token = ""
        pages = 0
        while True:
            page = await http.get("/catalog", params={"token": token, "pagesize": "300"})
            assert page.status_code == 200
            body = page.json()
            assert set(body) <= {"modules", "next"}
            seen.extend((e["module"], e["version"]) for e in body["modules"])
            pages += 1
            if "next" not in body:
                break
            token = body["next"]
        assert pages == 9
        assert len(seen) == len(set(seen)) == 2500
        assert set(seen) == set(stored)
        first_module = [v for m, v in seen if m == "example.com/m00"]
        assert first_module[:4] == [
            "v0.0.0-20240101000000-abcdefabcdef",
            "v1.0.0",
            "v1.1.0-rc.1",
            "v1.3.0",
        ]
        assert first_module[-2:] == ["v1.48.0", "v1.49.0"]
        assert [m for m, _ in seen] == sorted(m for m, _ in seen)

        default = (await http.get("/catalog")).json()
        assert len(default["modules"]) == 1000  # Athens' default page size
        assert default["next"] == "example.com/m19|v1.49.0"

        assert (await http.get("/catalog", params={"pagesize": "0"})).status_code == 400
        assert (await http.get("/catalog", params={"pagesize": "x"})).status_code == 400
        assert (await http.get("/catalog", params={"token": "no-bar"})).status_code == 400
        beyond = await http.get("/catalog", params={"token": "zzz.example/last|v9.0.0"})
        assert beyond.json() == {"modules": []}


_IDENT = st.one_of(
    st.integers(min_value=0, max_value=30).map(str),
    st.text(alphabet="abcAB-9", min_size=1, max_size=4).filter(lambda t: not t.isdigit()),
)
_VERSIONS = st.builds(
    lambda numbers, pre, build: (
        "v{}.{}.{}".format(*numbers)
        + (("-" + ".".join(pre)) if pre else "")
        + (("+" + build) if build else "")
    ),
    st.tuples(*[st.integers(min_value=0, max_value=12)] * 3),
    st.lists(_IDENT, max_size=3),
    st.sampled_from(["", "incompatible", "meta.1"]),
) | st.sampled_from(["not-a-version", "v1.2.3.4", "latest", "v1", "v1.2", "v0"])


def _go_sort_order(v: str, w: str) -> int:
    """semver.Sort's comparison: by precedence, then as strings."""
    return compare(v, w) or (v > w) - (v < w)


@given(st.lists(_VERSIONS, max_size=25))
def test_catalog_order_is_semver_sort(versions: list[str]) -> None:
    ordered = sort_entries(("m", v) for v in versions)
    assert [v for _, v in ordered] == sorted(versions, key=functools.cmp_to_key(_go_sort_order))


async def test_index_lists_versions_oldest_first_from_since(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    storage = MemoryStorage()
    zip_file = tiny_zip(tmp_path)
    times = {
        ("example.com/b", "v1.0.0"): "2024-03-01T00:00:00Z",
        ("example.com/a", "v1.0.0"): "2024-01-01T00:00:00Z",
        ("example.com/a", "v1.1.0"): "2024-02-01T12:30:00.123456789Z",
        ("example.com/c", "v1.0.0"): "2024-02-01T13:30:00+01:00",  # just before a@v1.1.0
    }
    for (module, version), time in times.items():
        await storage.save(module, version, info=info(version, time), mod=b"", zip_file=zip_file)
    await storage.save("example.com/untimed", "v1.0.0", info=b"{}", mod=b"", zip_file=zip_file)

    async with served_storage(tmp_path, go_fixtures, storage) as (_, http):

        async def index(**params: str) -> list[dict[str, str]]:
            response = await http.get("/index", params=params)
            assert response.status_code == 200, response.text
            assert response.text == "" or response.text.endswith("\n")
            return [json.loads(line) for line in response.text.splitlines()]

        everything = await index()
        assert [(e["Path"], e["Version"]) for e in everything] == [
            ("example.com/a", "v1.0.0"),
            ("example.com/c", "v1.0.0"),
            ("example.com/a", "v1.1.0"),
            ("example.com/b", "v1.0.0"),
        ]
        assert everything[0] == {
            "Path": "example.com/a",
            "Version": "v1.0.0",
            "Timestamp": "2024-01-01T00:00:00Z",
        }
        assert everything[1]["Timestamp"] == "2024-02-01T12:30:00Z"  # in UTC
        assert everything[2]["Timestamp"] == "2024-02-01T12:30:00.123456Z"

        since = await index(since="2024-02-01T12:30:00Z")  # inclusive
        assert [e["Path"] for e in since] == ["example.com/c", "example.com/a", "example.com/b"]
        assert [e["Path"] for e in await index(limit="2")] == ["example.com/a", "example.com/c"]
        assert await index(since="2030-01-01T00:00:00Z") == []
        assert (await http.get("/index", params={"since": "yesterday"})).status_code == 400
        assert (await http.get("/index", params={"limit": "-1"})).status_code == 400

        await storage.delete("example.com/b", "v1.0.0")
        assert len(await index()) == 3


async def test_home_page_and_robots(tmp_path: Path, go_fixtures: GoFixtures) -> None:
    async with served_storage(tmp_path, go_fixtures, MemoryStorage()) as (server, http):
        home = await http.get("/")
        assert home.status_code == 200
        assert home.headers["content-type"] == "text/html; charset=utf-8"
        assert f"GOPROXY={server.url}" in home.text
        assert "netrc" not in home.text  # no auth, no credentials to explain
        hostile = await http.get("/", headers={"Host": "<script>x</script>"})
        assert "<script>" not in hostile.text
        robots = await http.get("/robots.txt")
        assert robots.text == "User-agent: *\nDisallow: /\n"
        assert robots.headers["content-type"] == "text/plain; charset=utf-8"


# ---------------------------------------------------------------------------------------
# Connection limits
# ---------------------------------------------------------------------------------------


async def closed_within(stream: trio.SocketStream, seconds: float) -> bool:
    """Whether the server closes ``stream`` within ``seconds`` (reading what it sends)."""
    with trio.move_on_after(seconds):
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


async def answer_status(stream: trio.SocketStream, seconds: float) -> int:
    """The status of the answer to the request sent on ``stream``, once its head is
    read whole (within ``seconds``: a hang guard)."""
    head = b""
    with trio.fail_after(seconds):
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some()
            assert chunk, f"closed after {head!r}"
            head += chunk
    return int(head.split(maxsplit=2)[1])


#: The one timeout under test; the other is longer than every hang guard here, so a
#: connection closed within a guard was closed by the short one.
SHORT_TIMEOUT, LONG_TIMEOUT, GUARD = 0.5, 600, 60


@pytest.mark.parametrize("short", ["keep_alive", "header"])
async def test_header_timeout_and_keep_alive_close_slow_and_idle_connections(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str, short: str
) -> None:
    """KeepAliveTimeout closes a connection that sent nothing, and never one whose
    request's headers began; RequestHeaderTimeout closes the latter, never the former;
    neither closes one whose request is being answered, however long that takes.  One
    of the two is short in turn, the other longer than the test."""
    keep_alive = SHORT_TIMEOUT if short == "keep_alive" else LONG_TIMEOUT
    header = SHORT_TIMEOUT if short == "header" else LONG_TIMEOUT
    slow = go_script(
        tmp_path,
        "slow-go",
        f'case " $* " in *" mod download "*) sleep {SHORT_TIMEOUT + 1} ;; esac\n'
        f'exec {go_binary} "$@"\n',
    )
    config = make_config(
        tmp_path,
        str(slow),
        go_fixtures,
        request_header_timeout=header,
        keep_alive_timeout=keep_alive,
    )
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    async with served(config) as server, trio.open_nursery() as nursery:
        # A request whose headers came in time may take longer than the short timeout:
        # a fetch that outlasts it while the client says nothing (and the checks run).
        fetched: list[int] = []

        async def fetch() -> None:
            async with httpx.AsyncClient(base_url=server.url) as http:
                response = await http.get(hello_path(go_fixtures, "v1.0.0.info"), timeout=GUARD)
                fetched.append(response.status_code)

        nursery.start_soon(fetch)

        async with (
            await trio.open_tcp_stream("127.0.0.1", server.port) as idle,
            await trio.open_tcp_stream("127.0.0.1", server.port) as trickle,
        ):
            started = trio.current_time()
            await trickle.send_all(request)  # headers begun, never finished
            if short == "keep_alive":
                # Nothing sent: closed once KeepAliveTimeout has passed (not at once).
                assert await closed_within(idle, GUARD)
                assert trio.current_time() - started > keep_alive - 0.05
                # Headers begun: kept past it, and their request is answered.
                assert not await closed_within(trickle, 4 * SHORT_TIMEOUT)
                await trickle.send_all(b"\r\n")
                assert await answer_status(trickle, GUARD) == 200
            else:
                # Headers begun: closed RequestHeaderTimeout after their start.
                assert await closed_within(trickle, GUARD)
                assert trio.current_time() - started > header - 0.05
                # Nothing sent: kept past it (idle, not slow), and a request is answered.
                assert not await closed_within(idle, 4 * SHORT_TIMEOUT)
                await idle.send_all(request + b"\r\n")
                assert await answer_status(idle, GUARD) == 200
    assert fetched == [200]


async def test_a_connection_closes_after_connection_close_or_idle_keep_alive(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    keep_alive = 0.25
    async with served_storage(
        tmp_path, go_fixtures, MemoryStorage(), keep_alive_timeout=keep_alive
    ) as (server, _):
        for close, within in ((True, 0.5), (False, 3)):
            started = trio.current_time()
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
                header = b"Connection: close\r\n" if close else b""
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
                assert await closed_within(stream, within), close
            if not close:  # kept alive, then let go once idle for KeepAliveTimeout
                assert trio.current_time() - started > keep_alive - 0.05


async def test_max_connections_makes_the_next_connection_wait(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    async with served_storage(
        tmp_path, go_fixtures, MemoryStorage(), max_connections=2, keep_alive_timeout=30
    ) as (server, _):
        first = await trio.open_tcp_stream("127.0.0.1", server.port)
        second = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with first, second, httpx.AsyncClient(base_url=server.url) as http:
            # The kernel completes the handshake (listen queue), but nobody answers.
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/healthz", timeout=httpx.Timeout(5, read=0.5))
            await first.aclose()
            answered = await http.get("/healthz", timeout=10)
            assert answered.status_code == 200
            metrics = metric_values((await http.get("/metrics", timeout=10)).text)
            assert value(metrics, "athens_trio_connections_open") == 2
            assert value(metrics, "athens_trio_connections_max") == 2


async def test_bad_certificate_fails_at_start(tmp_path: Path, go_fixtures: GoFixtures) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate\n")
    config = make_config(
        tmp_path, "/nonexistent/go", go_fixtures, tls_cert_file=str(cert), tls_key_file=str(cert)
    )
    with pytest.raises(ssl.SSLError):
        async with served(config):
            pass


# ---------------------------------------------------------------------------------------
# verify, against what the server stored
# ---------------------------------------------------------------------------------------


async def test_verify_repair_then_the_next_request_fetches_the_version_again(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures)
    config_file = tmp_path / "athens.toml"
    config_file.write_text(
        f'StorageType = "disk"\n[Storage.Disk]\nRootPath = "{config.disk_root}"\n'
    )

    async def verify(*args: str) -> tuple[int, str]:
        done = await trio.run_process(
            [sys.executable, "-m", "athens_trio", "verify", "--config", str(config_file), *args],
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT)},
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        return done.returncode, done.stdout.decode()

    async with served(config) as server, httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for version in go_fixtures.hello_versions:
            assert (await http.get(hello_path(go_fixtures, f"{version}.zip"))).is_success
        zip_path = config.disk_root / go_fixtures.hello / "@v" / "v1.0.0.zip"
        good = zip_path.read_bytes()
        assert await verify() == (
            0,
            "verified 2 versions: 2 ok, 0 corrupt, 0 without a recorded hash\n",
        )

        damaged = bytearray(good)
        damaged[len(damaged) // 2] ^= 0x20
        zip_path.write_bytes(bytes(damaged))  # same size, structure whole: served as is
        status, out = await verify("--repair")
        assert status == 1
        assert out.startswith(f"CORRUPT {go_fixtures.hello}@v1.0.0: ")
        assert "1 corrupt (1 removed)" in out
        assert not zip_path.exists()

        again = await http.get(hello_path(go_fixtures, "v1.0.0.zip"))
        assert again.status_code == 200
        assert again.content == good
