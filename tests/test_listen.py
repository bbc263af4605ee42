"""Listening: the hypercorn versions the worker seam is tested with, and connections
whose clients went away mid-download (issue 17): they hold neither a MaxConnections
slot nor a graceful stop.

The client that leaves hypercorn's HTTP/1.1 protocol waiting for good sends its next
request before the current response is over (pipelining), then goes away mid-body:
hypercorn parks the connection's reader until the response is done, and the response,
cut short by the failed send, never says so.
"""

from __future__ import annotations

import importlib.metadata
import signal
import socket
import struct
from functools import partial
from pathlib import Path

import httpx
import trio

from athens_trio import DiskStorage, MemoryStorage
from athens_trio.server._hypercorn_worker import TESTED_HYPERCORN

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import child_env, child_server, served, settle, store_version
from .opsfixtures import stored_tree

BIG = "example.com/big"
ZIP = f"/{BIG}/@v/v1.0.0.zip".encode()


def test_hypercorn_is_a_version_the_worker_seam_was_tested_with() -> None:
    version = importlib.metadata.version("hypercorn")
    assert version in TESTED_HYPERCORN, (
        f"hypercorn {version} is not one athens_trio/server/_hypercorn_worker.py was "
        f"tested with ({', '.join(sorted(TESTED_HYPERCORN))}): it uses hypercorn's "
        "worker internals; run tests/test_listen.py, test_operator.py, test_server.py, "
        "test_hostile.py and test_faults.py on it, then add it to TESTED_HYPERCORN"
    )


async def abort_download(url: str, *, reset: bool) -> None:
    """GET the big zip with a second request pipelined behind it, read a piece of the
    body, then go away: with a reset, or with an orderly close."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = b"GET " + ZIP + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    with trio.fail_after(20):
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(request + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            received = 0
            while received < 1 << 20:
                received += len(await stream.receive_some(1 << 16))
            if reset:
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_connections_whose_client_went_mid_download_free_their_slot(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    storage = MemoryStorage()
    await store_version(storage, tmp_path, BIG, "v1.0.0", 16 << 20)
    config = make_config(
        tmp_path, "/nonexistent/go", go_fixtures, max_connections=2, keep_alive_timeout=30
    )
    async with served(config, storage=storage) as server:
        for reset in (False, True, False, True):
            await abort_download(server.url, reset=reset)
        # Both slots would still be held by hypercorn waiting on the dead connections.
        async with httpx.AsyncClient(base_url=server.url) as http:
            answered = await http.get("/healthz", timeout=10)
        assert answered.status_code == 200


async def test_sigterm_after_aborted_downloads_stops_without_waiting_the_grace(
    tmp_path: Path, go_binary: str
) -> None:
    root = tmp_path / "storage"
    await store_version(DiskStorage(root), tmp_path, BIG, "v1.0.0", 24 << 20)
    before = stored_tree(root)
    env = child_env(
        tmp_path,
        ATHENS_STORAGE_TYPE="disk",
        ATHENS_DISK_STORAGE_ROOT=str(root),
        ATHENS_GO_BINARY_PATH=go_binary,  # only `go version` runs, at start
        ATHENS_SHUTDOWN_TIMEOUT="60",
    )
    async with child_server(tmp_path, "server", env) as child:
        async with trio.open_nursery() as nursery:
            for i in range(32):
                nursery.start_soon(partial(abort_download, child.url, reset=i % 2 == 1))
        child.process.send_signal(signal.SIGTERM)
        # No request is being served: the grace (60 s) must not be waited for.
        stopped = await settle(lambda: child.process.poll() is not None, seconds=15)
        assert stopped, f"still running 15 s after SIGTERM:\n{child.log()[-3000:]}"
        assert child.process.returncode == 0, child.log()
        assert "SIGTERM" in child.log()
    assert stored_tree(root) == before  # nothing torn, nothing left behind
