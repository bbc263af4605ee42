"""Real Redis servers for the replica tests: Debian's redis-server and redis-sentinel,
each on a free 127.0.0.1 port in a temporary directory, stopped (and its files gone)
when the test ends.

A missing binary fails the test with the line that installs it; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "INSTALL_HINT",
    "RedisServer",
    "MASTER_NAME",
    "free_port",
    "redis_binary",
    "start_redis",
    "start_sentinel",
]

INSTALL_HINT = "apt-get install redis-server redis-sentinel  (Debian's packages)"
#: Seconds a server gets to answer PING after it was started.
START_SECONDS = 20.0


def redis_binary(name: str) -> str:
    """The path of ``name`` (redis-server, redis-sentinel); fails the test if absent."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ask(port: int, *command: str) -> bytes:
    """One RESP command to 127.0.0.1:``port``; its raw answer."""
    request = f"*{len(command)}\r\n".encode() + b"".join(
        f"${len(part.encode())}\r\n{part}\r\n".encode() for part in command
    )
    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        connection.sendall(request)
        return connection.recv(65536)


@dataclass
class RedisServer:
    """A running redis-server or redis-sentinel."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    binary: str

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ask(self, *command: str) -> bytes:
        return _ask(self.port, *command)

    def stop(self) -> None:
        """Stop it now (SIGKILL: as a crash or a lost host looks to its clients)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def restart(self) -> None:
        """Stop it, and start it again on the same port (empty: nothing is saved)."""
        self.stop()
        self.process = _launch(self.binary, self.directory, None)
        self._wait_ready(b"PONG", "PING")

    def _wait_ready(self, ready: bytes, *command: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "log").read_text(errors="replace")
                raise RuntimeError(f"redis exited with {self.process.returncode}:\n{log}")
            try:
                if ready in self.ask(*command):
                    return
            except OSError:
                pass
            time.sleep(0.01)  # polling for the server to listen
        raise RuntimeError(f"redis on port {self.port} did not answer {command}")


def _launch(binary: str, directory: Path, conf: str | None) -> subprocess.Popen[bytes]:
    """``binary`` on ``conf`` (None: the one it ran on before)."""
    directory.mkdir(parents=True, exist_ok=True)
    if conf is not None:
        (directory / "redis.conf").write_text(conf)
    with open(directory / "log", "ab") as log:
        return subprocess.Popen(
            [binary, str(directory / "redis.conf")],
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _base_conf(port: int, directory: Path) -> str:
    return (
        f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
        f'dir "{directory}"\nsave ""\nappendonly no\n'
    )


@contextlib.contextmanager
def start_redis(directory: Path) -> Iterator[RedisServer]:
    """A redis-server on a free port, its files under ``directory``."""
    binary = redis_binary("redis-server")
    port = free_port()
    server = RedisServer(
        port, _launch(binary, directory, _base_conf(port, directory)), directory, binary
    )
    try:
        server._wait_ready(b"PONG", "PING")
        yield server
    finally:
        server.stop()


#: The master name the sentinel of :func:`start_sentinel` watches.
MASTER_NAME = "athens-master"


@contextlib.contextmanager
def start_sentinel(directory: Path, master: RedisServer) -> Iterator[RedisServer]:
    """A redis-sentinel on a free port watching ``master`` as :data:`MASTER_NAME`."""
    binary = redis_binary("redis-sentinel")
    port = free_port()
    conf = _base_conf(port, directory) + (
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} 60000\n"
    )
    server = RedisServer(port, _launch(binary, directory, conf), directory, binary)
    try:
        server._wait_ready(
            str(master.port).encode(), "SENTINEL", "get-master-addr-by-name", MASTER_NAME
        )
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------
# A lock holder in a process of its own, for a test to kill -9
# ---------------------------------------------------------------------------------------


def hold_lock(endpoint: str, module: str, version: str, marker: Path) -> None:
    """Take the single-flight lock on ``module@version``'s zip and hold it for ever,
    refreshing it, as a replica whose fetch hangs; ``marker`` appears once it is held."""
    import trio

    from athens_trio.stash import LockSettings, Part, RedisLock, Stasher, redis_client
    from athens_trio.storage import MemoryStorage

    class Hangs(Stasher):
        async def stash(self, module: str, version: str, part: Part) -> None:
            marker.touch()
            await trio.sleep_forever()

    async def hold() -> None:
        settings = LockSettings(ttl=1, timeout=1, max_retries=1)
        client, where = redis_client(endpoint, "", settings)
        async with trio.open_nursery() as nursery:
            lock = RedisLock(client, MemoryStorage(), nursery, settings, where=where)
            await lock(Hangs()).stash(module, version, "zip")

    trio.run(hold)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["hold"] and len(sys.argv) == 6:
        hold_lock(sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5]))
    else:
        sys.exit("usage: python -m tests.redisfixtures hold ENDPOINT MODULE VERSION MARKER")
