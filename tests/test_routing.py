"""The server's pure protocol rules: request paths, ranges, ETags, cache and status,
and the endpoint table they read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from athens_trio import (
    AthensTrioError,
    ConfigError,
    FetchTimeoutError,
    ForbiddenError,
    GoBinaryError,
    InvalidPathError,
    InvalidRequestError,
    InvalidVersionError,
    NotFoundError,
    Redirected,
    StorageError,
    UpstreamError,
    ValidatorError,
)
from athens_trio._endpoints import (
    CACHE_IMMUTABLE,
    CACHE_SHORT,
    ENDPOINTS,
    INFO,
    LATEST,
    LIST,
    MOD,
    ZIP,
    Endpoint,
    endpoint_of_shape,
)
from athens_trio._exceptions import DamagedVersionError, outcome_of, status_of
from athens_trio._module import escape_path, escape_version
from athens_trio.server._routing import (
    ByteRange,
    NoSuchEndpointError,
    ProxyRequest,
    RangeNotSatisfiableError,
    content_etag,
    etag_matches,
    if_range_allows,
    parse_proxy_path,
    parse_range,
    zip_etag,
)

HELLO = "github.com/athens-fixtures/hello"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/{HELLO}/@v/list", ProxyRequest(LIST, HELLO)),
        (f"/{HELLO}/@latest", ProxyRequest(LATEST, HELLO)),
        (f"/{HELLO}/@v/v1.0.0.info", ProxyRequest(INFO, HELLO, "v1.0.0")),
        (f"/{HELLO}/@v/main.info", ProxyRequest(INFO, HELLO, "main")),
        (f"/{HELLO}/@v/v1.2.info", ProxyRequest(INFO, HELLO, "v1.2")),
        (f"/{HELLO}/@v/v1.0.0.mod", ProxyRequest(MOD, HELLO, "v1.0.0")),
        (f"/{HELLO}/@v/v1.0.0.zip", ProxyRequest(ZIP, HELLO, "v1.0.0")),
        (
            "/github.com/!azure/azure-sdk-for-go/@v/v1.0.0-!r!c1.zip",
            ProxyRequest(ZIP, "github.com/Azure/azure-sdk-for-go", "v1.0.0-RC1"),
        ),
        (
            "/github.com/x/legacy/@v/v2.0.0+incompatible.mod",
            ProxyRequest(MOD, "github.com/x/legacy", "v2.0.0+incompatible"),
        ),
        (
            "/github.com/x/y/v2/@v/v2.0.0.info",
            ProxyRequest(INFO, "github.com/x/y/v2", "v2.0.0"),
        ),
        ("/gopkg.in/yaml.v3/@v/list", ProxyRequest(LIST, "gopkg.in/yaml.v3")),
    ],
)
def test_parse_proxy_path(path: str, expected: ProxyRequest) -> None:
    assert parse_proxy_path(path) == expected


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/../@v/list", InvalidPathError),  # what /%2e%2e/@v/list decodes to
        ("/github.com/x/../../etc/@v/list", InvalidPathError),
        ("//github.com/x/@v/list", InvalidPathError),
        ("/@v/list", InvalidPathError),
        ("/@latest", InvalidPathError),
        ("/github.com/!!x/@v/list", InvalidPathError),  # "!" must precede a lower-case letter
        ("/github.com/Azure/x/@v/list", InvalidPathError),  # upper case must be escaped
        ("/github.com/x/y!/@v/list", InvalidPathError),
        ("/github.com/x/y\n/@v/list", InvalidPathError),
        ("/github.com/x/y/@v/v1.0.zip", InvalidVersionError),  # .zip needs canonical
        ("/github.com/x/y/@v/master.mod", InvalidVersionError),
        ("/github.com/x/y/@v/v1.0.0+meta.zip", InvalidVersionError),
        ("/github.com/x/y/@v/v1.0.0-!!rc.info", InvalidVersionError),
        ("/github.com/x/y/@v/v1.0.0-RC.info", InvalidVersionError),  # raw upper case
        ("/github.com/x/y/@v/-x.info", InvalidVersionError),
        ("/github.com/x/y/@v/a/b.info", InvalidVersionError),
        ("/github.com/x/y/@v/v1.0.0.tar", InvalidVersionError),
        ("/github.com/x/y/@v/", InvalidVersionError),
        ("/github.com/x/y/@v/.info", InvalidVersionError),
        ("github.com/x/y/@v/list", InvalidPathError),
        ("/healthz/extra", NoSuchEndpointError),
        ("/", NoSuchEndpointError),
        ("/github.com/x/y", NoSuchEndpointError),
    ],
)
def test_parse_proxy_path_refuses(path: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_proxy_path(path)


def test_no_such_endpoint_is_a_404() -> None:
    assert issubclass(NoSuchEndpointError, NotFoundError)
    with pytest.raises(NoSuchEndpointError) as caught:
        parse_proxy_path("/favicon.ico")
    assert status_of(caught.value) == 404


_ELEMENT = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~",
    min_size=1,
    max_size=12,
)


@given(
    owner=_ELEMENT,
    name=_ELEMENT,
    major=st.integers(0, 20),
    minor=st.integers(0, 20),
    pre=st.sampled_from(["", "-rc.1", "-RC1", "-beta"]),
    endpoint=st.sampled_from([INFO, MOD, ZIP]),
)
def test_escaped_paths_round_trip(
    owner: str, name: str, major: int, minor: int, pre: str, endpoint: Endpoint
) -> None:
    module = f"example.com/{owner}/{name}"
    try:
        escaped = escape_path(module)
    except InvalidPathError:
        return  # e.g. an element that looks like a Windows short name
    version = f"v{major}.{minor}.0{pre}"
    path = f"/{escaped}/@v/{escape_version(version)}.{endpoint.name}"
    assert endpoint.path(module, version) == path
    assert parse_proxy_path(path) == ProxyRequest(endpoint, module, version)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (ProxyRequest(LIST, HELLO), CACHE_SHORT),
        (ProxyRequest(LATEST, HELLO), CACHE_SHORT),
        (ProxyRequest(INFO, HELLO, "main"), CACHE_SHORT),
        (ProxyRequest(INFO, HELLO, "v1.2"), CACHE_SHORT),
        (ProxyRequest(INFO, HELLO, "v1.0.0"), CACHE_IMMUTABLE),
        (ProxyRequest(INFO, HELLO, "v0.0.0-20240101000000-0123456789ab"), CACHE_IMMUTABLE),
        (ProxyRequest(MOD, HELLO, "v1.0.0"), CACHE_IMMUTABLE),
        (ProxyRequest(ZIP, HELLO, "v1.0.0"), CACHE_IMMUTABLE),
    ],
)
def test_cache_control(request_: ProxyRequest, expected: str) -> None:
    assert request_.endpoint.cache_control(request_.version) == expected


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_endpoint_path_parses_back_and_has_its_shape(endpoint: Endpoint) -> None:
    version = "v1.0.0-RC1" if endpoint.versioned else None
    path = endpoint.path("github.com/Azure/x", version)
    assert parse_proxy_path(path) == ProxyRequest(endpoint, "github.com/Azure/x", version)
    assert endpoint_of_shape(path) is endpoint


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/m/@v/list", LIST),
        ("/m/@v/v1.0.0.info", INFO),
        ("/m/@v/v1.0.0.mod", MOD),
        ("/m/@v/v1.0.0.zip", ZIP),
        ("/m/@latest", LATEST),
        ("/m/@v/a/b.info", INFO),  # malformed, but asks .info: labelled so
        ("/m/latest.info", None),
        ("/metrics", None),
        ("/", None),
    ],
)
def test_endpoint_of_shape(path: str, expected: Endpoint | None) -> None:
    assert endpoint_of_shape(path) is expected


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-99", 100, ByteRange(0, 100, 100)),
        ("bytes=0-0", 100, ByteRange(0, 1, 100)),
        ("bytes=10-19", 100, ByteRange(10, 20, 100)),
        ("bytes=10-1000", 100, ByteRange(10, 100, 100)),
        ("bytes=90-", 100, ByteRange(90, 100, 100)),
        ("bytes=-10", 100, ByteRange(90, 100, 100)),
        ("bytes=-1000", 100, ByteRange(0, 100, 100)),
        ("Bytes = 5 - 6 ", 100, ByteRange(5, 7, 100)),
        # Ignored (whole representation): other units, several ranges, bad syntax.
        ("items=0-1", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("bytes=5-3", 100, None),
        ("bytes=-", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=+1-2", 100, None),
        ("bytes=99999999999999999999-", 100, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=-5", 0)],
)
def test_parse_range_not_satisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiableError) as caught:
        parse_range(header, size)
    assert caught.value.size == size
    assert status_of(caught.value) == 416


@given(size=st.integers(1, 10_000), first=st.integers(0, 20_000), last=st.integers(0, 20_000))
def test_parse_range_stays_inside(size: int, first: int, last: int) -> None:
    for header in (f"bytes={first}-{last}", f"bytes={first}-", f"bytes=-{last}"):
        try:
            selected = parse_range(header, size)
        except RangeNotSatisfiableError:
            continue
        if selected is not None:
            assert 0 <= selected.start < selected.stop <= size
            assert selected.content_range == (f"bytes {selected.start}-{selected.stop - 1}/{size}")


def test_etags() -> None:
    etag = zip_etag(HELLO, "v1.0.0", 574)
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert etag == zip_etag(HELLO, "v1.0.0", 574)
    assert etag != zip_etag(HELLO, "v1.1.0", 574)
    assert etag != zip_etag(HELLO, "v1.0.0", 575)
    assert content_etag(b"a") != content_etag(b"b")

    assert etag_matches(etag, etag)
    assert etag_matches(f'"other", {etag}', etag)
    assert etag_matches(f"W/{etag}", etag)  # If-None-Match compares weakly
    assert etag_matches("*", etag)
    assert not etag_matches(None, etag)
    assert not etag_matches('"other"', etag)

    assert if_range_allows(None, etag)
    assert if_range_allows(etag, etag)
    assert not if_range_allows(f"W/{etag}", etag)  # If-Range compares strongly
    assert not if_range_allows("Wed, 21 Oct 2015 07:28:00 GMT", etag)


@pytest.mark.parametrize(
    ("error", "status", "outcome"),
    [
        (NotFoundError("x"), 404, "not_found"),
        (NoSuchEndpointError("x"), 404, "not_found"),
        (InvalidRequestError("x"), 400, "error"),
        (InvalidPathError("x"), 400, "error"),
        (InvalidVersionError("x"), 400, "error"),
        (ForbiddenError("x"), 403, "error"),
        (Redirected("https://elsewhere/m/@v/list", 301, "x"), 301, "error"),
        (Redirected("https://elsewhere/m/@v/list", 303, "x"), 303, "error"),
        (RangeNotSatisfiableError(10), 416, "error"),
        (UpstreamError("x"), 502, "upstream_error"),
        (FetchTimeoutError("x"), 504, "timeout"),
        (StorageError("x"), 500, "error"),
        (DamagedVersionError("x"), 500, "error"),
        (ValidatorError("x"), 500, "error"),
        (GoBinaryError("x"), 500, "error"),
        (ConfigError("Port", "x"), 500, "error"),
        (AthensTrioError("x"), 500, "error"),
        (RuntimeError("x"), 500, "error"),
    ],
)
def test_each_exception_carries_its_status_and_fetch_outcome(
    error: Exception, status: int, outcome: str
) -> None:
    assert status_of(error) == status
    assert outcome_of(error) == outcome


def test_only_does_not_exist_is_a_404() -> None:
    """404 makes go fall through to the next GOPROXY entry: only NotFoundError may."""

    def subclasses(cls: type[AthensTrioError]) -> list[type[AthensTrioError]]:
        return [cls, *(sub for direct in cls.__subclasses__() for sub in subclasses(direct))]

    for cls in subclasses(AthensTrioError):
        assert (cls.status in (404, 410)) == issubclass(cls, NotFoundError), cls
