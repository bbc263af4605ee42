"""Hostile input against a live server: a clear 4xx, never a 5xx, never a side effect.

Every request here is sent byte for byte by a raw client (httpx would normalise dot
segments, percent escapes and control bytes away).  The proxy's go is a wrapper that
records every run, and each case checks that the request ran no go, stored nothing,
created nothing anywhere under the test's directory (the storage root, GoGetDir and
their parent), and that the server still answers afterwards.

Property tests cover the parser itself: every path it accepts is the one canonical
spelling of what it asks for (decode then encode gives the path back), and resolves
inside the storage root; a fuzz run against a live server checks that whatever go is
asked for is exactly what the parser accepted, with nothing that could act as a flag.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athens_trio import Config, DiskStorage, InvalidRequestError
from athens_trio._endpoints import LATEST, LIST, Endpoint
from athens_trio._module import escape_path, escape_version
from athens_trio.server._routing import NoSuchEndpointError, parse_proxy_path

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import counting_go, go_runs, leftover, raw_request, recording_go, served, tree

HELLO = "github.com/athens-fixtures/hello"
H = b"/" + HELLO.encode()

# (request target, expected status).  {H} is the path of a module that exists, so any
# request that slipped through to go would find something to fetch.
TARGETS: list[tuple[str, bytes, int]] = [
    # Path traversal, in every spelling.
    ("dotdot-bare", b"/..", 404),
    ("dotdot-escaped", b"/%2e%2e/@v/list", 400),
    ("dotdot-escaped-upper", b"/%2E%2E/@v/list", 400),
    ("dotdot-inside", b"/github.com/x/../../etc/@v/list", 400),
    ("dotdot-escaped-inside", b"/github.com/x/%2e%2e/%2e%2e/etc/@v/list", 400),
    ("dot-element", b"/github.com/./x/@v/list", 400),
    ("slash-escaped-dotdot", b"/github.com/athens-fixtures/..%2f..%2fetc/@v/list", 400),
    ("slash-escaped-absolute", b"/%2fetc%2fpasswd/@v/list", 400),
    ("backslash", b"/github.com/x/..%5c..%5cetc/@v/list", 400),
    ("double-escaped", b"/%252e%252e/@v/list", 400),
    ("doubled-slash-inside", b"/github.com//athens-fixtures/hello/@v/list", 400),
    ("trailing-slash-module", H + b"//@v/list", 400),
    ("after-v-dotdot", H + b"/@v/../../../../etc/passwd.info", 400),
    ("after-v-escaped", H + b"/@v/..%2f..%2fx.info", 400),
    ("after-v-version-dir", H + b"/@v/v1.0.0/../../x.zip", 400),
    ("after-v-dotdot-version", H + b"/@v/%2e%2e.info", 400),
    ("after-v-dot-version", H + b"/@v/..zip", 400),
    ("after-v-hidden-tmp", H + b"/@v/.tmp-x-v1.0.0.zip", 400),
    ("after-v-absolute", H + b"/@v/%2fetc%2fpasswd.info", 400),
    # NUL and control bytes, raw and escaped.
    ("nul-escaped-module", H + b"%00/@v/list", 400),
    ("nul-escaped-version", H + b"/@v/v1.0.0%00.info", 400),
    ("nul-raw", H + b"\x00/@v/list", 400),
    ("crlf-escaped", H + b"%0d%0aX-Injected:%201/@v/list", 400),
    ("crlf-version", H + b"/@v/v1.0.0%0d%0aX-Injected:%201.info", 400),
    ("escape-raw", H + b"\x1b/@v/list", 400),
    ("escape-escaped", H + b"%1b[31m/@v/list", 400),
    ("tab-escaped", H + b"%09/@v/list", 400),
    ("del-escaped", H + b"%7f/@v/list", 400),
    # Non-ASCII, escaped and raw, valid and invalid UTF-8.
    ("non-ascii-escaped", H + b"%c3%a9/@v/list", 400),
    ("non-ascii-raw", H + "é".encode() + b"/@v/list", 400),
    ("kelvin-sign", b"/github.com/athens-fixtures/%e2%84%aaelvin/@v/list", 400),
    ("invalid-utf8", H + b"%ff/@v/list", 400),
    ("non-ascii-version", H + b"/@v/v1.0.0-%c3%a9.info", 400),
    # Invalid case encoding.
    ("bang-bang", b"/github.com/athens-fixtures/!!hello/@v/list", 400),
    ("trailing-bang", b"/github.com/athens-fixtures/hello!/@v/list", 400),
    ("bang-digit", b"/github.com/athens-fixtures/!1hello/@v/list", 400),
    ("raw-upper-module", b"/github.com/Athens-Fixtures/hello/@v/list", 400),
    ("raw-upper-version", H + b"/@v/v1.0.0-RC.info", 400),
    ("bang-bang-version", H + b"/@v/v1.0.0-!!rc.info", 400),
    ("trailing-bang-version", H + b"/@v/v1.0.0!.info", 400),
    # Empty paths.
    ("empty-target", b"", 400),
    ("empty-module-list", b"/@v/list", 400),
    ("empty-module-latest", b"/@latest", 400),
    ("empty-module-doubled", b"//@v/list", 400),
    ("empty-version", H + b"/@v/.info", 400),
    ("empty-after-v", H + b"/@v/", 400),
    # Over-long paths and versions.
    ("long-element", b"/github.com/" + b"a" * 3000 + b"/@v/list", 400),
    ("long-path", b"/x.y/" + b"z/" * 600 + b"@v/list", 400),
    ("long-version", H + b"/@v/v1.0.0-" + b"a" * 400 + b".info", 400),
    ("long-escapes", b"/x.y/" + b"!z" * 2000 + b"/@v/list", 400),
    ("huge-target", H + b"/@v/v1.0.0-" + b"a" * 20000 + b".info", 400),
    ("enormous-target", H + b"/@v/v1.0.0-" + b"a" * 200_000 + b".info", 431),
    # A leading "-": it must never reach go as a flag.
    ("dash-module", b"/-x/@v/list", 400),
    ("dash-module-flag", b"/-modfile=/etc/passwd/@v/list", 400),
    ("dash-module-latest", b"/-x/@latest", 400),
    ("dash-version", H + b"/@v/-x.info", 400),
    ("dash-version-flag", H + b"/@v/--help.info", 400),
    ("dash-version-modfile", H + b"/@v/-modfile=x.info", 400),
    ("dash-version-mod", H + b"/@v/-v.mod", 400),
    ("dash-version-zip", H + b"/@v/-v.zip", 400),
    # Shell metacharacters (go is run with an argv, but they are refused anyway).
    ("shell-subst", b"/github.com/x/$(id)/@v/list", 400),
    ("shell-subst-escaped", b"/github.com/x/%24%28id%29/@v/list", 400),
    ("shell-semicolon", b"/github.com/x/y;id/@v/list", 400),
    ("shell-semicolon-version", H + b"/@v/v1.0.0;id.info", 400),
    ("shell-backtick", H + b"/@v/`id`.info", 400),
    ("shell-pipe", H + b"/@v/v1.0.0|id.info", 400),
    ("shell-ampersand", H + b"/@v/v1.0.0&id.info", 400),
    ("shell-redirect", H + b"/@v/v1.0.0%3e%2ftmp%2fx.info", 400),
    ("shell-space", H + b"/@v/a%20b.info", 400),
    ("shell-glob", b"/github.com/x/*/@v/list", 400),
    ("shell-quote", b"/github.com/x/'y'/@v/list", 400),
    # Unknown suffixes and endpoints.
    ("suffix-tar", H + b"/@v/v1.0.0.tar", 400),
    ("suffix-double", H + b"/@v/v1.0.0.zip.bak", 400),
    ("suffix-upper", H + b"/@v/v1.0.0.ZIP", 400),
    ("suffix-none", H + b"/@v/v1.0.0", 400),
    ("suffix-ziphash", H + b"/@v/v1.0.0.ziphash", 400),
    ("suffix-list2", H + b"/@v/list2", 400),
    ("suffix-list-dir", H + b"/@v/list/x", 400),
    ("suffix-latest2", H + b"/@latest2", 404),
    ("suffix-fragment", H + b"/@v/list#frag", 400),
    # Non-canonical versions on .mod and .zip (only .info resolves queries).
    ("noncanonical-mod", H + b"/@v/v1.0.mod", 400),
    ("noncanonical-zip", H + b"/@v/v1.zip", 400),
    ("branch-zip", H + b"/@v/main.zip", 400),
    ("build-meta-zip", H + b"/@v/v1.0.0+meta.zip", 400),
    ("leading-zero-mod", H + b"/@v/v01.0.0.mod", 400),
    ("latest-zip", H + b"/@v/latest.zip", 400),
]

# Methods other than GET and HEAD, on a path that would fetch a real version.
METHODS = [b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE", b"PROPFIND", b"FOO"]


@pytest.fixture
def hostile_config(tmp_path: Path, go_binary: str, go_fixtures: GoFixtures) -> Config:
    """A proxy whose go records every run (and then really works, so that a request
    that slipped through would show as a run, a stored version, a temp directory)."""
    wrapper, _ = counting_go(tmp_path, go_binary)
    return make_config(tmp_path, str(wrapper), go_fixtures)


async def _assert_no_side_effect(
    tmp_path: Path, config: Config, before: dict[str, int], url: str
) -> None:
    assert go_runs(tmp_path / "counting-go.runs") == []
    assert tree(config.disk_root) == {}
    assert leftover(config) == []
    # Nothing created, removed or resized anywhere under the test's directory (the
    # storage root, GoGetDir and their parent), the fixture repositories aside.
    assert tree(tmp_path) == before
    healthy = await raw_request(url, b"/healthz")
    assert healthy.status == 200  # and the server lives on


def _snapshot(tmp_path: Path) -> dict[str, int]:
    return tree(tmp_path)


@pytest.mark.parametrize(
    ("target", "status"), [(t, s) for _, t, s in TARGETS], ids=[i for i, _, _ in TARGETS]
)
async def test_hostile_path_is_a_clear_4xx_without_side_effects(
    tmp_path: Path, hostile_config: Config, target: bytes, status: int
) -> None:
    async with served(hostile_config) as server:
        before = _snapshot(tmp_path)
        response = await raw_request(server.url, target)
        assert response.status == status, response.text
        if response.headers.get("content-type", "").startswith("text/plain"):
            assert response.text.strip()  # a reason, for go to show its user
            # Whatever the path held, it did not become a header or a raw control byte.
            assert "x-injected" not in response.headers
            assert not any(ord(c) < 0x20 and c not in "\n" for c in response.text)
        await _assert_no_side_effect(tmp_path, hostile_config, before, server.url)


async def test_a_doubled_leading_slash_is_refused_not_normalised(
    tmp_path: Path, hostile_config: Config
) -> None:
    """``//<module>/@v/v1.0.0.info`` is no GOPROXY path (``parse_proxy_path`` refuses
    it), so it must not reach go as ``<module>``."""
    async with served(hostile_config) as server:
        before = _snapshot(tmp_path)
        response = await raw_request(server.url, b"/" + H + b"/@v/v1.0.0.info")
        assert response.status == 400, response.text
        await _assert_no_side_effect(tmp_path, hostile_config, before, server.url)


@pytest.mark.parametrize("method", METHODS, ids=[m.decode() for m in METHODS])
async def test_other_methods_are_405_and_fetch_nothing(
    tmp_path: Path, hostile_config: Config, method: bytes
) -> None:
    async with served(hostile_config) as server:
        before = _snapshot(tmp_path)
        for target in (H + b"/@v/v1.0.0.zip", H + b"/@v/list", H + b"/@latest"):
            response = await raw_request(server.url, target, method=method, body=b"x" * 1000)
            assert response.status == 405, (target, response.text)
            assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
        await _assert_no_side_effect(tmp_path, hostile_config, before, server.url)


async def test_a_large_request_body_is_refused_unread(
    tmp_path: Path, hostile_config: Config
) -> None:
    async with served(hostile_config) as server:
        before = _snapshot(tmp_path)
        for method in (b"POST", b"PUT"):
            response = await raw_request(
                server.url, H + b"/@v/v1.0.0.zip", method=method, body=b"x" * (4 << 20)
            )
            assert 400 <= response.status < 500, (method, response.status)
        await _assert_no_side_effect(tmp_path, hostile_config, before, server.url)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"X-Big", b"a" * 100_000)], 431),
        ([(b"X-Many-%d" % i, b"a" * 50) for i in range(2000)], 431),
        ([(b"Cookie", b"c=" + b"a" * 70_000)], 431),
        ([(b"Range", b"bytes=" + b"9" * 100_000 + b"-")], 431),
        ([(b"X-Nul", b"a\x00b")], 400),
        ([(b"X-Bad Name", b"x")], 400),
    ],
    ids=["one-huge", "many", "huge-cookie", "huge-range", "nul-value", "space-in-name"],
)
async def test_oversized_and_malformed_headers_are_refused(
    tmp_path: Path, hostile_config: Config, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    async with served(hostile_config) as server:
        before = _snapshot(tmp_path)
        response = await raw_request(server.url, H + b"/@v/v1.0.0.zip", headers=headers)
        assert response.status == status
        await _assert_no_side_effect(tmp_path, hostile_config, before, server.url)


# ---------------------------------------------------------------------------------------
# Properties of the path parser
# ---------------------------------------------------------------------------------------

_TOKENS = [
    "github.com", "x.y", "a", "Z", "0", "-", "_", "~", ".", "..", "/", "//", "!", "!a",
    "!!", "!A", "@v/", "@v", "@latest", "list", "v1.0.0", "v1.0", "v2.0.0+incompatible",
    "-rc.1", "!r!c1", ".info", ".mod", ".zip", ".tar", "%2e", "%2f", "\\", "\x00", "\n",
    "é", "\u212a", " ", ";", "$", "*", ":", "+", "=", "v0.0.0-20240101000000-0123456789ab",
]  # fmt: skip
_PATHS = st.one_of(
    st.lists(st.sampled_from(_TOKENS), max_size=14).map(lambda parts: "/" + "".join(parts)),
    st.text(max_size=60).map(lambda text: "/" + text),
    st.builds(
        lambda m, v, ext: f"/{m}/@v/{v}{ext}",
        st.lists(st.sampled_from(_TOKENS[:12]), min_size=1, max_size=6).map("".join),
        st.lists(st.sampled_from(_TOKENS[12:]), min_size=1, max_size=4).map("".join),
        st.sampled_from([".info", ".mod", ".zip", ""]),
    ),
)


def _encode(endpoint: Endpoint, module: str, version: str | None) -> str:
    if endpoint is LIST:
        return f"/{escape_path(module)}/@v/list"
    if endpoint is LATEST:
        return f"/{escape_path(module)}/@latest"
    assert version is not None
    return f"/{escape_path(module)}/@v/{escape_version(version)}.{endpoint.name}"


@settings(max_examples=500, deadline=None)
@given(_PATHS)
def test_accepted_paths_are_canonical_and_stay_inside_the_storage_root(path: str) -> None:
    try:
        wanted = parse_proxy_path(path)
    except (InvalidRequestError, NoSuchEndpointError):
        return
    # decode(encode(x)) == x: the accepted path is the one spelling of what it asks for.
    assert _encode(wanted.endpoint, wanted.module, wanted.version) == path
    root = "/srv/athens/storage"
    storage = DiskStorage(root)
    version = wanted.version if wanted.version is not None else "v0.0.0"
    for suffix in ("info", "mod", "zip", "ziphash"):
        resolved = str(storage._file(wanted.module, version, suffix))
        assert posixpath.normpath(resolved) == resolved
        assert resolved.startswith(root + "/")
        name = resolved.rsplit("/", 1)[1]
        assert not name.startswith((".", "-"))
    assert not wanted.module.startswith("-")
    assert wanted.version is None or not wanted.version.startswith("-")


# ---------------------------------------------------------------------------------------
# A fuzz run against a live server
# ---------------------------------------------------------------------------------------

_FUZZ_SEGMENTS = st.lists(st.sampled_from(_TOKENS), max_size=10).map("".join)
# Some paths a stand-in go can answer (so the server's accepting side is exercised too).
_PLAUSIBLE = st.builds(
    lambda m, v, ext: f"/example.com/{m}/@v/{v}{ext}",
    st.sampled_from(["a", "b/c", "!d", "e/v2", "-f", "g..h", "i/./j"]),
    st.sampled_from(["v1.0.0", "v1.0", "main", "-x", "v1.0.0-!r!c1", "v2.0.0+incompatible"]),
    st.sampled_from([".info", ".mod", ".zip", "", "list"]),
)
_FUZZ_PATHS = st.one_of(_PLAUSIBLE, _FUZZ_SEGMENTS.map(lambda s: "/" + s.lstrip("/")))


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(paths=st.lists(_FUZZ_PATHS, min_size=60, max_size=60))
async def test_fuzzed_paths_never_5xx_and_go_sees_only_what_the_parser_accepted(
    tmp_path_factory: pytest.TempPathFactory, go_fixtures: GoFixtures, paths: list[str]
) -> None:
    work = tmp_path_factory.mktemp("fuzz")
    recorder, recorded = recording_go(
        work,
        "recording-go",
        'echo \'{"Error": "module lookup disabled: not found"}\'\n'
        "echo 'go: not found' >&2\nexit 1\n",
    )
    config = make_config(work, str(recorder), go_fixtures)
    async with served(config) as server:
        for path in paths:
            target = quote(path, safe="/@!~+-._").encode("ascii")
            before = len(go_runs(recorded))
            with trio.fail_after(30):
                response = await raw_request(server.url, target)
            assert response.status < 500, (path, response.status, response.text)
            runs = go_runs(recorded)[before:]
            try:
                wanted = parse_proxy_path(unquote(target.decode()))
            except (InvalidRequestError, NoSuchEndpointError):
                assert runs == [], path  # (it may be one of the server's own pages)
                continue
            for argv in runs:
                # Fixed words, then exactly the module@query the parser accepted.
                assert argv[:-1] in (
                    ["mod", "download", "-json"],
                    ["list", "-m", "-json"],
                    ["list", "-m", "-versions", "-retracted", "-json"],
                    ["list", "-m", "-versions", "-json"],
                ), argv
                module, _, query = argv[-1].rpartition("@")
                assert module == wanted.module
                assert query == (wanted.version or "latest")
                assert not argv[-1].startswith("-")
    assert tree(config.disk_root) == {}
    assert leftover(config) == []
