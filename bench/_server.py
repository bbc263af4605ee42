"""The servers under measurement, each a subprocess on a free loopback port.

- athens-trio: ``python -m athens_trio`` configured by ATHENS_* variables, ready when
  ``/healthz`` answers 200, stopped by SIGTERM (it must exit 0).
- nginx: a generated minimal ``nginx.conf`` (every path in a temporary directory,
  ``daemon off``, one worker, sendfile) whose root is the storage directory itself.
- Python's ``http.server``: the stand-in where nginx is missing, labelled as such.
- Athens (Go): a given binary on a storage tree in its own layout.

Each is an async context manager yielding a :class:`Server` with its URL and PID, and
its output in a log file for when something goes wrong.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

import athens_trio

from ._fixtures import GoEnv
from ._results import ATHENS_TRIO
from ._sizes import Sizes

__all__ = [
    "Server",
    "ServerError",
    "free_port",
    "nginx_conf",
    "run_athens_go",
    "run_athens_trio",
    "run_nginx",
    "run_reference",
    "run_static",
    "started_together",
]

_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 20.0
# Settings the servers must not inherit from whoever runs the bench.
_STRIPPED_ENV = ("ATHENS_", "AWS_", "GO_BINARY_PATH", "PORT", "GO", "GIT_")
# The server subprocess imports the very athens_trio this harness imported.
_SOURCE = str(Path(athens_trio.__file__).resolve().parent.parent)


class ServerError(RuntimeError):
    """A server did not start, or did not stop cleanly."""


@dataclass
class Server:
    name: str
    """Its label in the results, e.g. ``athens-trio`` or ``nginx``."""
    url: str
    process: trio.Process
    log: Path
    exit_code: int | None = None
    """Set once stopped; athens-trio must exit 0 on SIGTERM."""
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV)}


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


async def _wait_ready(server: Server, path: str, *, need_ok: bool) -> None:
    """Poll ``path`` until it answers (200 when ``need_ok``), the process dies, or time's up."""
    with trio.move_on_after(_READY_TIMEOUT) as deadline:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                if server.process.returncode is not None:
                    raise ServerError(
                        f"{server.name} exited with {server.process.returncode} before it "
                        f"was ready:\n{server.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(server.url + path)
                    if response.status_code == 200 or not need_ok:
                        return
                await trio.sleep(0.05)
    if deadline.cancelled_caught:
        raise ServerError(f"{server.name} not ready in {_READY_TIMEOUT:g} s:\n{server.log_tail()}")


@contextlib.asynccontextmanager
async def _serve(
    name: str,
    command: list[str],
    *,
    port: int,
    env: Mapping[str, str],
    log: Path,
    ready_path: str,
    need_ok: bool,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> AsyncIterator[Server]:
    fd = _open_log(log)
    try:
        # cwd: the log's directory, so no stray ./athens.toml or the like is read.
        process = await trio.lowlevel.open_process(
            command,
            cwd=log.parent,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
        )
    finally:
        os.close(fd)
    server = Server(name=name, url=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        await _wait_ready(server, ready_path, need_ok=need_ok)
        yield server
    finally:
        with trio.CancelScope(shield=True):
            server.exit_code = await _stop(process, stop_signal)


async def _stop(process: trio.Process, stop_signal: signal.Signals) -> int:
    if process.returncode is None:
        process.send_signal(stop_signal)
        with trio.move_on_after(_STOP_TIMEOUT):
            return await process.wait()
        process.kill()
    return await process.wait()


@contextlib.asynccontextmanager
async def started_together(
    managers: Sequence[contextlib.AbstractAsyncContextManager[Server]],
) -> AsyncIterator[list[Server]]:
    """Enter every server's context manager at once (athens-trio takes seconds to start
    on a busy machine), yield the servers in their order, and leave them all together."""
    release = trio.Event()
    servers: dict[int, Server] = {}

    async def hold(
        manager: contextlib.AbstractAsyncContextManager[Server],
        *,
        task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with manager as server:
            task_status.started(server)
            await release.wait()

    async with trio.open_nursery() as nursery:

        async def start(index: int) -> None:
            servers[index] = await nursery.start(hold, managers[index])

        try:
            async with trio.open_nursery() as starting:
                for index in range(len(managers)):
                    starting.start_soon(start, index)
            yield [servers[index] for index in range(len(managers))]
        finally:
            release.set()


@contextlib.asynccontextmanager
async def run_athens_trio(
    workdir: Path,
    storage: Path,
    go_env: GoEnv,
    go_binary: str,
    sizes: Sizes,
    goproxy: str = "direct",
    extra_env: Mapping[str, str] | None = None,
    name: str = ATHENS_TRIO,
) -> AsyncIterator[Server]:
    """athens-trio on ``storage`` (disk), fetching through ``go_binary`` from the fixtures,
    or from the upstream proxies ``goproxy`` names (its GoBinaryEnvVars' GOPROXY);
    ``extra_env`` adds settings (``ATHENS_*`` variables, or ``ATHENS_STORAGE_TYPE=s3``
    with its own); ``name`` is its label in the results."""
    port = free_port()
    goget = workdir / "goget"
    goget.mkdir(parents=True, exist_ok=True)
    env = _clean_environ()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SOURCE, env.get("PYTHONPATH")]))
    env.update(
        ATHENS_PORT=f"127.0.0.1:{port}",
        ATHENS_STORAGE_TYPE="disk",
        ATHENS_DISK_STORAGE_ROOT=str(storage),
        GO_BINARY_PATH=go_binary,
        ATHENS_GO_BINARY_ENV_VARS=";".join(
            f"{k}={v}" for k, v in {**go_env.server_vars(), "GOPROXY": goproxy}.items()
        ),
        # One process, as nginx runs one worker: a scenario asks for more itself.
        ATHENS_WORKERS="1",
        ATHENS_GOGET_WORKERS=str(sizes.goget_workers),
        ATHENS_PROTOCOL_WORKERS=str(sizes.protocol_workers),
        ATHENS_STASH_TIMEOUT=str(sizes.stash_timeout),
        ATHENS_GOGET_DIR=str(goget),
    )
    env.update(extra_env or {})
    async with _serve(
        name,
        [sys.executable, "-m", "athens_trio"],
        port=port,
        env=env,
        log=workdir / "athens-trio.log",
        ready_path="/healthz",
        need_ok=True,
    ) as server:
        yield server
    if server.exit_code != 0:
        raise ServerError(
            f"{name} exited with {server.exit_code} on SIGTERM (want 0):\n{server.log_tail()}"
        )


def nginx_conf(directory: Path, root: Path, port: int, *, as_root: bool) -> str:
    """A minimal nginx.conf: everything it writes stays in ``directory``; it serves
    ``root`` statically on 127.0.0.1:``port`` with one worker and sendfile."""
    d = directory.resolve()
    temp = {name: d / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    # Workers drop to "nobody" when the master is root; the storage may be 0700 root's.
    user = "user root;\n" if as_root else ""
    return (
        f"{user}"
        "daemon off;\n"
        "master_process on;\n"
        "worker_processes 1;\n"
        "worker_rlimit_nofile 8192;\n"
        f"pid {d / 'nginx.pid'};\n"
        f"error_log {d / 'error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        "    access_log off;\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        "    keepalive_requests 1000000;\n"
        "    default_type application/octet-stream;\n"
        f"    client_body_temp_path {temp['client_body']};\n"
        f"    proxy_temp_path {temp['proxy']};\n"
        f"    fastcgi_temp_path {temp['fastcgi']};\n"
        f"    uwsgi_temp_path {temp['uwsgi']};\n"
        f"    scgi_temp_path {temp['scgi']};\n"
        "    server {\n"
        f"        listen 127.0.0.1:{port};\n"
        f"        root {root.resolve()};\n"
        "    }\n"
        "}\n"
    )


@contextlib.asynccontextmanager
async def run_nginx(nginx: str, workdir: Path, root: Path) -> AsyncIterator[Server]:
    port = free_port()
    directory = workdir / f"nginx-{port}"
    directory.mkdir(parents=True)
    conf = directory / "nginx.conf"
    conf.write_text(nginx_conf(directory, root, port, as_root=os.geteuid() == 0))
    command = [nginx, "-c", str(conf), "-p", str(directory), "-e", str(directory / "error.log")]
    async with _serve(
        "nginx",
        command,
        port=port,
        env=_clean_environ(),
        log=directory / "stdout.log",
        ready_path="/",
        need_ok=False,
        stop_signal=signal.SIGQUIT,  # graceful: workers finish what they serve
    ) as server:
        yield server


@contextlib.asynccontextmanager
async def run_static(workdir: Path, root: Path) -> AsyncIterator[Server]:
    """Python's threading http.server on ``root``: nginx's stand-in where nginx is missing."""
    port = free_port()
    command = [
        sys.executable,
        *("-m", "http.server", "--bind", "127.0.0.1", "--directory", str(root), str(port)),
    ]
    async with _serve(
        "http.server",
        command,
        port=port,
        env=_clean_environ(),
        log=workdir / f"http-server-{port}.log",
        ready_path="/",
        need_ok=False,
    ) as server:
        yield server


@contextlib.asynccontextmanager
async def run_reference(nginx: str | None, workdir: Path, root: Path) -> AsyncIterator[Server]:
    """nginx on ``root`` where there is one, else Python's http.server (so labelled)."""
    if nginx:
        async with run_nginx(nginx, workdir, root) as server:
            yield server
    else:
        async with run_static(workdir, root) as server:
            yield server


@contextlib.asynccontextmanager
async def run_athens_go(
    binary: str,
    workdir: Path,
    storage: Path,
    go_env: GoEnv,
    go_binary: str,
    sizes: Sizes,
    goproxy: str = "direct",
) -> AsyncIterator[Server]:
    """Athens (Go) with disk storage at ``storage`` (Athens' own layout), its go
    fetching from the fixtures, or from the GOPROXY list ``goproxy``."""
    port = free_port()
    goget = workdir / "goget"
    goget.mkdir(parents=True, exist_ok=True)
    env = _clean_environ()
    env.update(
        ATHENS_PORT=f"127.0.0.1:{port}",
        ATHENS_STORAGE_TYPE="disk",
        ATHENS_DISK_STORAGE_ROOT=str(storage),
        GO_BINARY_PATH=go_binary,
        ATHENS_GO_BINARY_ENV_VARS=";".join(
            f"{k}={v}" for k, v in {**go_env.server_vars(), "GOPROXY": goproxy}.items()
        ),
        # One process, as nginx runs one worker: a scenario asks for more itself.
        ATHENS_WORKERS="1",
        ATHENS_GOGET_WORKERS=str(sizes.goget_workers),
        ATHENS_PROTOCOL_WORKERS=str(sizes.protocol_workers),
        ATHENS_STASH_TIMEOUT=str(sizes.stash_timeout),
        ATHENS_GOGET_DIR=str(goget),
        # Athens defaults to debug; athens-trio to info (one access line a request).
        ATHENS_LOG_LEVEL="info",
    )
    async with _serve(
        "athens",
        [binary],
        port=port,
        env=env,
        log=workdir / f"athens-{port}.log",
        ready_path="/healthz",
        need_ok=True,
    ) as server:
        yield server
