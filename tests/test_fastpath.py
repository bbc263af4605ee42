"""The fast path for stored files answers exactly what the full path answers.

Two servers over one storage tree, one with the fast path (``_fastpath``) and one
without, get the same requests; every response must be the same bytes on the wire
(status line, headers in order, body), the ``Date`` header aside.  The matrix covers
stored ``.info``/``.mod``/``.zip`` (GET, HEAD, ``If-None-Match``, ``Range``,
``If-Range``, a go.mod too big to cache), misses, malformed and foreign paths, other
methods, basic auth, PathPrefix and the filter's refusals and redirects.  Then what
only the fast path has: its cache (bounded, checked once), its metrics, and bounded
memory for a big go.mod with clients that do not read.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import socket
import termios
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from athens_trio import Config, DiskStorage
from athens_trio._ziphash import mod_h1, zip_h1
from athens_trio.server import Server
from athens_trio.server._fastpath import (
    _WOULD_BLOCK,
    StoredFileCache,
    _document,
    _open_zip,
    _OpenedZip,
    _read_chunk,
)
from athens_trio.server._pagecache import on_local_filesystem

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import counting_go, go_downloads, rss_bytes, served, wait_until, write_zip

MODULE = "example.com/fast/mod"
BIG_MODULE = "example.com/fast/big"
REFUSED = "example.com/refused/mod"
ELSEWHERE = "example.com/elsewhere/mod"
MIB = 1 << 20
REQUEST_ID = (b"Athens-Request-ID", b"same-id-for-both")


async def _store(
    root: Path,
    work: Path,
    module: str,
    version: str,
    *,
    mod: bytes | None = None,
    zip_size: int = 3000,
) -> None:
    storage = DiskStorage(root)
    source = work / f"{module.replace('/', '_')}-{version}.zip"
    write_zip(source, module, version, zip_size)
    mod = mod if mod is not None else f"module {module}\n".encode()
    info = json.dumps({"Version": version, "Time": "2024-01-01T00:00:00Z"}).encode()
    await storage.save(
        module,
        version,
        info=info,
        mod=mod,
        zip_file=source,
        zip_sum=zip_h1(source),
        mod_sum=mod_h1(mod),
    )


def _big_mod(size: int) -> bytes:
    head = f"module {BIG_MODULE}\n\ngo 1.21\n\n".encode()
    return head + b"// filler\n" * ((size - len(head)) // 10)


async def _exchange(
    url: str, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> bytes:
    """The whole response, as sent, with its Date line cut out."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    lines = [method + b" " + target + b" HTTP/1.1", f"Host: {host}:{port}".encode()]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Connection: close")
    received = bytearray()
    with trio.fail_after(30):
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n")
            while chunk := await stream.receive_some(1 << 16):
                received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    kept = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


@asynccontextmanager
async def _pair(config: Config) -> AsyncIterator[tuple[Server, Server]]:
    async with AsyncExitStack() as stack:
        full = await stack.enter_async_context(served(config, fast_path=False))
        fast = await stack.enter_async_context(served(config))
        yield full, fast


def _basic(user: str, password: str) -> tuple[bytes, bytes]:
    return b"Authorization", b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def _matrix(prefix: str) -> list[tuple[bytes, str, list[tuple[bytes, bytes]]]]:
    p = prefix
    v = f"{p}/{MODULE}/@v/v1.0.0"
    cases: list[tuple[bytes, str, list[tuple[bytes, bytes]]]] = []
    for suffix in (".info", ".mod", ".zip"):
        for method in (b"GET", b"HEAD"):
            cases.append((method, v + suffix, []))
        cases += [
            (b"GET", v + suffix, [(b"If-None-Match", b"*")]),
            (b"GET", v + suffix, [(b"If-None-Match", b'"nope", W/"other"')]),
            (b"GET", f"{p}/{MODULE}/@v/v9.9.9{suffix}", []),  # a miss (DownloadMode none)
            (b"GET", f"{p}/{REFUSED}/@v/v1.0.0{suffix}", []),  # the filter: 403
            (b"GET", f"{p}/{ELSEWHERE}/@v/v1.0.0{suffix}", []),  # the filter: 303
            (b"GET", f"{p}/{MODULE}/v2/@v/v1.0.0{suffix}", []),  # wrong major: 404
            (b"GET", f"{p}/Example.com/x/@v/v1.0.0{suffix}", []),  # bad case: 400
            (b"GET", f"{p}/{MODULE}/@v/v1.0{suffix}", []),  # not canonical
            (b"GET", f"{p}/{MODULE}/@v/../@v/v1.0.0{suffix}", []),
            (b"GET", f"{p}/sumdb/sum.golang.org/@v/v1.0.0{suffix}", []),
            (b"POST", v + suffix, []),
            (b"DELETE", v + suffix, []),
            (b"GET", f"/outside/{MODULE}/@v/v1.0.0{suffix}", []),
        ]
    zip_path = v + ".zip"
    for header in (
        b"bytes=0-9",
        b"bytes=-5",
        b"bytes=100-",
        b"bytes=0-99999999",
        b"bytes=99999999-",  # 416
        b"bytes=5-3",  # ignored
        b"bytes=0-1,5-6",  # ignored
        b"items=0-1",
    ):
        cases.append((b"GET", zip_path, [(b"Range", header)]))
        cases.append((b"HEAD", zip_path, [(b"Range", header)]))
    cases.append((b"GET", zip_path, [(b"Range", b"bytes=0-9"), (b"If-Range", b'"stale"')]))
    big = f"{p}/{BIG_MODULE}/@v/v1.0.0.mod"
    cases += [(b"GET", big, []), (b"HEAD", big, []), (b"GET", big, [(b"If-None-Match", b"*")])]
    big_zip = f"{p}/{BIG_MODULE}/@v/v1.0.0.zip"  # several chunks
    cases += [(b"GET", big_zip, []), (b"HEAD", big_zip, [])]
    for header in (b"bytes=1048570-1048590", b"bytes=-10", b"bytes=2097100-"):
        cases.append((b"GET", big_zip, [(b"Range", header)]))
    cases += [(b"GET", f"{p}/{MODULE}/@v/list", []), (b"GET", f"{p}/healthz", [])]
    return cases


@pytest.fixture
async def stored_root(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    for module in (MODULE, REFUSED, ELSEWHERE):
        await _store(root, tmp_path, module, "v1.0.0")
    # Bigger than a cache entry: streamed, as a big go.mod is; and a zip of 3 chunks.
    await _store(
        root, tmp_path, BIG_MODULE, "v1.0.0", mod=_big_mod(3 * MIB), zip_size=2 * MIB + 5000
    )
    return root


def _config(tmp_path: Path, root: Path, **overrides: object) -> Config:
    config = Config(
        storage_type="disk",
        download_mode="none",
        network_mode="offline",
        go_binary="/nonexistent/go",
        **overrides,  # type: ignore[arg-type]
    )
    config.storage.disk.root_path = str(root)
    return config


@pytest.mark.parametrize("variant", ["plain", "prefix-auth-filter"])
async def test_fast_path_answers_as_the_full_path(
    tmp_path: Path, stored_root: Path, variant: str
) -> None:
    overrides: dict[str, object] = {}
    prefix = ""
    auth_cases: list[list[tuple[bytes, bytes]]] = [[]]
    if variant != "plain":
        prefix = "/go"
        filter_file = tmp_path / "filter"
        filter_file.write_text(f"+\n- {REFUSED}\nD {ELSEWHERE}\n")
        overrides = {
            "path_prefix": prefix,
            "basic_auth_user": "user",
            "basic_auth_pass": "secret",
            "filter_file": str(filter_file),
            "global_endpoint": "http://global.example",
        }
        auth_cases = [[_basic("user", "secret")], [], [_basic("user", "wrong")]]
    config = _config(tmp_path, stored_root, **overrides)
    auth = auth_cases[0]
    async with _pair(config) as (full, fast):

        async def compare(method: bytes, target: str, headers: list[tuple[bytes, bytes]]) -> bytes:
            sent = [REQUEST_ID, *headers]
            expected = await _exchange(full.url, method, target.encode(), sent)
            # Twice on the fast side: the first read fills the cache, the second hits it.
            for _ in range(2):
                got = await _exchange(fast.url, method, target.encode(), sent)
                assert got == expected, (method, target, headers)
            return expected

        for credentials in auth_cases:
            for method, target, headers in _matrix(prefix):
                await compare(method, target, [*credentials, *headers])
        # Conditional requests with the real validators, taken from the answers.
        for suffix in (".info", ".mod", ".zip"):
            target = f"{prefix}/{MODULE}/@v/v1.0.0{suffix}"
            head = await compare(b"HEAD", target, auth)
            etag = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"etag:")
            )
            for headers in (
                [(b"If-None-Match", etag)],
                [(b"If-None-Match", b'"a", ' + etag)],
                [(b"Range", b"bytes=3-30"), (b"If-Range", etag)],
            ):
                await compare(b"GET", target, [*auth, *headers])

        # The metrics add up: every request went twice to the fast side.
        full_hits = _hits(await _exchange(full.url, b"GET", f"{prefix}/metrics".encode(), auth))
        fast_metrics = await _exchange(fast.url, b"GET", f"{prefix}/metrics".encode(), auth)
        assert full_hits
        assert _hits(fast_metrics) == {e: 2 * n for e, n in full_hits.items()}
        # ... and the fast path did answer them: .info and .mod of each module the filter
        # lets through (the big go.mod is streamed, not cached).
        modules = 3 if variant == "plain" else 1
        assert _gauge(fast_metrics, "athens_trio_stored_file_cache_files") == 2 * modules


def _hits(metrics: bytes) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in metrics.decode().splitlines():
        if line.startswith("athens_trio_cache_hits_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('"')[1]] = float(value)
    return found


def _gauge(metrics: bytes, name: str) -> float:
    for line in metrics.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


# ---------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------


def test_the_cache_is_bounded_in_bytes_and_drops_the_least_recently_used() -> None:
    cache = StoredFileCache(max_bytes=100)
    documents = {name: _document(name.encode() * 40, "text/plain") for name in "abc"}
    cache.put(("mod", "m", "a"), documents["a"])
    cache.put(("mod", "m", "b"), documents["b"])
    assert cache.get(("mod", "m", "a")) is documents["a"]  # a is now the most recent
    cache.put(("mod", "m", "c"), documents["c"])
    assert cache.bytes == 80
    assert len(cache) == 2
    assert cache.get(("mod", "m", "b")) is None
    cache.put(("mod", "m", "huge"), _document(b"x" * 101, "text/plain"))  # never fits
    assert cache.get(("mod", "m", "huge")) is None
    assert cache.bytes <= 100


async def test_no_cache_still_answers_from_storage(tmp_path: Path, stored_root: Path) -> None:
    config = _config(tmp_path, stored_root, stored_file_cache_bytes=0)
    async with _pair(config) as (full, fast):
        for suffix in (".info", ".mod"):
            target = f"/{MODULE}/@v/v1.0.0{suffix}".encode()
            expected = await _exchange(full.url, b"GET", target, [REQUEST_ID])
            assert await _exchange(fast.url, b"GET", target, [REQUEST_ID]) == expected
        metrics = await _exchange(fast.url, b"GET", b"/metrics", [])
        assert _gauge(metrics, "athens_trio_stored_file_cache_bytes") == 0
        assert _hits(metrics) == {"info": 1, "mod": 1}


async def test_a_zip_changed_after_it_was_served_goes_back_to_storage(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    await _store(root, tmp_path, MODULE, "v1.0.0")
    zip_file = root / MODULE / "@v" / "v1.0.0.zip"
    async with served(_config(tmp_path, root)) as server:
        target = f"/{MODULE}/@v/v1.0.0.zip".encode()
        first = await _exchange(server.url, b"GET", target, [])
        assert first.startswith(b"HTTP/1.1 200")
        with zip_file.open("ab") as f:
            f.write(b"appended")  # its structure no longer reaches its end
        answer = await _exchange(server.url, b"GET", target, [])
        # Storage checked it again, found it damaged, and the full path took it (a repair,
        # which fails with no go here): the changed bytes never went out.
        assert not answer.startswith(b"HTTP/1.1 200")
        assert b"appended" not in answer


async def test_a_zip_not_in_the_page_cache_is_read_in_a_thread(tmp_path: Path) -> None:
    # A zip served before is read on the event loop only from the page cache; one the
    # kernel dropped is read in a thread (the loop never waits on the disk), whole.
    root = tmp_path / "storage"
    await _store(root, tmp_path, BIG_MODULE, "v1.0.0", zip_size=2 * MIB + 5000)
    zip_file = root / BIG_MODULE / "@v" / "v1.0.0.zip"
    data = zip_file.read_bytes()

    def drop_from_page_cache() -> None:
        fd = os.open(zip_file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def dropped() -> bool:
        # The kernel may keep a page it is still writing back: ask again until it went.
        drop_from_page_cache()
        return _open_zip(zip_file, len(data), 0, len(data), nowait=True) is _WOULD_BLOCK

    await wait_until(dropped)
    async with served(_config(tmp_path, root)) as server:
        target = f"/{BIG_MODULE}/@v/v1.0.0.zip".encode()
        for _ in range(2):  # read in a thread; then (cached again) on the loop
            answer = await _exchange(server.url, b"GET", target, [])
            assert answer.startswith(b"HTTP/1.1 200")
            assert answer.endswith(data)
            drop_from_page_cache()
        opened = _open_zip(zip_file, len(data), 0, len(data))
        assert isinstance(opened, _OpenedZip)
        assert opened.fd is not None
        try:

            def chunk_dropped() -> bool:
                drop_from_page_cache()
                return _read_chunk(opened, MIB, len(data), nowait=True) is _WOULD_BLOCK

            await wait_until(chunk_dropped)
            assert _read_chunk(opened, MIB, len(data)) == data[MIB : 2 * MIB]
        finally:
            os.close(opened.fd)


async def test_what_the_full_path_served_of_a_fetch_is_a_hit_from_memory_next(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    # A cold build's .info and .mod are answered by the full path (a fetch); the fast
    # path keeps them, so a warm build's first requests read no storage.
    script, runs = counting_go(tmp_path, go_binary)
    config = make_config(tmp_path, str(script), go_fixtures)
    hello = go_fixtures.hello
    stored = config.disk_root / hello / "@v"
    async with served(config) as server:
        first = {
            tail: await _exchange(server.url, b"GET", f"/{hello}/@v/v1.0.0.{tail}".encode(), [])
            for tail in ("info", "mod")
        }
        for tail in ("info", "mod"):
            (stored / f"v1.0.0.{tail}").rename(tmp_path / f"moved.{tail}")
        for tail, answer in first.items():
            assert answer.startswith(b"HTTP/1.1 200 ")
            again = await _exchange(server.url, b"GET", f"/{hello}/@v/v1.0.0.{tail}".encode(), [])
            assert again.split(b"\r\n\r\n", 1)[1] == answer.split(b"\r\n\r\n", 1)[1]
            assert again.startswith(b"HTTP/1.1 200 ")
    assert go_downloads(runs) == 1  # the files were gone: answered from memory


async def test_a_cached_go_mod_is_served_from_memory_after_damage_on_disk(
    tmp_path: Path,
) -> None:
    root = tmp_path / "storage"
    await _store(root, tmp_path, MODULE, "v1.0.0")
    mod_file = root / MODULE / "@v" / "v1.0.0.mod"
    async with served(_config(tmp_path, root)) as server:
        target = f"/{MODULE}/@v/v1.0.0.mod".encode()
        good = await _exchange(server.url, b"GET", target, [REQUEST_ID])
        mod_file.write_bytes(b"module example.com/evil\n")
        # Checked once, when it entered the cache: the bytes served are those.
        assert await _exchange(server.url, b"GET", target, [REQUEST_ID]) == good


async def test_a_damaged_go_mod_is_never_served_nor_cached(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    await _store(root, tmp_path, MODULE, "v1.0.0")
    mod_file = root / MODULE / "@v" / "v1.0.0.mod"
    mod_file.write_bytes(b"module example.com/evil\n")
    async with served(_config(tmp_path, root)) as server:
        target = f"/{MODULE}/@v/v1.0.0.mod".encode()
        answer = await _exchange(server.url, b"GET", target, [])
        # The full path took it: it found the damage and tried to fetch it again (with
        # no go here, that fails); the damaged bytes never went out.
        assert not answer.startswith(b"HTTP/1.1 200")
        assert b"evil" not in answer
        metrics = await _exchange(server.url, b"GET", b"/metrics", [])
        assert _gauge(metrics, "athens_trio_stored_file_cache_files") == 0


# ---------------------------------------------------------------------------------------
# A big go.mod with clients that read nothing (issue 11, item 4)
# ---------------------------------------------------------------------------------------

CLIENTS = 40


def _pending(sock: socket.socket) -> int:
    """Bytes received and not yet read on ``sock``."""
    buffer = bytearray(4)
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buffer)
    return int.from_bytes(buffer, "little")


async def test_a_big_go_mod_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    size = 15 * MIB  # go allows 16 MiB
    await _store(root, tmp_path, BIG_MODULE, "v1.0.0", mod=_big_mod(size))
    target = f"/{BIG_MODULE}/@v/v1.0.0.mod"
    async with served(_config(tmp_path, root)) as server:
        # One whole read first: it arrives intact (and the ETag is worked out).
        whole = await _exchange(server.url, b"GET", target.encode(), [])
        assert whole.startswith(b"HTTP/1.1 200")
        assert whole.endswith(_big_mod(size))
        del whole
        before = rss_bytes()
        clients: list[trio.socket.SocketType] = []
        try:
            for _ in range(CLIENTS):
                sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await sock.connect(("127.0.0.1", server.port))
                await sock.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                clients.append(sock)
            # Every response has begun (so each request holds what it is going to hold)
            # and no client reads.
            await wait_until(lambda: all(_pending(s) > 0 for s in clients), seconds=60)  # type: ignore[arg-type]
            grown = rss_bytes() - before
        finally:
            for sock in clients:
                sock.close()
    # Held whole, 40 requests hold 40 x 15 MiB (~590 MiB measured); streamed, each holds
    # about one 1 MiB chunk in flight (~40 MiB measured).
    assert grown < 120 * MIB, f"RSS grew by {grown / MIB:.0f} MiB"


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "full-path"])
async def test_a_hit_counts_as_served_for_retention_on_either_path(
    tmp_path: Path, stored_root: Path, fast_path: bool
) -> None:
    """gc reads when a version was last served: a fast-path hit must mark it too."""
    config = _config(tmp_path, stored_root)
    async with served(config, fast_path=fast_path) as server:
        activity = server.pipeline.activity
        assert activity is not None
        assert await activity.last_served.served(MODULE) == {}
        for suffix in (".info", ".mod", ".zip"):
            answer = await _exchange(
                server.url, b"GET", f"/{MODULE}/@v/v1.0.0{suffix}".encode(), []
            )
            assert answer.startswith(b"HTTP/1.1 200")
        assert set(await activity.last_served.served(MODULE)) == {"v1.0.0"}


def test_storage_on_a_network_filesystem_is_never_opened_on_the_loop(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "30 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        "36 30 0:50 / /srv/goproxy rw,relatime - nfs4 files:/goproxy rw\n"
        "37 30 0:51 / /srv/fuse rw,relatime - fuse.sshfs host:/x rw\n"
        "38 30 0:52 / /srv/with\\040space rw,relatime - cifs //h/s rw\n"
    )
    assert on_local_filesystem(Path("/srv/goproxy-local/x"), str(mountinfo))
    assert not on_local_filesystem(Path("/srv/goproxy/github.com"), str(mountinfo))
    assert not on_local_filesystem(Path("/srv/fuse"), str(mountinfo))
    assert not on_local_filesystem(Path("/srv/with space/m"), str(mountinfo))
    assert not on_local_filesystem(Path("/x"), str(tmp_path / "missing"))


async def test_zips_are_served_the_same_where_storage_is_not_local(
    tmp_path: Path, stored_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on NFS: every open in a thread (zero-copy and page-cache reads still apply).
    monkeypatch.setattr("athens_trio.server._app.on_local_filesystem", lambda path: False)
    async with served(_config(tmp_path, stored_root)) as server:
        for target in (f"/{MODULE}/@v/v1.0.0.zip", f"/{BIG_MODULE}/@v/v1.0.0.zip"):
            first = await _exchange(server.url, b"GET", target.encode(), [REQUEST_ID])
            second = await _exchange(server.url, b"GET", target.encode(), [REQUEST_ID])
            assert first.startswith(b"HTTP/1.1 200 ")
            assert first == second
