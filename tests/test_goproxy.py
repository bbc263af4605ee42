"""The upstream GOPROXY client: the plan as cmd/go reads GOPROXY, and walking it for real
against proxies served on loopback (tests/staticproxy.py) and file:// trees."""

from __future__ import annotations

import base64
import contextlib
import gzip
import logging
import socket
import ssl
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from athens_trio._exceptions import (
    ConfigError,
    FetchTimeoutError,
    InvalidPathError,
    InvalidVersionError,
    NotFoundError,
    StorageError,
    UpstreamError,
)
from athens_trio._http import redirect_allowed
from athens_trio.upstream import _goproxy
from athens_trio.upstream._goproxy import (
    DEFAULT_GOPROXY,
    DIRECT,
    OFF,
    EntryKind,
    GoproxyClient,
    PlanEntry,
    ProxyOffError,
    ProxyPlan,
    SizeLimits,
    UpstreamInfo,
    UseDirect,
    auth_for,
    parse_goproxy,
    plan_from_env,
    read_netrc,
)

from .helpers import self_signed
from .staticproxy import StaticProxy, add_version, static_proxy

MODULE = "example.com/Corp/Tool"  # upper case: every request path is case-escaped
VERSION = "v1.2.0-RC1"
ESCAPED = "example.com/!corp/!tool"
WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def proxy(url: str, fall_back: bool = False, user: str = "", password: str = "") -> PlanEntry:
    return PlanEntry(EntryKind.PROXY, url, fall_back, user, password)


# ---------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------

PLANS: list[tuple[str, tuple[PlanEntry, ...]]] = [
    (DEFAULT_GOPROXY, (proxy("https://proxy.golang.org"), DIRECT)),
    ("direct", (DIRECT,)),
    ("off", (OFF,)),
    (
        "https://corp-proxy,https://public-proxy|https://other,direct",
        (
            proxy("https://corp-proxy"),
            proxy("https://public-proxy", fall_back=True),
            proxy("https://other"),
            DIRECT,
        ),
    ),
    # The separator after an entry decides; the last entry's is ",".
    ("https://a|https://b", (proxy("https://a", True), proxy("https://b"))),
    # Blank entries and spaces are skipped; nothing after direct or off counts.
    (" , https://a/ ,, direct , https://ignored", (proxy("https://a"), DIRECT)),
    ("https://a|off|https://ignored", (proxy("https://a", True), OFF)),
    # A host without a scheme means https; the path stays (less its trailing slash).
    ("corp.example/go/", (proxy("https://corp.example/go"),)),
    ("localhost:8080", (proxy("https://localhost:8080"),)),
    ("HTTP://Example.COM:81/p", (proxy("http://example.com:81/p"),)),
    ("http://[::1]:3000", (proxy("http://[::1]:3000"),)),
    ("file:///srv/goproxy/", (proxy("file:///srv/goproxy"),)),
    # Userinfo becomes credentials, percent-decoded, and leaves the URL.
    (
        "https://bot:p%40ss@corp.example/go|direct",
        (proxy("https://corp.example/go", True, "bot", "p@ss"), DIRECT),
    ),
]


@pytest.mark.parametrize(("goproxy", "entries"), PLANS)
def test_parse_goproxy(goproxy: str, entries: tuple[PlanEntry, ...]) -> None:
    assert parse_goproxy(goproxy).entries == entries


@pytest.mark.parametrize(
    ("goproxy", "reason"),
    [
        (",", "no entries"),
        (" | ", "no entries"),
        ("corp-proxy", "missing scheme"),  # a single word is reserved for keywords
        ("/srv/goproxy", "missing scheme"),
        ("ftp://host", "must be https, http, file"),
        ("file://host/srv", "non-path elements"),
        ("file:relative", "invalid port"),  # go reads it as https://file:relative
        ("https://", "missing host"),
        ("https://host:port", "invalid port"),
        ("https://host/?q=1", "query"),
        ("https://ho st", "spaces"),
        ("https://user:s3cret@host:bad", "invalid port"),
    ],
)
def test_parse_goproxy_refuses(goproxy: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_goproxy(goproxy)
    assert caught.value.key == "GoBinaryEnvVars"
    assert reason in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_plan_from_env_defaults_and_private_patterns() -> None:
    assert plan_from_env({}) == ProxyPlan((proxy("https://proxy.golang.org"), DIRECT))
    assert plan_from_env({"GOPROXY": ""}).entries == plan_from_env({}).entries
    plan = plan_from_env({"GOPROXY": "https://a", "GOPRIVATE": "corp.example/*,*.internal/"})
    assert plan.no_proxy == ("corp.example/*", "*.internal")
    # GONOPROXY, when set, replaces GOPRIVATE for this purpose; empty means unset.
    assert plan_from_env({"GONOPROXY": "x.example", "GOPRIVATE": "y.example"}).no_proxy == (
        "x.example",
    )
    assert plan_from_env({"GONOPROXY": "", "GOPRIVATE": "y.example"}).no_proxy == ("y.example",)
    with pytest.raises(ConfigError, match=r"^ATHENS_GO_BINARY_ENV_VARS: GOPROXY entry"):
        plan_from_env({"GOPROXY": "nonsense"}, config_key="ATHENS_GO_BINARY_ENV_VARS")


def test_private_modules_go_direct_whatever_goproxy_says() -> None:
    for goproxy in ("https://a,https://b", "off", "https://a|direct"):
        plan = parse_goproxy(goproxy, "corp.example,github.com/corp/*")
        assert plan.for_module("corp.example/tool/v2") == (DIRECT,)
        assert plan.for_module("github.com/corp/tool") == (DIRECT,)
        assert plan.goes_direct("github.com/corp/tool/sub")
        assert plan.for_module("github.com/other/tool") == parse_goproxy(goproxy).entries
        assert not plan.goes_direct("corp.example.org/tool")


# ---------------------------------------------------------------------------------------
# Walking it against real servers
# ---------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    add_version(root, MODULE, "v1.1.0", time="2023-06-01T00:00:00Z")
    add_version(root, MODULE, VERSION, mod=b"module example.com/Corp/Tool\n\ngo 1.22\n")
    return root


@contextlib.asynccontextmanager
async def two_proxies(tmp_path: Path, tree: Path) -> AsyncIterator[tuple[StaticProxy, StaticProxy]]:
    """``first`` serves an empty tree (404 for everything) under /first, ``second`` the
    fixture tree under /second."""
    empty = tmp_path / "empty"
    empty.mkdir()
    async with static_proxy(empty, "/first") as first, static_proxy(tree, "/second") as second:
        yield first, second


def trusting(cert: Path) -> httpx.AsyncClient:
    """An HTTP client that trusts ``cert`` (and no other)."""
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=cert))


def client_for(
    goproxy: str, http: httpx.AsyncClient, gonoproxy: str = "", **kwargs: Any
) -> GoproxyClient:
    return GoproxyClient(parse_goproxy(goproxy, gonoproxy), http, **kwargs)


async def test_not_found_on_a_comma_entry_falls_through(tmp_path: Path, tree: Path) -> None:
    async with two_proxies(tmp_path, tree) as (first, second), httpx.AsyncClient() as http:
        client = client_for(f"{first.url},{second.url}", http)
        assert await client.info(MODULE, VERSION) == UpstreamInfo(VERSION, WHEN)
        assert await client.mod(MODULE, VERSION) == b"module example.com/Corp/Tool\n\ngo 1.22\n"
        assert await client.list(MODULE) == ["v1.1.0", VERSION]
        # Both asked, with the module and version case-escaped.
        escaped = "/example.com/!corp/!tool/@v/v1.2.0-!r!c1.info"
        assert first.paths()[0] == "/first" + escaped
        assert second.paths()[0] == "/second" + escaped
        # 410 counts as "does not exist" too.
        first.faults["@v/list"] = 410
        assert await client.list(MODULE) == ["v1.1.0", VERSION]


async def test_a_fault_on_a_comma_entry_stops_the_walk(tmp_path: Path, tree: Path) -> None:
    async with two_proxies(tmp_path, tree) as (first, second), httpx.AsyncClient() as http:
        client = client_for(f"{first.url},{second.url}", http)
        for status in (500, 503, 401, 403, 429, 400):
            first.faults[".info"] = status
            with pytest.raises(UpstreamError, match=f"answered {status}") as caught:
                await client.info(MODULE, VERSION)
            assert not isinstance(caught.value, NotFoundError)
            assert f"{MODULE}@{VERSION}" in str(caught.value)
            assert "injected fault" not in str(caught.value)  # the body is not repeated
        assert second.seen == []


async def test_a_fault_on_a_pipe_entry_falls_through(tmp_path: Path, tree: Path) -> None:
    async with two_proxies(tmp_path, tree) as (first, second), httpx.AsyncClient() as http:
        first.faults[".info"] = 500
        client = client_for(f"{first.url}|{second.url}", http)
        assert await client.info(MODULE, VERSION) == UpstreamInfo(VERSION, WHEN)
        assert len(first.seen) == len(second.seen) == 1


async def test_errors_are_ranked_as_go_ranks_them(tmp_path: Path, tree: Path) -> None:
    async with two_proxies(tmp_path, tree) as (first, second), httpx.AsyncClient() as http:
        # Everyone says "does not exist": NotFoundError, naming the last one asked.
        client = client_for(f"{first.url},{second.url}", http)
        with pytest.raises(NotFoundError, match=r"answered 404") as caught:
            await client.info(MODULE, "v9.9.9")
        assert type(caught.value) is NotFoundError
        # A fault beats a later "does not exist": never a 404 for a broken upstream.
        first.faults[".info"] = 502
        client = client_for(f"{first.url}|{second.url}", http)
        with pytest.raises(UpstreamError, match="answered 502"):
            await client.info(MODULE, "v9.9.9")


async def test_reaching_direct_tells_the_caller_to_run_go(tmp_path: Path, tree: Path) -> None:
    async with two_proxies(tmp_path, tree) as (first, _second), httpx.AsyncClient() as http:
        first.faults["@v/list"] = 500
        client = client_for(f"{first.url}|direct", http)
        with pytest.raises(UseDirect) as caught:
            await client.list(MODULE)
        assert caught.value.module == MODULE
        assert len(caught.value.after) == 1
        assert "answered 500" in caught.value.after[0]
        with pytest.raises(UseDirect):
            await client_for(f"{first.url},direct", http).info(MODULE, VERSION)
        # ...but a fault on a "," entry stops before direct, as in go.
        with pytest.raises(UpstreamError):
            await client_for(f"{first.url},direct", http).list(MODULE)


async def test_off_is_does_not_exist(tmp_path: Path, tree: Path) -> None:
    async with two_proxies(tmp_path, tree) as (first, _second), httpx.AsyncClient() as http:
        with pytest.raises(ProxyOffError, match="disabled by GOPROXY=off"):
            await client_for("off", http).info(MODULE, VERSION)
        with pytest.raises(ProxyOffError):
            await client_for(f"{first.url},off", http).info(MODULE, VERSION)
        assert len(first.seen) == 1
        first.faults[".info"] = 500
        with pytest.raises(UpstreamError, match="answered 500"):
            await client_for(f"{first.url}|off", http).info(MODULE, VERSION)


async def test_private_modules_never_reach_a_proxy(tmp_path: Path, tree: Path) -> None:
    async with two_proxies(tmp_path, tree) as (first, second), httpx.AsyncClient() as http:
        for goproxy in (f"{first.url},{second.url}", "off"):
            client = client_for(goproxy, http, gonoproxy="example.com/Corp")
            with pytest.raises(UseDirect):
                await client.download_zip(MODULE, VERSION, tmp_path / "out.zip")
        client = GoproxyClient(plan_from_env({"GOPROXY": second.url, "GOPRIVATE": "*.com"}), http)
        with pytest.raises(UseDirect):
            await client.latest(MODULE)
        assert first.seen == second.seen == []


async def test_userinfo_is_basic_auth_and_never_shown(tmp_path: Path, tree: Path) -> None:
    async with two_proxies(tmp_path, tree) as (first, second), httpx.AsyncClient() as http:
        with_auth = second.url.replace("http://", "http://bot:s3cr%40t@")
        client = client_for(with_auth, http)
        assert await client.mod(MODULE, VERSION)
        # base64("bot:s3cr@t")
        assert second.seen[0].headers["authorization"] == "Basic Ym90OnMzY3JAdA=="
        second.faults[".mod"] = 401
        with pytest.raises(UpstreamError) as caught:
            await client.mod(MODULE, VERSION)
        message = str(caught.value)
        assert "answered 401" in message
        assert "127.0.0.1" in message
        assert "s3cr" not in message
        assert "bot" not in message
        # An entry without userinfo sends none.
        with pytest.raises(NotFoundError):
            await client_for(first.url, http).list(MODULE)
        assert "authorization" not in first.seen[0].headers


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


NETRC = """\
machine Corp.Example login corp password corp-pw
machine 127.0.0.1 login bot password netrc-s3cret
machine 127.0.0.1:8443 login port password port-pw
machine corp.example:443 login default-port password 443-pw
machine [::1]:8443 login v6 password v6-pw
default login anyone password default-pw
"""


def test_read_netrc(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "netrc").write_text(NETRC)
    assert read_netrc(tmp_path / "netrc") == {
        "corp.example": ("corp", "corp-pw"),
        "127.0.0.1": ("bot", "netrc-s3cret"),
        "127.0.0.1:8443": ("port", "port-pw"),
        "corp.example:443": ("default-port", "443-pw"),
        "[::1]:8443": ("v6", "v6-pw"),
    }
    # What cannot be used gives nothing, with a warning that quotes no secret.
    (tmp_path / "broken").write_text("machine a login x password unclosed-s3cret\nbogus-s3cret\n")
    with caplog.at_level(logging.WARNING, "athens_trio.upstream"):
        assert read_netrc(tmp_path / "broken") == {}
        assert read_netrc(tmp_path / "missing") == {}
    assert "cannot parse line" in caplog.text
    assert "No such file" in caplog.text
    assert "s3cret" not in caplog.text


@pytest.mark.parametrize(
    ("url", "user", "expected"),
    [
        # Over https, the netrc's login for the host as the URL has it: with its port
        # where it has one (go's rule: a host's login is not another port's).
        ("https://corp.example/go", "", ("corp", "corp-pw")),
        ("https://127.0.0.1/go", "", ("bot", "netrc-s3cret")),
        ("https://127.0.0.1:9/go", "", None),
        ("https://127.0.0.1:8443/go", "", ("port", "port-pw")),
        ("https://corp.example:443/go", "", ("default-port", "443-pw")),
        ("https://[::1]:8443/go", "", ("v6", "v6-pw")),
        # Never over plain http; never a host it does not name ("default" is not used).
        ("http://corp.example/go", "", None),
        ("https://other.example/go", "", None),
        # Userinfo wins, over http too (it was asked for).
        ("https://corp.example/go", "me", ("me", "pw")),
        ("http://corp.example/go", "me", ("me", "pw")),
    ],
)
def test_auth_for(tmp_path: Path, url: str, user: str, expected: tuple[str, str] | None) -> None:
    (tmp_path / "netrc").write_text(NETRC)
    entry = proxy(url, user=user, password="pw" if user else "")
    auth = auth_for(entry, read_netrc(tmp_path / "netrc"))
    if expected is None:
        assert auth is None
    else:
        assert auth is not None
        request = next(auth.auth_flow(httpx.Request("GET", url)))
        assert request.headers["authorization"] == basic(*expected)


async def test_netrc_logins_go_to_https_proxies_only(tmp_path: Path, tree: Path) -> None:
    tls = self_signed(tmp_path)
    wanted = basic("bot", "netrc-s3cret")
    async with (
        static_proxy(tree) as plain,
        static_proxy(tree, tls=tls) as secure,
        trusting(tls[0]) as http,
    ):
        machines = [url.split("//")[1] for url in (plain.url, secure.url)]
        (tmp_path / "netrc").write_text(
            "".join(f"machine {m} login bot password netrc-s3cret\n" for m in machines)
        )
        logins = read_netrc(tmp_path / "netrc")
        plain.require_auth = secure.require_auth = wanted
        with pytest.raises(UpstreamError, match="answered 401") as caught:
            await client_for(plain.url, http, netrc=logins).mod(MODULE, VERSION)
        assert "authorization" not in plain.seen[0].headers
        assert "s3cret" not in str(caught.value)
        assert await client_for(secure.url, http, netrc=logins).mod(MODULE, VERSION)
        assert secure.seen[-1].headers["authorization"] == wanted
        # Without the netrc, none is sent.
        with pytest.raises(UpstreamError, match="answered 401"):
            await client_for(secure.url, http).mod(MODULE, VERSION)
        assert "authorization" not in secure.seen[-1].headers


async def test_network_failures_are_upstream_errors(tmp_path: Path, tree: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://user:pw@127.0.0.1:{sock.getsockname()[1]}"
    async with two_proxies(tmp_path, tree) as (_first, second), httpx.AsyncClient() as http:
        with pytest.raises(UpstreamError, match="ConnectError") as caught:
            await client_for(f"{closed},{second.url}", http).list(MODULE)
        assert "pw" not in str(caught.value)
        assert "user" not in str(caught.value)
        assert await client_for(f"{closed}|{second.url}", http).list(MODULE)


async def test_timeouts(tmp_path: Path, tree: Path) -> None:
    async with two_proxies(tmp_path, tree) as (first, second):
        first.hang.add(".info")
        # The whole call's deadline: no fall-through past it.
        async with httpx.AsyncClient() as http:
            client = client_for(f"{first.url}|{second.url}", http, timeout=0.3)
            with pytest.raises(FetchTimeoutError, match=f"{MODULE}@{VERSION}"):
                await client.info(MODULE, VERSION)
        # The HTTP client's read timeout: a fault of that entry, so "|" falls through.
        async with httpx.AsyncClient(timeout=0.3) as http:
            client = client_for(f"{first.url}|{second.url}", http)
            assert await client.info(MODULE, VERSION) == UpstreamInfo(VERSION, WHEN)
            with pytest.raises(FetchTimeoutError, match="timed out"):
                await client_for(f"{first.url},{second.url}", http).info(MODULE, VERSION)


async def test_zip_is_streamed_to_disk_in_bounded_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zip_bytes = bytes(range(256)) * (12 << 12)  # 12 MiB
    root = tmp_path / "tree"
    add_version(root, MODULE, VERSION, zip_bytes=zip_bytes)
    writes: list[int] = []
    write = _goproxy._Spool.write

    async def record(spool: _goproxy._Spool, data: bytes) -> None:
        writes.append(len(data))
        await write(spool, data)

    monkeypatch.setattr(_goproxy._Spool, "write", record)
    out = tmp_path / "out"
    out.mkdir()
    async with static_proxy(root) as served, httpx.AsyncClient() as http:
        served.unsized.add(".zip")  # chunked: the client cannot know the size up front
        client = client_for(served.url, http)
        tracemalloc.start()
        try:
            size = await client.download_zip(MODULE, VERSION, out / "v.zip")
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert size == len(zip_bytes)
    assert (out / "v.zip").read_bytes() == zip_bytes
    assert [p.name for p in out.iterdir()] == ["v.zip"]  # no temporary file left
    assert len(writes) == 12
    assert max(writes) == _goproxy.CHUNK_BYTES
    assert peak < 6 << 20, f"peak {peak} bytes while streaming a 12 MiB zip"


async def test_a_stalled_download_times_out_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    add_version(root, MODULE, VERSION, zip_bytes=bytes(3 << 20))
    out = tmp_path / "out"
    out.mkdir()
    async with static_proxy(root) as served, httpx.AsyncClient() as http:
        served.stall.add(".zip")
        client = client_for(served.url, http, download_timeout=0.5)
        with pytest.raises(FetchTimeoutError, match="zip"):
            await client.download_zip(MODULE, VERSION, out / "v.zip")
        assert list(out.iterdir()) == []
        # The same, cancelled from outside.
        with trio.move_on_after(0.3):
            await client_for(served.url, http).download_zip(MODULE, VERSION, out / "v.zip")
        assert list(out.iterdir()) == []


async def test_size_caps(tmp_path: Path, tree: Path) -> None:
    add_version(tree, MODULE, "v1.3.0", zip_bytes=bytes(3000), mod=b"m" * 3000)
    out = tmp_path / "out"
    out.mkdir()
    limits = SizeLimits(zip=2000, go_mod=2000, info=20, list=10)
    async with two_proxies(tmp_path, tree) as (first, second), httpx.AsyncClient() as http:
        client = client_for(f"{second.url}|{first.url}", http, limits=limits, chunk_bytes=512)
        for unsized in (False, True):  # refused by Content-Length, or while reading
            if unsized:
                second.unsized.update({".zip", ".mod", ".info", "list"})
            with pytest.raises(UpstreamError, match="more than 2000 bytes"):
                await client.download_zip(MODULE, "v1.3.0", out / "v.zip")
            assert list(out.iterdir()) == []
            with pytest.raises(UpstreamError, match="more than 2000 bytes"):
                await client.mod(MODULE, "v1.3.0")
            with pytest.raises(UpstreamError, match="more than 20 bytes"):
                await client.info(MODULE, VERSION)
            with pytest.raises(UpstreamError, match="more than 10 bytes"):
                await client.list(MODULE)
        # Under the cap all is well.
        client = client_for(second.url, http, chunk_bytes=512)
        assert await client.download_zip(MODULE, "v1.3.0", out / "v.zip") == 3000


async def test_compressed_answers_are_refused_undecoded(tmp_path: Path, tree: Path) -> None:
    # 32 MiB of zeros in 32 KiB: decoding one raw chunk would hold it all at once.
    bomb = gzip.compress(bytes(32 << 20))
    small_mod = gzip.compress(b"module example.com/Corp/Tool\n")
    async with two_proxies(tmp_path, tree) as (first, second), httpx.AsyncClient() as http:
        assert await client_for(second.url, http).mod(MODULE, VERSION)
        assert second.seen[-1].headers["accept-encoding"] == "identity"
        second.gzipped.update({".info": bomb, ".mod": small_mod})
        client = client_for(second.url, http)
        tracemalloc.start()
        try:
            with pytest.raises(UpstreamError, match="Content-Encoding 'gzip'") as caught:
                await client.info(MODULE, VERSION)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, f"peak {peak} bytes refusing a 32 KiB gzip body"
        assert f"{MODULE}@{VERSION}" in str(caught.value)
        assert caught.value.status == 502
        # Even a small one that would decode to a valid go.mod is refused...
        with pytest.raises(UpstreamError, match="Content-Encoding 'gzip'"):
            await client.mod(MODULE, VERSION)
        # ...as a fault of that entry: a "|" entry falls through, a "," one does not.
        first.root = tree
        assert await client_for(f"{second.url}|{first.url}", http).mod(MODULE, VERSION)
        with pytest.raises(UpstreamError, match="gzip"):
            await client_for(f"{second.url},{first.url}", http).mod(MODULE, VERSION)


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("https://a/x", "https://b/y", True),
        ("http://a/x", "http://b/y", True),
        ("http://a/x", "https://a/x", True),
        ("https://a/x", "http://a/x", False),
        ("https://a:443/x", "http://a:443/x", False),
        ("HTTPS://a/x", "HTTP://b/y", False),
    ],
)
def test_redirect_allowed(source: str, target: str, allowed: bool) -> None:
    assert redirect_allowed(httpx.URL(source), httpx.URL(target)) is allowed


async def test_redirects_from_https_to_http_are_refused_before_asking(
    tmp_path: Path, tree: Path
) -> None:
    tls = self_signed(tmp_path)
    async with (
        two_proxies(tmp_path, tree) as (first, second),
        static_proxy(tmp_path / "empty", tls=tls) as secure,
        trusting(tls[0]) as http,
    ):
        assert secure.url.startswith("https://")
        secure.redirect_to = second.url
        client = client_for(f"{secure.url}|{first.url}", http)
        with pytest.raises(UpstreamError) as caught:
            await client.mod(MODULE, VERSION)
        message = str(caught.value)
        assert f"{MODULE}@{VERSION} go.mod" in message
        assert f"from secure URL {secure.url} to insecure URL {second.url.rsplit('/', 1)[0]}" in (
            message
        )
        assert "/second" not in message  # scheme and host only
        assert second.seen == []  # refused before the insecure request went out
        assert [seen.path for seen in first.seen] == [f"/first/{ESCAPED}/@v/v1.2.0-!r!c1.mod"]
        # Upgrades, and redirects within a scheme, are followed.
        first.redirect_to = secure.url
        secure.root, secure.redirect_to = tree, ""
        assert await client_for(first.url, http).mod(MODULE, VERSION)
        # As in go, ten redirects at most.
        secure.redirect_to = secure.url
        with pytest.raises(UpstreamError, match="stopped after 10 redirects"):
            await client_for(secure.url, http).mod(MODULE, VERSION)
        assert len(secure.seen) == 1 + 1 + 11


async def test_file_tree(tmp_path: Path, tree: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    async with httpx.AsyncClient() as http:
        client = client_for(f"file://{tree},direct", http, chunk_bytes=7)
        assert await client.list(MODULE) == ["v1.1.0", VERSION]
        assert await client.info(MODULE, VERSION) == UpstreamInfo(VERSION, WHEN)
        assert (
            await client.mod(MODULE, VERSION)
            == (tree / "example.com/!corp/!tool/@v/v1.2.0-!r!c1.mod").read_bytes()
        )
        assert await client.download_zip(MODULE, VERSION, out / "v.zip") == 22
        with pytest.raises(UseDirect):  # missing in the tree: next entry
            await client.info(MODULE, "v9.0.0")
        with pytest.raises(NotFoundError) as caught:
            await client_for(f"file://{tree}", http).mod("example.com/other", "v1.0.0")
        assert str(tree) not in str(caught.value)  # no local paths in messages


async def test_list_keeps_upstreams_order_and_drops_nonsense(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "example.com/m/@v").mkdir(parents=True)
    (root / "example.com/m/@v/list").write_text(
        "v1.0.0\n\n  v0.9.0 2020-01-01T00:00:00Z\nmaster\nv1.2\n-v1.0.0\nv1.0.0+meta\n"
        "v0.0.0-20200101000000-abcdefabcdef\r\nv2.0.0+incompatible\n"
    )
    async with httpx.AsyncClient() as http:
        assert await client_for(f"file://{root}", http).list("example.com/m") == [
            "v1.0.0",
            "v0.9.0",
            "v0.0.0-20200101000000-abcdefabcdef",
            "v2.0.0+incompatible",
        ]


async def test_latest(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    pseudo = "v0.0.0-20240301000000-abcdefabcdef"
    add_version(root, "example.com/m", pseudo, time="2024-03-01T00:00:00+02:00")
    add_version(root, "example.com/m", "v0.0.0-20240201000000-bbbbbbbbbbbb")
    async with static_proxy(root) as served, httpx.AsyncClient() as http:
        client = client_for(served.url, http)
        # No @latest: go's fallback picks the newest pseudo-version, then asks its .info.
        info = await client.latest("example.com/m")
        assert info.version == pseudo
        assert info.time == datetime(2024, 2, 29, 22, tzinfo=UTC)
        assert served.paths()[-3:] == [
            "/example.com/m/@latest",
            "/example.com/m/@v/list",
            f"/example.com/m/@v/{pseudo}.info",
        ]
        # Times in the list count, tagged versions without one do not.
        (root / "example.com/m/@v/list").write_text(
            f"v1.0.0\n{pseudo}\nv0.5.0 2025-01-01T00:00:00Z\n"
        )
        assert await client.latest("example.com/m") == UpstreamInfo(
            "v0.5.0", datetime(2025, 1, 1, tzinfo=UTC)
        )
        (root / "example.com/m/@latest").write_text(
            '{"Version":"v1.0.0","Time":"2024-05-01T00:00:00Z"}'
        )
        assert (await client.latest("example.com/m")).version == "v1.0.0"
        (root / "example.com/n/@v").mkdir(parents=True)
        (root / "example.com/n/@v/list").write_text("v1.0.0\n")
        with pytest.raises(NotFoundError, match="no versions"):
            await client.latest("example.com/n")


async def test_bad_answers_are_faults(tmp_path: Path, tree: Path) -> None:
    stem = tree / "example.com/!corp/!tool/@v"
    (stem / "v1.1.0.info").write_text('{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}')
    (stem / "main.info").write_text('{"Version":"v1.1.0","Time":"2024-01-02T03:04:05Z"}')
    (stem / "broken.info").write_text("<html>")
    (stem / "major.info").write_text('{"Version":"v3.0.0","Time":"2024-01-02T03:04:05Z"}')
    async with httpx.AsyncClient() as http:
        client = client_for(f"file://{tree}", http)
        with pytest.raises(UpstreamError, match=r"answered for v1\.0\.0 instead"):
            await client.info(MODULE, "v1.1.0")
        assert (await client.info(MODULE, "main")).version == "v1.1.0"  # a query resolves
        with pytest.raises(UpstreamError, match="invalid response"):
            await client.info(MODULE, "broken")
        with pytest.raises(UpstreamError, match="invalid response"):
            await client.info(MODULE, "major")  # v3 of a v0/v1 path
        # What go would refuse to ask is refused before any request.
        with pytest.raises(InvalidVersionError):
            await client.mod(MODULE, "v1.2")
        with pytest.raises(InvalidVersionError):
            await client.download_zip(MODULE, "main", tmp_path / "x.zip")
        with pytest.raises(InvalidVersionError):
            await client_for("off", http).info(MODULE, "-bad")
        with pytest.raises(InvalidPathError):
            await client_for("direct", http).list("Example.com/m")


async def test_local_write_failures_are_not_upstream_faults(tmp_path: Path, tree: Path) -> None:
    async with httpx.AsyncClient() as http:
        client = client_for(f"file://{tree}|file://{tree}", http)
        with pytest.raises(StorageError, match="temporary file") as caught:
            await client.download_zip(MODULE, VERSION, tmp_path / "missing-dir" / "v.zip")
        assert str(tmp_path) not in str(caught.value)
