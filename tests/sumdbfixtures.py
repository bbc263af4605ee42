"""A real checksum database on loopback: golang.org/x/mod's sumdb.Server, in Go.

``tests/sumdbserver`` is a small Go program (see its main.go) built once into a cache
directory, named by a digest of its sources so that an edit rebuilds it.  Building needs
golang.org/x/mod from the Go module proxy (or the module cache), so it is a separate
install step, run before the tests::

    python -m tests.sumdbfixtures build

The ``sumdb_binary`` fixture uses the built binary; where it is missing the fixture
builds it itself (``go build`` with GOFLAGS=-mod=mod, which needs the module proxy).
The tests then talk only to servers on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import platformdirs
import pytest
import trio

from .gofixtures import find_go_binary

__all__ = [
    "SumDBServer",
    "build_sumdb_server",
    "fake_record",
    "run_sumdb_server",
    "sumdb_binary",
    "sumdb_server_binary",
]

SERVER_SOURCE = Path(__file__).parent / "sumdbserver"
_SOURCES = ("main.go", "go.mod", "go.sum")


def _cache_dir() -> Path:
    return Path(
        os.environ.get("ATHENS_TRIO_TEST_CACHE") or platformdirs.user_cache_dir("athens-trio-tests")
    )


def sumdb_server_binary() -> Path:
    """Where the server built from the current sources lives (present or not)."""
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update((SERVER_SOURCE / name).read_bytes())
    return _cache_dir() / f"sumdbserver-{digest.hexdigest()[:16]}"


def build_sumdb_server(go: str | None = None) -> Path:
    """Build the server unless it is built already; return the binary's path.

    Reaches the Go module proxy for golang.org/x/mod unless the module cache has it."""
    binary = sumdb_server_binary()
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOFLAGS="-mod=mod", GOWORK="off", CGO_ENABLED="0")
    fd, temp = tempfile.mkstemp(dir=binary.parent, prefix=".sumdbserver-")
    os.close(fd)
    try:
        subprocess.run(
            [go or find_go_binary(), "build", "-buildvcs=false", "-o", temp, "."],
            cwd=SERVER_SOURCE,
            env=env,
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        os.replace(temp, binary)  # concurrent builders (xdist workers) each rename whole
    finally:
        Path(temp).unlink(missing_ok=True)
    return binary


def fake_hash(*parts: str) -> str:
    return "h1:" + base64.b64encode(hashlib.sha256("\0".join(parts).encode()).digest()).decode()


def fake_record(module: str, version: str, zip_hash: str = "", mod_hash: str = "") -> str:
    """A record's go.sum lines; hashes default to made-up but well-formed ones."""
    zip_hash = zip_hash or fake_hash(module, version, "zip")
    mod_hash = mod_hash or fake_hash(module, version, "mod")
    return f"{module} {version} {zip_hash}\n{module} {version}/go.mod {mod_hash}\n"


@dataclass(frozen=True)
class SumDBServer:
    url: str
    vkey: str
    size: int
    addr: str  # host:port it listens on

    @property
    def name(self) -> str:
        """The database's name, as its key gives it."""
        return self.vkey.split("+")[0]

    @property
    def gosumdb(self) -> str:
        """GOSUMDB naming this database: its key and URL."""
        return f"{self.vkey} {self.url}"

    async def add(self, records: Sequence[str]) -> int:
        """Log more records; the new tree size."""
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.url}/add", content="".join(records))
        response.raise_for_status()
        return int(response.text)


@asynccontextmanager
async def run_sumdb_server(
    binary: Path,
    work: Path,
    records: Sequence[str],
    *flags: str,
    name: str = "sumdb",
    listen: str = "127.0.0.1:0",
) -> AsyncIterator[SumDBServer]:
    """Run the server on ``listen`` (a free loopback port by default) over ``records``,
    signing with the key in ``work/key`` (created on first use, so a restart in the
    same ``work`` keeps it)."""
    records_file = work / f"{name}.records"
    records_file.write_text("".join(records))
    stderr_path = work / f"{name}.stderr"
    argv = [str(binary), "-records", str(records_file), "-key", str(work / "key")]
    argv += ["-listen", listen, *flags]
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
        )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                if not chunk:
                    raise AssertionError(f"sumdbserver exited: {stderr_path.read_text()}")
                line += chunk
        hello = json.loads(line)
        addr = hello["addr"]
        yield SumDBServer(url=f"http://{addr}", vkey=hello["vkey"], size=hello["size"], addr=addr)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.stdout.aclose() if process.stdout else None


@pytest.fixture(scope="session")
def sumdb_binary() -> Path:
    """The built checksum database server (built here if missing: needs the module proxy)."""
    return build_sumdb_server()


def _main(argv: Sequence[str]) -> int:
    if list(argv) != ["build"]:
        print("usage: python -m tests.sumdbfixtures build", file=sys.stderr)
        return 2
    print(build_sumdb_server())
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
