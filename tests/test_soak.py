"""A bounded soak: a few thousand mixed requests, 64 at a time, cold then warm.

One in-process server (so its file descriptors and RSS are this process's) over disk
storage and the real go with the local fixture repositories.  The requests, in a
seeded random order: zips, go.mods and .infos of every fixture version (the first ones
cold: they fetch), lists, latests, a branch query, malformed paths, missing modules and
versions.  Every answer is checked: no 5xx at all, each status what its kind calls for,
every zip byte-identical to one whose go ``h1:`` hash matched a direct download's, every
go.mod and .info what go itself fetched.  Afterwards the descriptors settle back to
where they were and the RSS stays near its baseline.  Bounded in count and time.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from athens_trio._module import escape_path
from athens_trio._ziphash import zip_h1

from .gofixtures import GoFixtures
from .helpers import (
    KeepAliveClient,
    RawResponse,
    child_env,
    child_server,
    direct_downloads,
    fixture_env_vars,
    settle,
    tree,
    wait_until,
)
from .leftoverhelpers import (
    STALLED_PREFIX,
    children,
    session_members,
    stalled_env_vars,
    stalled_host,
)

REQUESTS = 3000
CONCURRENCY = 64
RSS_SLACK = 30 << 20


@dataclass(frozen=True)
class Want:
    """One request of the soak and what its answer must be."""

    kind: str  # zip, mod, info, list, latest, query, bad, missing
    path: str
    module: str = ""
    version: str = ""


def _versions(fx: GoFixtures) -> list[tuple[str, str]]:
    return [
        *((fx.hello, v) for v in fx.hello_versions),
        (fx.consumer, fx.consumer_version),
        (fx.upper, fx.upper_version),
        (fx.major, fx.major_v1_version),
        (fx.major_v2, fx.major_v2_version),
        *((fx.incompatible, v) for v in fx.incompatible_versions),
    ]


@pytest.fixture(scope="session")
def direct(
    go_fixtures: GoFixtures, go_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], dict[str, Any]]:
    specs = [f"{m}@{v}" for m, v in _versions(go_fixtures)]
    return direct_downloads(go_fixtures, go_binary, tmp_path_factory.mktemp("soak-direct"), specs)


def _plan(fx: GoFixtures, seed: int) -> list[Want]:
    rng = random.Random(seed)
    versions = _versions(fx)
    hello = escape_path(fx.hello)
    bad = [
        f"/{hello}/@v/v1.0.zip",  # not canonical
        f"/{hello}/@v/-x.info",  # a flag
        f"/{hello}/@v/v1.0.0.tar",  # no such suffix
        f"/{hello}/@v/v1.0.0;id.info",  # shell
        "/github.com/athens-fixtures/!!hello/@v/list",  # bad case encoding
        "/github.com/Athens-Fixtures/hello/@v/list",  # raw upper case
        "/-x/@v/list",
        "/%00/@v/list",
    ]
    kinds = ["zip"] * 34 + ["mod"] * 25 + ["info"] * 25 + ["bad"] * 10
    kinds += ["list", "latest", "query", "missing", "missing-version"]
    plan: list[Want] = []
    for _ in range(REQUESTS):
        kind = rng.choice(kinds)
        module, version = rng.choice(versions)
        escaped = escape_path(module)
        if kind in ("zip", "mod", "info"):
            plan.append(Want(kind, f"/{escaped}/@v/{version}.{kind}", module, version))
        elif kind == "list":
            plan.append(Want(kind, f"/{escaped}/@v/list", module))
        elif kind == "latest":
            plan.append(Want(kind, f"/{escaped}/@latest", module))
        elif kind == "query":
            plan.append(Want(kind, f"/{hello}/@v/main.info", fx.hello))
        elif kind == "missing":
            ext = rng.choice(["info", "mod", "zip"])
            plan.append(Want("missing", f"/{escape_path(fx.missing)}/@v/v1.0.0.{ext}"))
        elif kind == "missing-version":
            plan.append(Want("missing", f"/{hello}/@v/v1.9.{rng.randrange(3)}.mod"))
        else:
            plan.append(Want("bad", rng.choice(bad)))
    return plan


@dataclass
class Checker:
    fixtures: GoFixtures
    direct: dict[tuple[str, str], dict[str, Any]]
    work: Path

    def __post_init__(self) -> None:
        self.good_zips: dict[tuple[str, str], str] = {}  # sha256 of a zip whose h1 matched
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []

    def fail(self, want: Want, why: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(f"{want.path}: {why}")

    def check(self, want: Want, response: RawResponse) -> None:
        status = response.status
        self.statuses[status] += 1
        expected = {"bad": 400, "missing": 404}.get(want.kind, 200)
        if status != expected:
            self.fail(want, f"{status} (wanted {expected}): {response.text[:200]}")
            return
        key = (want.module, want.version)
        if want.kind == "zip":
            self._check_zip(want, response.body)
        elif want.kind == "mod":
            if response.body != Path(self.direct[key]["GoMod"]).read_bytes():
                self.fail(want, "a go.mod that is not go's")
        elif want.kind == "info":
            if json.loads(response.body)["Version"] != want.version:
                self.fail(want, f"info of {response.text}")
        elif want.kind == "list":
            listed = response.text.split()
            mine = [v for (m, v) in self.direct if m == want.module]
            if not set(mine) <= set(listed):
                self.fail(want, f"list {listed} lacks some of {mine}")
        elif want.kind == "latest":
            if not json.loads(response.body)["Version"].startswith("v"):
                self.fail(want, f"latest {response.text}")
        elif (
            want.kind == "query"
            and json.loads(response.body)["Version"] != self.fixtures.hello_main_pseudo
        ):
            self.fail(want, f"main resolved to {response.text}")

    def _check_zip(self, want: Want, body: bytes) -> None:
        key = (want.module, want.version)
        digest = hashlib.sha256(body).hexdigest()
        known = self.good_zips.get(key)
        if known == digest:
            return
        if known is not None:
            self.fail(want, "a zip that differs from the one served before")
            return
        path = self.work / f"zip-{len(self.good_zips)}.zip"
        path.write_bytes(body)
        try:
            h1 = zip_h1(path)
        except Exception as exc:
            self.fail(want, f"not a zip: {exc!r}")
            return
        finally:
            path.unlink()
        if h1 != self.direct[key]["Sum"]:
            self.fail(want, f"h1 {h1} != go's {self.direct[key]['Sum']}")
            return
        self.good_zips[key] = digest


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _sockets(pid: int) -> int:
    """How many sockets ``pid`` holds (its listeners, then one per open connection)."""
    found = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue  # closed meanwhile
    return found


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
async def test_soak(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    direct: dict[tuple[str, str], dict[str, Any]],
) -> None:
    checker = Checker(go_fixtures, direct, tmp_path)
    plan = _plan(go_fixtures, seed=20240101)
    root, goget = tmp_path / "storage", tmp_path / "goget"
    goget.mkdir()
    env = child_env(
        tmp_path,
        ATHENS_STORAGE_TYPE="disk",
        ATHENS_DISK_STORAGE_ROOT=str(root),
        ATHENS_GOGET_DIR=str(goget),
        ATHENS_GO_BINARY_PATH=go_binary,
        ATHENS_GO_BINARY_ENV_VARS=fixture_env_vars(go_fixtures),
        ATHENS_LOG_LEVEL="warn",
    )

    # The server is a process of its own: the client and the server each get a core,
    # and its descriptors and memory are counted apart from the client's.  A hang guard
    # only, not a bound on throughput: each request has its own below.
    with trio.fail_after(600):
        async with child_server(tmp_path, "soak", env) as child:
            pid = child.process.pid
            listening = _sockets(pid)
            warm = KeepAliveClient(child.url)
            assert (await warm.get("/healthz")).status == 200
            await warm.aclose()
            await wait_until(lambda: _sockets(pid) <= listening)  # it saw that connection go
            fds_before, rss_before = _fds(pid), _rss(pid)

            send, receive = trio.open_memory_channel[Want](0)

            async def worker() -> None:
                # One keep-alive connection each, as a go client keeps its own.
                client = KeepAliveClient(child.url)
                try:
                    async with receive.clone() as mine:
                        async for want in mine:
                            try:
                                with trio.fail_after(40):
                                    response = await client.get(want.path)
                            except (OSError, trio.TooSlowError) as exc:
                                checker.fail(want, f"no answer: {exc!r}")
                                await client.aclose()
                                continue
                            checker.check(want, response)
                finally:
                    await client.aclose()

            async with trio.open_nursery() as nursery:
                for _ in range(CONCURRENCY):
                    nursery.start_soon(worker)
                async with send, receive:
                    for want in plan:
                        await send.send(want)

            # Every connection closed (client side, then server side), every file too.
            settled = await settle(lambda: _fds(pid) <= fds_before)
            fds_after, rss_after = _fds(pid), _rss(pid)
            child.process.terminate()  # a clean stop removes its run dir in GoGetDir
            await child.process.wait()
            log = child.log()

    assert checker.failures == []
    assert sum(checker.statuses.values()) == REQUESTS
    assert not [s for s in checker.statuses if s >= 500], checker.statuses
    assert len(checker.good_zips) == len(_versions(go_fixtures))  # every zip was checked
    assert settled, (fds_before, fds_after)
    assert rss_after - rss_before < RSS_SLACK, (rss_before, rss_after)
    assert os.listdir(goget) == []
    stored = {n for n, size in tree(root).items() if n.endswith(".info")}
    assert len(stored) == len(_versions(go_fixtures)) + 1  # and main's pseudo-version
    assert "Traceback" not in log, log[-3000:]


# ---------------------------------------------------------------------------------------
# The soak with faults
# ---------------------------------------------------------------------------------------

FAULTY_REQUESTS = 240
FAULTY_CONCURRENCY = 12
#: Distinct stalled modules: each is one fetch that stalls until StashTimeout/Timeout.
STALLED_MODULES = 3
STRAYS = ("README.info", "notes.txt", "v1.0.info", ".tmp-other-tool")


@dataclass
class _Sessions:
    """Every go session a server started (sampled from its children while it runs)."""

    seen: set[int]

    async def watch(self, server_pid: int) -> None:
        while True:
            self.seen.update(children(server_pid))
            await trio.sleep(0.05)


async def _give_up_after(url: str, path: str, seconds: float) -> None:
    """A client that asks for ``path`` and goes away after ``seconds`` (the fetch it
    started goes on)."""
    client = KeepAliveClient(url)
    try:
        with trio.move_on_after(seconds):
            await client.get(path)
    finally:
        await client.aclose()


async def _hang_up_mid_zip(url: str, path: str) -> None:
    """A client that asks for a zip, reads the head and a little, and goes away."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        with trio.move_on_after(5):
            await stream.receive_some(4096)
    finally:
        await stream.aclose()


async def _mixed_load(
    url: str,
    fx: GoFixtures,
    zips: dict[str, bytes],
    rng: random.Random,
    failures: list[str],
) -> None:
    """FAULTY_REQUESTS requests, FAULTY_CONCURRENCY at a time: cached hits (checked byte
    for byte; never a 5xx), lists and catalogs (the stray files in the tree), zips hung
    up on mid-body, and stalled fetches whose clients give up after a moment."""
    hello = escape_path(fx.hello)
    send, receive = trio.open_memory_channel[tuple[str, str]](0)

    async def worker() -> None:
        client = KeepAliveClient(url)
        try:
            async with receive.clone() as mine:
                async for kind, arg in mine:
                    await _one(client, kind, arg)
        finally:
            await client.aclose()

    async def _one(client: KeepAliveClient, kind: str, arg: str) -> None:
        if kind == "stalled":
            await _give_up_after(url, arg, 0.3)
            return
        if kind == "hangup":
            await _hang_up_mid_zip(url, arg)
            return
        try:
            with trio.fail_after(20):
                response = await client.get(arg)
        except (OSError, trio.TooSlowError) as exc:
            failures.append(f"{arg}: no answer: {exc!r}")
            await client.aclose()
            return
        if response.status != 200:
            failures.append(f"{arg}: {response.status} {response.text[:200]}")
        elif kind == "zip" and response.body != zips[arg]:
            failures.append(f"{arg}: a zip other than the one stored")
        elif kind == "list" and not set(fx.hello_versions) <= set(response.text.split()):
            failures.append(f"{arg}: {response.text!r}")

    plan: list[tuple[str, str]] = []
    for _ in range(FAULTY_REQUESTS):
        kind = rng.choice(["zip"] * 10 + ["list", "catalog", "index", "hangup", "stalled"])
        zip_path = rng.choice(sorted(zips))
        if kind == "stalled":
            module = f"{STALLED_PREFIX}m{rng.randrange(STALLED_MODULES)}"
            plan.append((kind, f"/{module}/@v/v1.0.0.info"))
        elif kind in ("zip", "hangup"):
            plan.append((kind, zip_path))
        else:
            path = {"list": f"/{hello}/@v/list", "catalog": "/catalog", "index": "/index"}
            plan.append((kind, path[kind]))
    async with trio.open_nursery() as nursery:
        for _ in range(FAULTY_CONCURRENCY):
            nursery.start_soon(worker)
        async with send, receive:
            for item in plan:
                await send.send(item)


@pytest.mark.slow
async def test_soak_with_faults_leaves_nothing_behind(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    direct: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """Cached hits under hangups, stalled fetches and stray files, across a kill -9
    and a restart: never a 5xx nor a wrong byte, and at the end no go or git process,
    no temporary GOPATH, no temporary file in the tree."""
    root, goget = tmp_path / "storage", tmp_path / "goget"
    rng = random.Random(20261201)
    failures: list[str] = []
    sessions = _Sessions(set())
    with stalled_host() as port:
        env = child_env(
            tmp_path,
            ATHENS_STORAGE_TYPE="disk",
            ATHENS_DISK_STORAGE_ROOT=str(root),
            ATHENS_GOGET_DIR=str(goget),
            ATHENS_GO_BINARY_PATH=go_binary,
            ATHENS_GO_BINARY_ENV_VARS=stalled_env_vars(go_fixtures, port),
            ATHENS_STASH_TIMEOUT="4",
            ATHENS_TIMEOUT="4",
            ATHENS_LOG_LEVEL="warn",
        )
        hello = escape_path(go_fixtures.hello)
        zips: dict[str, bytes] = {}
        with trio.fail_after(600):  # a hang guard; each request has its own
            async with child_server(tmp_path, "faulty-1", env) as first, trio.open_nursery() as n:
                n.start_soon(sessions.watch, first.process.pid)
                client = KeepAliveClient(first.url)
                for version in go_fixtures.hello_versions:  # cold: fetched and stored
                    path = f"/{hello}/@v/{version}.zip"
                    response = await client.get(path)
                    assert response.status == 200, response.text
                    h1 = _h1_of(response.body, tmp_path)
                    assert h1 == direct[(go_fixtures.hello, version)]["Sum"]
                    zips[path] = response.body
                await client.aclose()
                for name in STRAYS:  # another tool's files beside the versions
                    (root / hello / "@v" / name).write_text("not a version\n")
                await _mixed_load(first.url, go_fixtures, zips, rng, failures)
                # Stalled fetches still running: the server dies with them.
                await _give_up_after(first.url, f"/{STALLED_PREFIX}killed/@v/v1.0.0.info", 0.5)
                await wait_until(lambda: bool(session_members(sessions.seen)), 20)
                first.process.kill()
                await first.process.wait()
                n.cancel_scope.cancel()
            assert await settle(lambda: session_members(sessions.seen) == [], 10), session_members(
                sessions.seen
            )

            async with child_server(tmp_path, "faulty-2", env) as second, trio.open_nursery() as n:
                n.start_soon(sessions.watch, second.process.pid)
                await _mixed_load(second.url, go_fixtures, zips, rng, failures)
                second.process.terminate()
                await second.process.wait()
                n.cancel_scope.cancel()
            log = second.log()

    assert failures == [], failures[:20]
    assert session_members(sessions.seen) == []
    assert os.listdir(goget) == []
    temporary = [n for n in tree(root) if "/.tmp-" in n and not n.endswith(STRAYS[-1])]
    assert temporary == []
    assert "Traceback" not in log, log[-3000:]


def _h1_of(body: bytes, work: Path) -> str:
    path = work / "checked.zip"
    path.write_bytes(body)
    try:
        return zip_h1(path)
    finally:
        path.unlink()
