"""Helpers shared by the test modules (which import from here, :mod:`.gofixtures`
and :mod:`.conftest`, never from one another).

A raw HTTP/1.1 client (:func:`raw_request`) that sends the request line and headers
exactly as given, byte for byte, since httpx normalises what these tests must send
(dot segments, percent escapes, control bytes); go stand-ins (:func:`go_script`,
:func:`counting_go`, :func:`hanging_go`) and a real go client (:func:`run_go`);
snapshots of a directory tree, of the open file descriptors and of the RSS; the one
poll loop (:func:`wait_until`, :func:`settle`); and a proxy served in the test's
nursery (:func:`served`) or run as a separate ``python -m athens_trio`` process.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import ipaddress
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import athens_trio
from athens_trio import Backend, Config
from athens_trio._module import escape_path
from athens_trio._ziphash import zip_h1
from athens_trio.server import Server, serve
from athens_trio.upstream import GoResult, GoRunner
from athens_trio.upstream._gocmd import RUN_DIR_PREFIX

from .gofixtures import GoFixtures

__all__ = [
    "KeepAliveClient",
    "REPO_ROOT",
    "ChildServer",
    "RawResponse",
    "child_env",
    "child_server",
    "client_env",
    "counting_go",
    "direct_download",
    "direct_downloads",
    "fd_count",
    "fixture_env_vars",
    "go_downloads",
    "go_runs",
    "go_script",
    "hanging_go",
    "hello_path",
    "json_stream",
    "leftover",
    "process_alive",
    "raw_exchange",
    "raw_request",
    "recording_go",
    "refuses_connections",
    "rss_bytes",
    "run_go",
    "served",
    "session_processes",
    "settle",
    "store_version",
    "tree",
    "wait_for_pids",
    "wait_until",
    "write_zip",
]

REPO_ROOT = Path(athens_trio.__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------


@asynccontextmanager
async def served(config: Config, **kwargs: Any) -> AsyncIterator[Server]:
    """The proxy in this test's nursery, on 127.0.0.1 and a port the OS picks."""
    kwargs.setdefault("go_version", "go version (not checked in tests)")
    kwargs.setdefault("shutdown_timeout", 5)
    async with serve(config, host="127.0.0.1", port=0, **kwargs) as server:
        yield server


@dataclass
class ChildServer:
    """A ``python -m athens_trio`` process, its URL and where its stderr goes."""

    process: trio.Process
    url: str
    stderr: Path
    banner: str  # the startup line

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a proxy process: nothing of ours but PATH.  One server
    process (the tests watch its children); tests of ``Workers`` ask for more."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO_ROOT),
        "ATHENS_PORT": "127.0.0.1:0",
        "ATHENS_WORKERS": "1",
    }
    env.update(extra)
    return env


@asynccontextmanager
async def child_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stderr: Path,
    stdout: Path | None = None,
) -> AsyncIterator[trio.Process]:
    """``argv`` started in ``cwd``, its stderr into a file (its stdout too, given one;
    else a pipe).  On the way out it is killed if it still runs (a test that wants a
    clean exit signals it and waits itself)."""
    with contextlib.ExitStack() as files:
        out: Any = files.enter_context(open(stdout, "wb")) if stdout else subprocess.PIPE
        err = files.enter_context(open(stderr, "wb"))
        process = await trio.lowlevel.open_process(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


@asynccontextmanager
async def child_server(
    tmp_path: Path, name: str, env: Mapping[str, str]
) -> AsyncIterator[ChildServer]:
    """Start ``python -m athens_trio`` with ``env``; yield once it prints where it serves.

    On the way out the process is killed if it still runs (a test that wants a clean
    exit sends SIGTERM and waits itself)."""
    stderr_path = tmp_path / f"{name}.stderr"
    argv = [sys.executable, "-m", "athens_trio"]
    async with child_process(argv, cwd=tmp_path, env=env, stderr=stderr_path) as process:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                if not chunk:
                    raise AssertionError(f"{name} exited early: {stderr_path.read_text()}")
                line += chunk
        match = re.search(r"serving on (http://[\d.]+:\d+)", line.decode())
        assert match, line
        yield ChildServer(process, match[1], stderr_path, line.decode())


def fixture_env_vars(fixtures: GoFixtures, **extra: str) -> str:
    """GoBinaryEnvVars for the fixture repositories as ATHENS_GO_BINARY_ENV_VARS
    (';'-separated)."""
    return ";".join(f"{k}={v}" for k, v in {**fixtures.go_env, **extra}.items())


# ---------------------------------------------------------------------------------------
# A raw HTTP client
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def _complete_body(
    method: bytes, status: int, headers: dict[str, str], body: bytes
) -> bytes | None:
    """The body if all of it is in ``body``, else None (read on)."""
    if method == b"HEAD" or status in (204, 304):
        return b""
    if "content-length" in headers:
        length = int(headers["content-length"])
        return body[:length] if len(body) >= length else None
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size_line, found, rest = body.partition(b"\r\n")
            if not found:
                return None
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return bytes(out)
            if len(rest) < size + 2:
                return None
            out += rest[:size]
            body = rest[size + 2 :]
    return None  # delimited by the end of the connection


async def raw_request(
    url: str,
    target: bytes,
    *,
    method: bytes = b"GET",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    close: bool = True,
    timeout: float = 30,  # noqa: ASYNC109
) -> RawResponse:
    """Send one request with exactly this request target and these headers (the
    server's Host is added) on a fresh connection; read the response to its end.

    The connection is dropped once the response is complete; :func:`raw_exchange`
    tells whether the server closes it."""
    response, _ = await raw_exchange(
        url, target, method=method, headers=headers, body=body, close=close, timeout=timeout
    )
    return response


async def raw_exchange(
    url: str,
    target: bytes,
    *,
    method: bytes = b"GET",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    close: bool = True,
    wait_for_close: float = 0,
    timeout: float = 30,  # noqa: ASYNC109
) -> tuple[RawResponse, bool]:
    """:func:`raw_request`, then up to ``wait_for_close`` seconds for the server to
    close the connection; returns the response and whether it did."""
    match = re.fullmatch(r"http://([\d.]+):(\d+)", url)
    assert match, url
    host, port = match[1], int(match[2])
    lines = [method + b" " + target + b" HTTP/1.1", f"Host: {host}:{port}".encode()]
    lines += [name + b": " + value for name, value in headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    received = bytearray()
    response: RawResponse | None = None
    closed = False
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            # The server may answer and close before it read it all.
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(request)
            while response is None:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    chunk = b""  # reset after the answer: what was read is the answer
                if not chunk:
                    closed = True
                received += chunk
                head, found, rest = bytes(received).partition(b"\r\n\r\n")
                if found:
                    status, parsed = _parse_head(head)
                    complete = _complete_body(method, status, parsed, rest)
                    if complete is None and closed:
                        complete = rest
                    if complete is not None:
                        response = RawResponse(status, parsed, complete)
                if closed and response is None:
                    raise AssertionError(
                        f"no whole response to {method!r} {target[:200]!r}: {bytes(received)!r}"
                    )
            if not closed and wait_for_close:
                with trio.move_on_after(wait_for_close):
                    with contextlib.suppress(trio.BrokenResourceError):
                        while await stream.receive_some(65536):
                            pass
                    closed = True
    return response, closed


class KeepAliveClient:
    """One persistent HTTP/1.1 connection for sequential GETs, as lean as it gets (the
    soak's client must cost less than the server it measures).  Reconnects when the
    server closes."""

    def __init__(self, url: str) -> None:
        match = re.fullmatch(r"http://([\d.]+):(\d+)", url)
        assert match, url
        self._host, self._port = match[1], int(match[2])
        self._stream: trio.SocketStream | None = None
        self._buffer = bytearray()

    async def get(self, path: str) -> RawResponse:
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self._host, self._port)
            self._buffer.clear()
        stream = self._stream
        request = f"GET {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n\r\n"
        await stream.send_all(request.encode())
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            await self._receive(stream)
        status, headers = _parse_head(bytes(self._buffer[:end]))
        del self._buffer[: end + 4]
        length = int(headers["content-length"])
        while len(self._buffer) < length:
            await self._receive(stream)
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return RawResponse(status, headers, body)

    async def _receive(self, stream: trio.SocketStream) -> None:
        chunk = await stream.receive_some(1 << 20)
        if not chunk:
            await self.aclose()
            raise ConnectionError("the server closed the connection mid-response")
        self._buffer += chunk

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None


# ---------------------------------------------------------------------------------------
# go stand-ins
# ---------------------------------------------------------------------------------------


def go_script(tmp_path: Path, name: str, body: str) -> Path:
    """An executable shell script standing in for go."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def recording_go(tmp_path: Path, name: str, body: str) -> tuple[Path, Path]:
    """A go that appends its argv to a file (see :func:`go_runs`), then runs ``body``
    (shell).  ``go version`` is not recorded (the CLI asks it once at start)."""
    runs = tmp_path / f"{name}.runs"
    wrapper = go_script(
        tmp_path,
        name,
        # One printf, so one append: concurrent runs never interleave their records.
        f'if [ "$1" != version ]; then\n  printf "%s\\0" "$@" "\n" >> {runs}\nfi\n' + body,
    )
    return wrapper, runs


def counting_go(tmp_path: Path, go_binary: str, name: str = "counting-go") -> tuple[Path, Path]:
    """A go that records its argv (see :func:`go_runs`), then is the real go."""
    return recording_go(tmp_path, name, f'exec {go_binary} "$@"\n')


def go_runs(runs_file: Path) -> list[list[str]]:
    """Each recorded run's argv (see :func:`counting_go`): NUL-terminated arguments,
    then a newline and a NUL."""
    if not runs_file.exists():
        return []
    return [
        record.split("\0")[:-1]
        for record in runs_file.read_text(errors="surrogateescape").split("\n\0")
        if record
    ]


def go_downloads(runs_file: Path, spec: str | None = None) -> int:
    """How many ``go mod download`` runs there were (of ``spec``, module@version, only)."""
    return sum(
        run[:2] == ["mod", "download"] and (spec is None or run[-1] == spec)
        for run in go_runs(runs_file)
    )


def hanging_go(tmp_path: Path) -> Path:
    """A go that starts a child (as go starts git) and then hangs, recording both pids
    in ``tmp_path / "pids"`` (see :func:`wait_for_pids`)."""
    pids = tmp_path / "pids"
    return go_script(
        tmp_path,
        "hanging-go",
        f"echo $$ >> {pids}\n"
        "sleep 1000 &\n"
        f"echo $! >> {pids}\n"
        # Leave something read-only behind, as go's module cache is.
        'mkdir -p "$GOMODCACHE/cache/x" && touch "$GOMODCACHE/cache/x/f"\n'
        'chmod -R a-w "$GOMODCACHE"\n'
        "wait\n",
    )


async def wait_for_pids(path: Path, count: int, seconds: float = 10) -> list[int]:
    """The first ``count`` pids a go stand-in wrote to ``path``, once it wrote them
    (failing the test if it has not within ``seconds``)."""

    def written() -> list[int]:
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    await wait_until(lambda: len(written()) >= count, seconds)
    return written()[:count]


def leftover(config: Config) -> list[str]:
    """What the fetchers left in GoGetDir (nothing, once every fetch ended): its entries,
    a running server's own run directory standing for what is in it but its lock."""
    found: list[str] = []
    for name in sorted(os.listdir(config.go_get_dir)):
        if name.startswith(RUN_DIR_PREFIX):
            inside = set(os.listdir(Path(config.go_get_dir) / name)) - {".owner"}
            found += [f"{name}/{entry}" for entry in sorted(inside)]
        else:
            found.append(name)
    return found


# ---------------------------------------------------------------------------------------
# The real go as a client
# ---------------------------------------------------------------------------------------


def client_env(
    tmp_path: Path, fixtures: GoFixtures, gocache: Path, goproxy: str, name: str = "client"
) -> dict[str, str]:
    """A go client's whole environment: its own GOPATH and module cache, ``goproxy``."""
    home = tmp_path / f"{name}-home"
    gopath = tmp_path / f"{name}-gopath"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        **fixtures.go_env,
        "GOPROXY": goproxy,
        "GOPATH": str(gopath),
        "GOMODCACHE": str(gopath / "pkg" / "mod"),
        "GOCACHE": str(gocache),
        "CGO_ENABLED": "0",
    }


async def run_go(
    go_binary: str,
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run go without blocking the event loop the server runs in."""
    cwd.mkdir(parents=True, exist_ok=True)
    result = await trio.run_process(
        [go_binary, *args],
        cwd=cwd,
        env=dict(env),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"go {' '.join(args)} exited {result.returncode}:\n{result.stderr.decode()}")
    return result


def hello_path(fixtures: GoFixtures, tail: str) -> str:
    """The proxy path of ``tail`` (``list``, ``v1.0.0.info``...) of the hello module."""
    return f"/{fixtures.hello}/@v/{tail}"


def json_stream(data: bytes) -> list[dict[str, Any]]:
    """The objects of concatenated JSON, as ``go mod download -json`` writes."""
    decoder = json.JSONDecoder()
    text, index = data.decode(), 0
    objects: list[dict[str, Any]] = []
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return objects
        obj, index = decoder.raw_decode(text, index)
        objects.append(obj)


def direct_download(
    fixtures: GoFixtures, go_binary: str, tmp_path: Path, spec: str
) -> dict[str, str]:
    """What a plain ``go mod download -json`` (no proxy) reports for ``spec``."""
    (found,) = direct_downloads(fixtures, go_binary, tmp_path / "direct", [spec]).values()
    return found


def direct_downloads(
    fixtures: GoFixtures, go_binary: str, work: Path, specs: Sequence[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    """What a plain ``go mod download -json`` (no proxy) says of each spec, by
    (module, version).  Blocking: call it before any server runs in this loop."""
    work.mkdir(parents=True, exist_ok=True)
    gopath = work / "gopath"
    done = subprocess.run(
        [go_binary, "mod", "download", "-json", *specs],
        cwd=work,
        env=fixtures.environ(GOPATH=str(gopath), GOCACHE=str(gopath / "cache")),
        capture_output=True,
        check=True,
    )
    return {(obj["Path"], obj["Version"]): obj for obj in json_stream(done.stdout)}


# ---------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, int]:
    """Every file and directory under ``root`` (relative path -> size; -1 for a
    directory), so that two snapshots compare equal only if nothing was added,
    removed or resized."""
    found: dict[str, int] = {}
    if not root.exists():
        return found
    for directory, subdirs, files in os.walk(root):
        base = Path(directory)
        for name in subdirs:
            found[(base / name).relative_to(root).as_posix() + "/"] = -1
        for name in files:
            path = base / name
            found[path.relative_to(root).as_posix()] = path.lstat().st_size
    return found


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def session_processes(session: int) -> list[int]:
    """The live (not zombie) processes of a session: go runs as the leader of its own,
    so whatever it started (git, ssh, a sleeping child) is found by the session id."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        state, sid = fields[0], int(fields[3])
        if sid == session and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def write_zip(path: Path, module: str, version: str, size: int) -> None:
    """A module zip of about ``size`` bytes of random (so stored, not deflated) data."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{module}@{version}/go.mod", f"module {module}\n")
        archive.writestr(f"{module}@{version}/blob.bin", os.urandom(size))


async def store_version(
    storage: Backend, work: Path, module: str, version: str, size: int
) -> bytes:
    """Save a made-up version of ``module`` with a zip of about ``size`` bytes; return
    the zip's bytes (its h1 is recorded, as a stash records go's)."""
    source = work / f"{escape_path(module).replace('/', '_')}-{version}.zip"
    write_zip(source, module, version, size)
    data = source.read_bytes()
    info = json.dumps({"Version": version, "Time": "2024-01-01T00:00:00Z"}).encode()
    await storage.save(
        module,
        version,
        info=info,
        mod=f"module {module}\n".encode(),
        zip_file=source,
        zip_sum=zip_h1(source),
    )
    return data


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------------
# Waiting for a condition
# ---------------------------------------------------------------------------------------

Condition = Callable[[], bool] | Callable[[], Awaitable[bool]]


async def _holds(condition: Condition) -> bool:
    result = condition()
    return await result if inspect.isawaitable(result) else bool(result)


async def settle(condition: Condition, seconds: float = 10) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass; return whether it held."""
    with trio.move_on_after(seconds):
        while not await _holds(condition):
            await trio.sleep(0.02)
        return True
    return await _holds(condition)


async def refuses_connections(url: str) -> bool:
    """Whether nothing listens at ``url`` (``http://host:port``) any more."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        probe = await trio.open_tcp_stream(host, int(port))
    except OSError:
        return True
    await probe.aclose()
    return False


async def wait_until(condition: Condition, seconds: float = 10) -> None:
    """Poll ``condition`` (a file appearing, a log line, a process gone) until it holds;
    fail the test if it does not within ``seconds``."""
    if not await settle(condition, seconds):
        raise AssertionError(f"still not so after {seconds:g} s: {condition}")


class ScriptedGo(GoRunner):
    """A go runner that runs no go: ``answer(args)`` says what go would have, and every
    run's argv and timeout are recorded (so it can count runs, too)."""

    def __init__(self, answer: Callable[[Sequence[str]], GoResult]) -> None:
        self.answer = answer
        self.runs: list[tuple[list[str], float]] = []

    @contextlib.asynccontextmanager
    async def run(
        self,
        args: Sequence[str],
        *,
        timeout: float,  # noqa: ASYNC109
        what: str,
    ) -> AsyncIterator[GoResult]:
        self.runs.append((list(args), timeout))
        yield self.answer(args)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "athens-trio test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file
