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
    # and its descriptors and memory are counted apart from the client's.
    with trio.fail_after(50):
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
