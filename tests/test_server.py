"""The HTTP server end to end: a real go client against the proxy on 127.0.0.1:0.

The proxy's go (the fetcher) reaches only the local fixture repositories (``make_config``);
the client go sees only the proxy (``GOPROXY=<server>``, ``GOSUMDB=off``), with a fresh
GOMODCACHE per test.  Clients share one build cache (:func:`go_build_cache`), since
compiling the standard library afresh takes longer than the rest of the file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import zipfile
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import athens_trio
from athens_trio import (
    MemoryStorage,
    StorageError,
    StoredZip,
)
from athens_trio.server import serve
from athens_trio.storage import CHUNK_SIZE

from .conftest import make_config
from .gofixtures import GoFixtures, _Commit, _make_repo, build_go_fixtures
from .helpers import (
    child_env,
    child_server,
    client_env,
    counting_go,
    go_downloads,
    go_runs,
    go_script,
    hanging_go,
    hello_path,
    json_stream,
    process_alive,
    refuses_connections,
    run_go,
    served,
    wait_for_pids,
    wait_until,
)

# ---------------------------------------------------------------------------------------
# A real go client through the proxy
# ---------------------------------------------------------------------------------------


async def test_go_mod_download_through_the_proxy_matches_a_direct_download(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str, go_build_cache: Path
) -> None:
    fx = go_fixtures
    specs = [
        *(f"{fx.hello}@{v}" for v in fx.hello_versions),
        f"{fx.hello}@main",
        f"{fx.consumer}@{fx.consumer_version}",
        f"{fx.upper}@{fx.upper_version}",
        f"{fx.major}@{fx.major_v1_version}",
        f"{fx.major_v2}@{fx.major_v2_version}",
        *(f"{fx.incompatible}@{v}" for v in fx.incompatible_versions),
    ]
    args = ["mod", "download", "-json", *specs]
    env = client_env(tmp_path, fx, go_build_cache, "direct", name="direct")
    direct = json_stream((await run_go(go_binary, args, cwd=tmp_path / "d", env=env)).stdout)

    async with served(make_config(tmp_path, go_binary, fx)) as server:
        env = client_env(tmp_path, fx, go_build_cache, server.url)
        proxied = json_stream((await run_go(go_binary, args, cwd=tmp_path / "p", env=env)).stdout)

    def by_version(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        assert not [r for r in results if r.get("Error")]
        return {(r["Path"], r["Version"]): r for r in results}

    direct_by, proxied_by = by_version(direct), by_version(proxied)
    assert set(proxied_by) == set(direct_by)
    assert len(proxied_by) == len(specs)
    assert (fx.hello, fx.hello_main_pseudo) in proxied_by
    for key, result in proxied_by.items():
        assert result["Sum"] == direct_by[key]["Sum"], key
        assert result["GoModSum"] == direct_by[key]["GoModSum"], key
        assert Path(result["Zip"]).read_bytes() == Path(direct_by[key]["Zip"]).read_bytes()


APP_GO_MOD = """module example.com/app

go 1.21

require (
	github.com/athens-fixtures/UpperCase v1.0.0
	github.com/athens-fixtures/consumer v0.1.0
	github.com/athens-fixtures/hello v1.1.0
	github.com/athens-fixtures/legacy v2.0.0+incompatible
	github.com/athens-fixtures/major v1.0.0
	github.com/athens-fixtures/major/v2 v2.0.0
)
"""

APP_MAIN_GO = """package main

import (
	"fmt"

	_ "github.com/athens-fixtures/UpperCase"
	"github.com/athens-fixtures/consumer"
	"github.com/athens-fixtures/hello"
	"github.com/athens-fixtures/legacy"
	"github.com/athens-fixtures/major"
	majorv2 "github.com/athens-fixtures/major/v2"
)

func main() {
	fmt.Println(consumer.Greeting())
	fmt.Println(hello.Hello())
	fmt.Println(major.Major, majorv2.Major, legacy.V)
}
"""


async def test_consumer_builds_and_runs_then_builds_from_storage_without_the_repos(
    tmp_path: Path, go_binary: str, go_build_cache: Path
) -> None:
    fx = build_go_fixtures(tmp_path / "repos")  # a private set: this test moves it away
    config = make_config(tmp_path, go_binary, fx)
    app = tmp_path / "app"
    app.mkdir()
    (app / "go.mod").write_text(APP_GO_MOD)
    (app / "main.go").write_text(APP_MAIN_GO)
    expected = f"consumer says: {fx.hello_texts['v1.1.0']}\n{fx.hello_texts['v1.1.0']}\n1 2 2\n"

    async with served(config) as server:
        env = client_env(tmp_path, fx, go_build_cache, server.url, name="first")
        # -mod=mod: go writes the go.sum, every line of it fetched through the proxy.
        await run_go(go_binary, ["build", "-mod=mod", "-o", "app1", "."], cwd=app, env=env)
    ran = await trio.run_process([str(app / "app1")], capture_stdout=True)
    assert ran.stdout.decode() == expected
    assert f"{fx.consumer} v0.1.0 h1:" in (app / "go.sum").read_text()

    fx.repos_root.rename(tmp_path / "repos-gone")
    async with served(config) as server:  # a new process's worth: same disk storage only
        async with httpx.AsyncClient(base_url=server.url) as http:
            unfetched = await http.get(hello_path(fx, "v1.0.0.info"))
            assert unfetched.status_code == 404  # upstream really is gone
        env = client_env(tmp_path, fx, go_build_cache, server.url, name="second")
        await run_go(go_binary, ["build", "-o", "app2", "."], cwd=app, env=env)
    ran = await trio.run_process([str(app / "app2")], capture_stdout=True)
    assert ran.stdout.decode() == expected


async def test_thirty_concurrent_cold_requests_run_go_mod_download_once(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str
) -> None:
    wrapper, downloads = counting_go(tmp_path, go_binary)
    config = make_config(tmp_path, str(wrapper), go_fixtures)
    paths = [hello_path(go_fixtures, f"v1.0.0.{ext}") for ext in ("info", "mod", "zip")] * 10
    bodies: dict[str, set[bytes]] = {path: set() for path in paths}

    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:

        async def get(path: str) -> None:
            response = await http.get(path, timeout=60)
            assert response.status_code == 200, response.text
            bodies[path].add(response.content)

        async with trio.open_nursery() as nursery:
            for path in paths:
                nursery.start_soon(get, path)

    # One fetch per part at most: the go.mod part (.info, .mod: go list, no zip) and the
    # whole version (.zip: the one go mod download).
    assert go_downloads(downloads) == 1
    assert len(go_runs(downloads)) <= 2
    assert all(len(seen) == 1 for seen in bodies.values())


async def test_empty_list_for_a_module_without_tags_lets_go_resolve_latest(
    tmp_path: Path, go_binary: str, go_build_cache: Path
) -> None:
    """An untagged module's list is 200 and empty, as the GOPROXY protocol has it:
    a 404 there would make `go get m@latest` fail (or fall through) instead of asking
    @latest."""
    fx = build_go_fixtures(tmp_path / "repos")
    untagged = "github.com/athens-fixtures/untagged"
    files = {"go.mod": f"module {untagged}\n\ngo 1.21\n", "u.go": "package untagged\n"}
    _make_repo(fx.repos_root, "untagged", [_Commit(files, "untagged work")], 1704067200)

    async with (
        served(make_config(tmp_path, go_binary, fx)) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        listed = await http.get(f"/{untagged}/@v/list")
        assert listed.status_code == 200
        assert listed.content == b""
        assert listed.headers["content-type"] == "text/plain; charset=utf-8"
        env = client_env(tmp_path, fx, go_build_cache, server.url)
        result = await run_go(
            go_binary, ["list", "-m", "-json", f"{untagged}@latest"], cwd=tmp_path / "w", env=env
        )
    assert json.loads(result.stdout)["Version"].startswith("v0.0.0-20240101000000-")


async def test_proxy_chain_falls_through_on_not_found(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str, go_build_cache: Path
) -> None:
    not_found = go_script(
        tmp_path,
        "not-found-go",
        'echo \'{"Error": "module lookup disabled: not found"}\'\n'
        "echo 'go: module not found' >&2\nexit 1\n",
    )
    config = make_config(tmp_path, str(not_found), go_fixtures)
    spec = f"{go_fixtures.hello}@v1.0.0"
    async with (
        served(config) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        answer = await http.get(hello_path(go_fixtures, "v1.0.0.info"))
        assert answer.status_code == 404
        assert "not found" in answer.text
        env = client_env(tmp_path, go_fixtures, go_build_cache, f"{server.url},direct")
        result = await run_go(
            go_binary, ["mod", "download", "-json", spec], cwd=tmp_path / "w", env=env
        )
    assert json.loads(result.stdout)["Version"] == "v1.0.0"


async def test_upstream_fault_is_502_and_the_chain_does_not_fall_through(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str, go_build_cache: Path
) -> None:
    offline = go_script(
        tmp_path,
        "offline-go",
        # go mod download says it in its JSON; go list (the go.mod part) on stderr.
        'echo \'{"Error": "Get \\"https://github.com/x\\": dial tcp: lookup github.com:'
        " no such host\"}'\n"
        "echo 'go: Get https://github.com/x: dial tcp: lookup github.com: no such host' >&2\n"
        "exit 1\n",
    )
    config = make_config(tmp_path, str(offline), go_fixtures)
    async with (
        served(config) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        answer = await http.get(hello_path(go_fixtures, "v1.0.0.mod"))
        assert answer.status_code == 502
        assert "no such host" in answer.text
        assert answer.headers["cache-control"] == "no-store"
        env = client_env(tmp_path, go_fixtures, go_build_cache, f"{server.url},direct")
        result = await run_go(
            go_binary,
            ["mod", "download", "-json", f"{go_fixtures.hello}@v1.0.0"],
            cwd=tmp_path / "w",
            env=env,
            check=False,
        )
    assert result.returncode != 0  # direct would have worked: no fall-through on a fault
    assert "502" in json.loads(result.stdout)["Error"]


# ---------------------------------------------------------------------------------------
# HTTP details: zips, ranges, HEAD, ETags, headers
# ---------------------------------------------------------------------------------------

BIG = "example.com/big"
BIG_INFO = b'{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}'
BIG_MOD = b"module example.com/big\n"


class _CountingZip(StoredZip):
    """A stored zip that counts the bytes read from it, and can die part-way through
    a long read, as a failing disk would."""

    def __init__(self, inner: StoredZip, storage: CountingStorage) -> None:
        self._inner = inner
        self._storage = storage
        self.size = inner.size

    async def chunks(self, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        long_read = (self.size if stop is None else stop) - start > CHUNK_SIZE
        inner = self._inner.chunks(start, stop)
        assert isinstance(inner, AsyncGenerator)
        async with aclosing(inner):
            async for chunk in inner:
                assert len(chunk) <= CHUNK_SIZE
                self._storage.bytes_read += len(chunk)
                yield chunk
                if long_read and self._storage.dies_mid_read:
                    raise StorageError("disk died mid-read")


class CountingStorage(MemoryStorage):
    """Memory storage that counts every byte read from a zip."""

    def __init__(self, *, dies_mid_read: bool = False) -> None:
        super().__init__()
        self.bytes_read = 0
        self.dies_mid_read = dies_mid_read

    async def zip(self, module: str, version: str) -> StoredZip:
        return _CountingZip(await super().zip(module, version), self)


async def big_storage(tmp_path: Path, **kwargs: bool) -> tuple[CountingStorage, bytes]:
    """A stored version whose zip spans a few storage chunks (random, so stored as is)."""
    with zipfile.ZipFile(tmp_path / "big.zip", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{BIG}@v1.0.0/go.mod", BIG_MOD)
        archive.writestr(f"{BIG}@v1.0.0/blob", os.urandom(2 * CHUNK_SIZE + 12345))
    data = (tmp_path / "big.zip").read_bytes()
    storage = CountingStorage(**kwargs)
    await storage.save(BIG, "v1.0.0", info=BIG_INFO, mod=BIG_MOD, zip_file=tmp_path / "big.zip")
    return storage, data


async def test_zip_streams_with_range_head_and_etag(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    storage, data = await big_storage(tmp_path)
    size = len(data)
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures)
    zip_path = f"/{BIG}/@v/v1.0.0.zip"
    async with (
        served(config, storage=storage) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        head = await http.head(zip_path)
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) == size
        # HEAD streams nothing (the protocol may check the zip's tail, never more).
        assert storage.bytes_read < CHUNK_SIZE
        etag = head.headers["etag"]

        full = await http.get(zip_path)
        assert full.status_code == 200
        assert full.content == data
        assert full.headers["content-type"] == "application/zip"
        assert int(full.headers["content-length"]) == size
        assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert full.headers["accept-ranges"] == "bytes"
        assert full.headers["etag"] == etag

        ranges = {
            "bytes=0-99": (0, 100),
            f"bytes={CHUNK_SIZE - 10}-{CHUNK_SIZE + 9}": (CHUNK_SIZE - 10, CHUNK_SIZE + 10),
            "bytes=1000-": (1000, size),
            "bytes=-10": (size - 10, size),
            f"bytes=5-{size + 100}": (5, size),
        }
        for header, (start, stop) in ranges.items():
            part = await http.get(zip_path, headers={"Range": header})
            assert part.status_code == 206, header
            assert part.content == data[start:stop], header
            assert part.headers["content-range"] == f"bytes {start}-{stop - 1}/{size}"
            assert int(part.headers["content-length"]) == stop - start

        beyond = await http.get(zip_path, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{size}"

        ignored = await http.get(zip_path, headers={"Range": "bytes=0-1,5-6"})
        assert ignored.status_code == 200
        assert ignored.content == data

        resumed = await http.get(zip_path, headers={"Range": "bytes=10-19", "If-Range": etag})
        assert resumed.status_code == 206
        assert resumed.content == data[10:20]
        changed = await http.get(
            zip_path, headers={"Range": "bytes=10-19", "If-Range": '"something-else"'}
        )
        assert changed.status_code == 200
        assert changed.content == data

        read_before = storage.bytes_read
        cached = await http.get(zip_path, headers={"If-None-Match": etag})
        assert cached.status_code == 304
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        assert storage.bytes_read - read_before < CHUNK_SIZE


async def test_storage_fault_mid_stream_cuts_the_response_short(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    storage, _ = await big_storage(tmp_path, dies_mid_read=True)
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures)
    async with (
        served(config, storage=storage) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        # Headers (200, Content-Length) are out before the fault: the client must see a
        # short body, never a complete-looking one.
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"/{BIG}/@v/v1.0.0.zip")
        assert (await http.get("/healthz")).status_code == 200  # the server lives on


async def test_documents_have_their_types_caching_and_etags(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures)
    immutable = "public, max-age=31536000, immutable"
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        listed = await http.get(hello_path(go_fixtures, "list"))
        assert listed.status_code == 200
        assert listed.text == "".join(f"{v}\n" for v in go_fixtures.hello_versions)
        assert listed.headers["content-type"] == "text/plain; charset=utf-8"
        assert listed.headers["cache-control"] == "public, max-age=60"

        latest = await http.get(f"/{go_fixtures.hello}/@latest")
        assert latest.headers["content-type"] == "application/json"
        assert latest.json()["Version"] == go_fixtures.hello_versions[-1]
        assert latest.headers["cache-control"] == "public, max-age=60"

        query = await http.get(hello_path(go_fixtures, "main.info"))
        assert query.json()["Version"] == go_fixtures.hello_main_pseudo
        assert query.headers["cache-control"] == "public, max-age=60"
        assert "etag" not in query.headers

        pseudo = await http.get(hello_path(go_fixtures, f"{go_fixtures.hello_main_pseudo}.info"))
        assert pseudo.json() == query.json()
        assert pseudo.headers["cache-control"] == immutable

        info = await http.get(hello_path(go_fixtures, "v1.0.0.info"))
        assert info.headers["content-type"] == "application/json"
        assert set(info.json()) == {"Version", "Time"}
        assert info.headers["cache-control"] == immutable

        mod = await http.get(hello_path(go_fixtures, "v1.0.0.mod"))
        assert mod.text.startswith(f"module {go_fixtures.hello}\n")
        assert mod.headers["content-type"] == "text/plain; charset=utf-8"
        assert mod.headers["cache-control"] == immutable
        assert int(mod.headers["content-length"]) == len(mod.content)

        for document in (info, mod):
            etag = document.headers["etag"]
            again = await http.get(str(document.url), headers={"If-None-Match": etag})
            assert again.status_code == 304
            head = await http.head(str(document.url))
            assert head.content == b""
            assert head.headers["content-length"] == document.headers["content-length"]


async def test_health_readiness_and_version(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str
) -> None:
    class FlakyStorage(MemoryStorage):
        broken = False

        async def ready(self) -> None:
            await trio.lowlevel.checkpoint()
            if self.broken:
                raise StorageError(f"disk went away: {config.disk_root}/x: Permission denied")

    storage = FlakyStorage()
    config = make_config(tmp_path, go_binary, go_fixtures)
    # No go_version given: serve checks the go binary itself, once.
    async with (
        serve(config, host="127.0.0.1", port=0, storage=storage) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.head("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        storage.broken = True
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503
        assert "disk went away" in not_ready.text
        assert "Permission denied" in not_ready.text
        assert str(config.disk_root) not in not_ready.text
        version = (await http.get("/version")).json()
        go_says = await trio.run_process([go_binary, "version"], capture_stdout=True)
    assert version == {
        "athens_trio": athens_trio.__version__,
        "python": ".".join(map(str, sys.version_info[:3])),
        "trio": trio.__version__,
        "go": go_says.stdout.decode().strip(),
    }


async def test_a_go_binary_that_cannot_run_is_a_500_without_its_path(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    """The 500 says the go binary cannot be run (the operator's setup) but not where it
    was looked for."""
    missing = tmp_path / "private" / "bin" / "go"
    config = make_config(tmp_path, str(missing), go_fixtures)
    async with (
        serve(config, host="127.0.0.1", port=0, go_version="go version test") as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        answer = await http.get(hello_path(go_fixtures, "v1.0.0.info"))
    assert answer.status_code == 500, answer.text
    assert "cannot run the go binary" in answer.text
    assert str(tmp_path) not in answer.text


async def test_each_request_is_logged_in_one_line(
    tmp_path: Path, go_fixtures: GoFixtures, caplog: pytest.LogCaptureFixture
) -> None:
    storage, data = await big_storage(tmp_path)
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures)
    caplog.set_level(logging.INFO, logger="athens_trio.access")
    async with (
        served(config, storage=storage) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        await http.get(f"/{BIG}/@v/v1.0.0.zip")
        await http.head(f"/{BIG}/@v/v1.0.0.zip")
        await http.post("/healthz")
    lines = [r.getMessage() for r in caplog.records if r.name == "athens_trio.access"]
    assert len(lines) == 3
    assert re.fullmatch(rf"GET /{BIG}/@v/v1\.0\.0\.zip 200 {len(data)} \d+\.\dms", lines[0])
    assert re.fullmatch(rf"HEAD /{BIG}/@v/v1\.0\.0\.zip 200 0 \d+\.\dms", lines[1])
    assert re.fullmatch(r"POST /healthz 405 \d+ \d+\.\dms", lines[2])


# ---------------------------------------------------------------------------------------
# Status codes
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("GET", "/healthz", 200, "ok"),
        ("GET", "/{hello}/@v/v1.0.0.info", 200, "v1.0.0"),
        ("HEAD", "/{hello}/@v/list", 200, ""),
        ("GET", "/%2e%2e/@v/list", 400, "invalid"),
        ("GET", "/github.com/athens-fixtures/!!hello/@v/list", 400, "invalid escaped"),
        ("GET", "/github.com/Athens-Fixtures/hello/@v/list", 400, "invalid escaped"),
        ("GET", "/{hello}/@v/v1.0.zip", 400, "not canonical"),
        ("GET", "/{hello}/@v/master.mod", 400, "not a semantic version"),
        ("GET", "/{hello}/@v/v1.0.0.tar", 400, "expected list"),
        ("GET", "/{missing}/@v/list", 404, "does-not-exist"),
        ("GET", "/{missing}/@v/v1.0.0.info", 404, "does-not-exist"),
        ("GET", "/{missing}/@latest", 404, "does-not-exist"),
        ("GET", "/{hello}/@v/v9.9.9.info", 404, "v9.9.9"),
        ("GET", "/{hello}/@v/v1.9.9.zip", 404, "v1.9.9"),
        ("GET", "/{hello}/@v/no-such-branch.info", 404, "no-such-branch"),
        ("GET", "/favicon.ico", 404, "not a GOPROXY endpoint"),
        ("POST", "/{hello}/@v/list", 405, "Method Not Allowed"),
        ("PUT", "/{hello}/@v/v1.0.0.zip", 405, "Method Not Allowed"),
        ("DELETE", "/{hello}/@v/v1.0.0.zip", 405, "Method Not Allowed"),
        ("OPTIONS", "/{hello}/@v/list", 405, "Method Not Allowed"),
    ],
)
async def test_status_codes(
    tmp_path: Path,
    go_fixtures: GoFixtures,
    go_binary: str,
    method: str,
    path: str,
    status: int,
    says: str,
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures)
    url_path = path.format(hello=go_fixtures.hello, missing=go_fixtures.missing)
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.request(method, url_path, timeout=60)
    assert response.status_code == status, response.text
    assert says in response.text
    if status >= 400:
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
    if status == 405:
        assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}


async def test_fetch_timeout_is_504(tmp_path: Path, go_fixtures: GoFixtures) -> None:
    config = make_config(tmp_path, str(hanging_go(tmp_path)), go_fixtures, stash_timeout=1)
    async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(hello_path(go_fixtures, "v1.0.0.zip"), timeout=30)
    assert response.status_code == 504
    assert "timeout" in response.text
    pids = await wait_for_pids(tmp_path / "pids", 2)
    assert not any(process_alive(pid) for pid in pids)
    assert os.listdir(config.go_get_dir) == []


class BrokenStorage(MemoryStorage):
    """Storage whose every read fails, as a dead disk would."""

    async def list_versions(self, module: str) -> list[str]:
        raise StorageError("/var/lib/athens: input/output error")

    async def exists(self, module: str, version: str) -> bool:
        raise StorageError("/var/lib/athens: input/output error")

    async def info(self, module: str, version: str) -> bytes:
        raise StorageError("/var/lib/athens: input/output error")

    async def go_mod(self, module: str, version: str) -> bytes:
        raise StorageError("/var/lib/athens: input/output error")


@pytest.mark.parametrize("tail", ["v1.0.0.mod", "v1.0.0.zip", "v1.0.0.info", "list"])
async def test_storage_fault_is_500_and_logged(
    tmp_path: Path,
    go_fixtures: GoFixtures,
    go_binary: str,
    caplog: pytest.LogCaptureFixture,
    tail: str,
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures)
    async with (
        served(config, storage=BrokenStorage()) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        response = await http.get(hello_path(go_fixtures, tail))
    assert response.status_code == 500
    assert "storage failed" in response.text
    assert "/var/lib/athens" not in response.text  # details go to the log only
    faults = [r for r in caplog.records if r.name == "athens_trio.server" and r.exc_info]
    assert len(faults) == 1
    assert "input/output error" in str(faults[0].exc_info[1] if faults[0].exc_info else "")


# ---------------------------------------------------------------------------------------
# Shutdown
# ---------------------------------------------------------------------------------------


async def test_graceful_shutdown_finishes_requests_in_flight_and_refuses_new_ones(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str
) -> None:
    started = tmp_path / "started"
    slow = go_script(
        tmp_path,
        "slow-go",
        f'case " $* " in *" mod download "*) touch {started}; sleep 1 ;; esac\n'
        f'exec {go_binary} "$@"\n',
    )
    config = make_config(tmp_path, str(slow), go_fixtures)
    statuses: list[int] = []
    async with served(config, shutdown_timeout=30) as server:
        url = server.url
        async with httpx.AsyncClient(base_url=url) as http, trio.open_nursery() as nursery:

            async def in_flight() -> None:
                response = await http.get(hello_path(go_fixtures, "v1.0.0.zip"), timeout=30)
                statuses.append(response.status_code)

            nursery.start_soon(in_flight)
            await wait_until(started.exists)
            server.shutdown()
            await wait_until(lambda: refuses_connections(url), 5)  # the listener closes at once...
            assert statuses == []  # ...while the request in flight goes on
    assert statuses == [200]


async def test_shutdown_grace_ends_and_go_is_killed(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    config = make_config(tmp_path, str(hanging_go(tmp_path)), go_fixtures)
    errors: list[Exception] = []
    with trio.fail_after(10):
        async with (
            served(config, shutdown_timeout=0.5) as server,
            httpx.AsyncClient(base_url=server.url) as http,
            trio.open_nursery() as nursery,
        ):

            async def in_flight() -> None:
                try:
                    await http.get(hello_path(go_fixtures, "v1.0.0.info"), timeout=30)
                except httpx.HTTPError as exc:
                    errors.append(exc)

            nursery.start_soon(in_flight)
            pids = await wait_for_pids(tmp_path / "pids", 2)
            server.shutdown()
    assert len(errors) == 1  # cut off after the grace period
    assert not any(process_alive(pid) for pid in pids)
    assert os.listdir(config.go_get_dir) == []


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


def command_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return child_env(tmp_path, **{"ATHENS_STORAGE_TYPE": "memory", **extra})


async def test_sigterm_exits_zero_and_leaves_no_go_behind(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    pids_file = tmp_path / "pids"
    hanging = go_script(
        tmp_path,
        "hanging-go",
        'if [ "$1" = version ]; then echo "go version hanging"; exit 0; fi\n'
        f"echo $$ >> {pids_file}\nsleep 1000 &\necho $! >> {pids_file}\nwait\n",
    )
    goget = tmp_path / "goget"
    goget.mkdir()
    env = command_env(tmp_path, ATHENS_GO_BINARY_PATH=str(hanging), ATHENS_GOGET_DIR=str(goget))
    async with child_server(tmp_path, "server", env) as child:
        assert "storage: memory" in child.banner
        async with httpx.AsyncClient(base_url=child.url) as http:
            with trio.move_on_after(30) as waiting:  # the client gives up; go hangs on
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(http.get, hello_path(go_fixtures, "v1.0.0.info"))
                    pids = await wait_for_pids(pids_file, 2)
                    nursery.cancel_scope.cancel()
            assert not waiting.cancelled_caught
        # The server saw the client go: the request's access line (status 0, no bytes).
        await wait_until(lambda: ".info 0 0" in child.log())
        assert all(process_alive(pid) for pid in pids)

        child.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            returncode = await child.process.wait()
    stderr_path = child.stderr
    assert returncode == 0, stderr_path.read_text()
    assert not any(process_alive(pid) for pid in pids)
    assert os.listdir(goget) == []
    assert "SIGTERM" in stderr_path.read_text()


async def test_a_signal_while_a_stopped_server_winds_down_changes_nothing(
    tmp_path: Path,
) -> None:
    """Once stopped, a server winding down (interpreter shutdown) takes another SIGTERM
    without dying of it: the exit stays 0."""
    env = command_env(tmp_path, ATHENS_GO_BINARY_PATH="/bin/true")
    async with child_server(tmp_path, "server", env) as child:
        child.process.send_signal(signal.SIGTERM)
        await wait_until(lambda: "INFO athens_trio: stopped" in child.log(), 30)
        if child.process.returncode is None:
            child.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await child.process.wait() == 0, child.log()


async def test_missing_go_binary_exits_2(tmp_path: Path) -> None:
    env = command_env(tmp_path, ATHENS_GO_BINARY_PATH=str(tmp_path / "no-go-here"))
    result = await trio.run_process(
        [sys.executable, "-m", "athens_trio"],
        cwd=tmp_path,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert "no-go-here" in result.stderr.decode()
    assert len(result.stderr.decode().splitlines()) == 1
