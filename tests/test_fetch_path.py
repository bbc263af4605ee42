"""The fetch path (issue 10): every request resolved first, policy judging the resolved
version, one stored version whatever spelling asked for it (never replaced), only the
part asked fetched, listings and resolutions remembered ListCacheTTL and shared, and
storage alone answering where nothing may be asked upstream."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from athens_trio import (
    ConfigError,
    ForbiddenError,
    GoFetcher,
    GoLister,
    Lister,
    NotFoundError,
    Redirected,
    UpstreamVersions,
    VersionInfo,
    load_config,
    open_pipeline,
)
from athens_trio._ziphash import mod_h1, zip_h1
from athens_trio.download import CachedLister, _resolution, negative_ttl_for
from athens_trio.download._resolution import resolve_stored
from athens_trio.upstream import GoResult

from .conftest import make_config
from .gofixtures import OWNER, GoFixtures, _Commit, _make_repo
from .helpers import (
    ScriptedGo,
    counting_go,
    direct_download,
    go_runs,
    served,
    store_version,
    wait_until,
    write_zip,
)
from .validatorhook import start_hook


@pytest.fixture(scope="session")
def pinned(go_fixtures: GoFixtures) -> str:
    """``github.com/athens-fixtures/pinned``: v0.9.0, then v1.0.0 at main's head, so
    ``main``, ``latest`` and ``v1`` all resolve to v1.0.0."""
    module = f"github.com/{OWNER}/pinned"
    source = "// Package pinned is a test fixture.\npackage pinned\n\nconst V = %d\n"
    go_mod = f"module {module}\n\ngo 1.21\n"
    _make_repo(
        go_fixtures.repos_root,
        "pinned",
        [
            _Commit({"go.mod": go_mod, "p.go": source % 9}, "v0.9.0", ("v0.9.0",)),
            _Commit({"go.mod": go_mod, "p.go": source % 10}, "v1.0.0", ("v1.0.0",)),
        ],
        1704067200 + 70 * 86400,
    )
    return module


def runs_for(runs_file: Path, spec: str) -> list[list[str]]:
    """The recorded go runs whose last argument is ``spec`` (``module@query``)."""
    return [run for run in go_runs(runs_file) if run and run[-1] == spec]


# --- policy judges the resolved version -------------------------------------------------


async def test_a_hook_refusing_a_version_refuses_every_query_resolving_to_it(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, pinned: str
) -> None:
    seen: list[dict[str, str]] = []

    def answer(request: dict[str, str]) -> tuple[int, bytes]:
        if request["Version"] == "v1.0.0":
            return 403, b"v1.0.0 is under review"
        return 200, b""

    script, runs = counting_go(tmp_path, go_binary)
    async with trio.open_nursery() as nursery:
        hook = await start_hook(nursery, answer, seen)
        config = make_config(tmp_path, str(script), go_fixtures, validator_hook=hook)
        async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
            for query in ("main", "latest", "v1", "v1.0.0"):
                refused = await http.get(f"/{pinned}/@v/{query}.info")
                assert refused.status_code == 403, (query, refused.text)
                assert "v1.0.0 is under review" in refused.text
            assert (await http.get(f"/{pinned}/@v/v0.9.info")).status_code == 200
            stored = await server.pipeline.storage.list_versions(pinned)
        nursery.cancel_scope.cancel()
    assert stored == ["v0.9.0"]
    # The hook judged canonical versions only, never the spelling a client used.
    assert {request["Version"] for request in seen} == {"v0.9.0", "v1.0.0"}
    assert runs_for(runs, f"{pinned}@v1.0.0") == []  # v1.0.0 was never fetched


async def test_filter_version_rules_judge_the_resolved_version(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, pinned: str
) -> None:
    hello = go_fixtures.hello
    (tmp_path / "filter").write_text(f"+\n- {hello} v1.0.0\nD {pinned} v1.0.0\n")
    config = make_config(
        tmp_path,
        go_binary,
        go_fixtures,
        filter_file=str(tmp_path / "filter"),
        global_endpoint="https://global.example",
    )
    async with open_pipeline(config) as pipeline:
        protocol = pipeline.protocol
        with pytest.raises(ForbiddenError, match=r"v1\.0\.0"):
            await protocol.info(hello, "v1.0")
        for query in ("main", "latest", "v1"):
            with pytest.raises(Redirected) as caught:
                await protocol.info(pinned, query)
            assert caught.value.status == 303
            # Sent where the client's own question is answered, as it asked it.
            assert caught.value.location == f"https://global.example/{pinned}/@v/{query}.info"
        # Versions outside the rules are served, queries for them too.
        assert json.loads(await protocol.info(hello, "v1.1"))["Version"] == "v1.1.0"
        assert json.loads(await protocol.info(pinned, "v0.9"))["Version"] == "v0.9.0"
        assert await pipeline.storage.list_versions(hello) == ["v1.1.0"]
        assert await pipeline.storage.list_versions(pinned) == ["v0.9.0"]


# --- one version, whatever spelling asked for it, never replaced --------------------------

RACE_MODULE = "example.com/race"
RACE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


class GatedGo(ScriptedGo):
    """A scripted go whose runs ``gate_of(args)`` names wait inside "go" until the test
    opens that gate (``gates[name].set()``); ``arrived`` lists the gates reached."""

    def __init__(
        self,
        answer: Callable[[Sequence[str]], GoResult],
        gate_of: Callable[[Sequence[str]], str | None],
    ) -> None:
        super().__init__(answer)
        self.gate_of = gate_of
        self.gates: dict[str, trio.Event] = {}
        self.arrived: list[str] = []

    @contextlib.asynccontextmanager
    async def run(
        self,
        args: Sequence[str],
        *,
        timeout: float,  # noqa: ASYNC109
        what: str,
    ) -> AsyncIterator[GoResult]:
        gate = self.gate_of(args)
        if gate is not None:
            self.arrived.append(gate)
            await self.gates.setdefault(gate, trio.Event()).wait()
        async with super().run(args, timeout=timeout, what=what) as result:
            yield result


LISTED_TIME = "2024-01-01T00:00:00Z"


def race_answers(work: Path, *, other_mod: bool = False) -> Callable[[Sequence[str]], GoResult]:
    """What go says for example.com/race: the commit resolves to v1.0.0, whose go.mod
    part go list fetches and whose whole go mod download fetches, each run writing its
    own files (as each go run has its own GOPATH).  ``other_mod``: go mod download's
    go.mod differs from go list's (an upstream that changed under us)."""
    numbers = itertools.count()

    def answer(args: Sequence[str]) -> GoResult:
        module, query = args[-1].split("@")
        assert module == RACE_MODULE
        run = work / f"run{next(numbers)}"
        run.mkdir(parents=True)
        mod = f"module {module}\n".encode()
        if args[:2] == ["list", "-m"]:
            listed = {"Path": module, "Version": "v1.0.0", "Time": LISTED_TIME}
            if query == "v1.0.0":  # fetching the go.mod part
                (run / "go.mod").write_bytes(mod)
                listed["GoMod"] = str(run / "go.mod")
            return GoResult(0, json.dumps(listed).encode(), b"")
        assert args[:2] == ["mod", "download"], args
        if other_mod:
            mod += b"// changed upstream\n"
        (run / "go.mod").write_bytes(mod)
        (run / "v1.0.0.info").write_text(json.dumps({"Version": "v1.0.0", "Time": LISTED_TIME}))
        (run / "zip").mkdir()
        write_zip(run / "zip" / "v1.0.0.zip", module, "v1.0.0", 100_000)
        downloaded = {
            "Path": module,
            "Version": "v1.0.0",
            "Info": str(run / "v1.0.0.info"),
            "GoMod": str(run / "go.mod"),
            "Zip": str(run / "zip" / "v1.0.0.zip"),
            "Sum": zip_h1(run / "zip" / "v1.0.0.zip"),
            "GoModSum": mod_h1(mod),
        }
        return GoResult(0, json.dumps(downloaded).encode(), b"")

    return answer


class GoModAloneFetcher(GoFetcher):
    """go's fetcher fetching a go.mod part alone (go list), as a fetcher from an
    upstream proxy does; go's own fetches the whole version for it (VCS)."""

    def whole_for_go_mod(self, module: str) -> bool:
        return False


def race_gate(args: Sequence[str]) -> str | None:
    """Fetches wait at a gate of their part; resolving runs straight through."""
    if args[:2] == ["mod", "download"]:
        return "zip"
    return "mod" if args[-1].endswith("@v1.0.0") else None


def stored_files(root: Path) -> dict[str, int]:
    """The race module's stored files, by name, with their inode numbers: a file
    replaced (even by equal bytes) gets a new one."""
    directory = root / RACE_MODULE / "@v"
    return {p.name: p.stat().st_ino for p in directory.glob("v1.0.0.*")}


@pytest.mark.parametrize("order", ["together", "mod first", "zip first"])
async def test_a_query_and_its_canonical_version_racing_store_one_version_never_replaced(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str, order: str
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures)
    root = tmp_path / "storage"
    go = GatedGo(race_answers(tmp_path / "go"), race_gate)
    stem = f"/{RACE_MODULE}/@v/"
    got: dict[str, httpx.Response] = {}
    async with (
        served(
            config, fetcher=GoModAloneFetcher(go, timeout=60), lister=GoLister(go, timeout=60)
        ) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):

        async def get(name: str, path: str) -> None:
            got[name] = await http.get(stem + path)

        async with trio.open_nursery() as clients:
            # The query first: a .mod fetch would join a zip fetch in flight (which
            # stores the go.mod part too); the other way round, two fetches race.
            clients.start_soon(get, "query", f"{RACE_COMMIT}.info")
            await wait_until(lambda: go.arrived == ["mod"])
            clients.start_soon(get, "zip", "v1.0.0.zip")
            # Both fetches are inside go at once: the go.mod part for the query, the
            # whole version for the zip; neither has saved anything yet.
            await wait_until(lambda: go.arrived == ["mod", "zip"])
            assert stored_files(root) == {}
            gates = [go.gates.setdefault(part, trio.Event()) for part in ("mod", "zip")]
            if order == "zip first":
                gates.reverse()
            if order == "together":
                for gate in gates:
                    gate.set()
            else:
                gates[0].set()
                await wait_until(lambda: ("query" if order == "mod first" else "zip") in got)
                first_saved = stored_files(root)
                gates[1].set()
        again = {
            path: [await http.get(stem + path) for _ in range(3)]
            for path in ("v1.0.0.info", "v1.0.0.mod", "v1.0.0.zip", f"{RACE_COMMIT}.info")
        }
        stored = await server.pipeline.storage.list_versions(RACE_MODULE)
    responses = [*got.values(), *(r for rs in again.values() for r in rs)]
    assert [(str(r.url), r.status_code, r.text) for r in responses if r.status_code != 200] == []
    assert stored == ["v1.0.0"]
    assert [args[:2] for args, _ in go.runs].count(["mod", "download"]) == 1
    # Every client got the same bytes under the same ETag, whichever fetch saved first.
    for path, answers in again.items():
        assert len({r.content for r in answers}) == 1, path
        assert len({r.headers.get("etag") for r in answers}) == 1, path
    assert again["v1.0.0.info"][0].content == again[f"{RACE_COMMIT}.info"][0].content
    assert again["v1.0.0.info"][0].content == got["query"].content
    assert again["v1.0.0.zip"][0].content == got["zip"].content
    if order != "together":
        # What the first save linked is still there, the very same files.
        after = stored_files(root)
        assert {name: after[name] for name in first_saved} == first_saved


async def test_a_zip_whose_go_mod_differs_from_the_stored_one_is_a_fault_never_a_mix(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures)
    go = GatedGo(race_answers(tmp_path / "go", other_mod=True), lambda args: None)
    stem = f"/{RACE_MODULE}/@v/"
    async with (
        served(
            config, fetcher=GoModAloneFetcher(go, timeout=60), lister=GoLister(go, timeout=60)
        ) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        mod = (await http.get(stem + "v1.0.0.mod")).content
        before = stored_files(tmp_path / "storage")
        refused = await http.get(stem + "v1.0.0.zip")
        assert refused.status_code == 502, refused.text  # never "does not exist"
        assert "differs" in refused.text
        assert (await http.get(stem + "v1.0.0.mod")).content == mod
    assert stored_files(tmp_path / "storage") == before  # the go.mod part alone, as it was


# --- what is fetched, and when ------------------------------------------------------------


async def test_a_branch_whose_target_is_stored_costs_no_fetch(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    hello, pseudo = go_fixtures.hello, go_fixtures.hello_main_pseudo
    script, runs = counting_go(tmp_path, go_binary)
    # ListCacheTTL 0: every main.info asks go what main is, and still fetches nothing.
    config = make_config(tmp_path, str(script), go_fixtures, list_cache_ttl=0)
    async with open_pipeline(config) as pipeline:
        stored = await pipeline.protocol.info(hello, pseudo)
        for _ in range(3):
            assert await pipeline.protocol.info(hello, "main") == stored
    assert len(runs_for(runs, f"{hello}@{pseudo}")) == 1  # the one fetch, of the pseudo
    assert len(runs_for(runs, f"{hello}@main")) == 3  # resolving only
    assert len(go_runs(runs)) == 4


async def test_a_mod_miss_from_a_vcs_stores_the_whole_version_in_one_go_run(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    # From a VCS a go.mod costs go a fetch of the repository as the zip does: the whole
    # version is fetched at once (as Athens), and the zip asked next costs no go run.
    # (From an upstream proxy only the file asked is fetched: test_upstream_proxy.)
    hello = go_fixtures.hello
    direct = direct_download(go_fixtures, go_binary, tmp_path, f"{hello}@v1.0.0")
    script, runs = counting_go(tmp_path, go_binary)
    config = make_config(tmp_path, str(script), go_fixtures)
    async with open_pipeline(config) as pipeline:
        mod = await pipeline.protocol.go_mod(hello, "v1.0.0")
        assert mod == Path(direct["GoMod"]).read_bytes()
        await pipeline.protocol.info(hello, "v1.0.0")
        assert await pipeline.storage.exists(hello, "v1.0.0")
        assert [run[:2] for run in go_runs(runs)] == [["mod", "download"]]
        stored = await pipeline.protocol.zip(hello, "v1.0.0")
        zip_path = tmp_path / "served.zip"
        with zip_path.open("wb") as out:
            async for chunk in stored.chunks():
                out.write(chunk)
        assert zip_h1(zip_path) == direct["Sum"]
        assert await pipeline.protocol.go_mod(hello, "v1.0.0") == mod
    assert [run[:2] for run in go_runs(runs)] == [["mod", "download"]]


# --- listings and resolutions: remembered ListCacheTTL, shared while asked ---------------


V1 = VersionInfo("v1.0.0", datetime(2024, 1, 1, tzinfo=UTC))


class CountingLister(Lister):
    """Upstream, counting its questions: every module has v1.0.0 alone (what any query
    resolves to), but ``missing`` does not exist."""

    def __init__(self, missing: str) -> None:
        self.missing = missing
        self.asked: list[tuple[str, str]] = []

    async def _ask(self, module: str, question: str) -> None:
        self.asked.append((module, question))
        await trio.lowlevel.checkpoint()
        if module == self.missing:
            raise NotFoundError(f"{module}: no such module")

    async def list(self, module: str) -> UpstreamVersions:
        await self._ask(module, "list")
        return UpstreamVersions(["v1.0.0"], V1)

    async def resolve(self, module: str, query: str) -> VersionInfo:
        await self._ask(module, query)
        return V1


@pytest.mark.parametrize("ttl", [30, 0])
async def test_list_and_negative_caches_honour_list_cache_ttl(
    tmp_path: Path, go_fixtures: GoFixtures, mock_clock: trio.testing.MockClock, ttl: int
) -> None:
    module, missing = "example.com/cached", "example.com/missing"
    lister = CountingLister(missing)
    config = make_config(tmp_path, "/nonexistent/go", go_fixtures, list_cache_ttl=ttl)
    negative = negative_ttl_for(ttl)
    assert negative == min(ttl, 10)
    async with open_pipeline(config, lister=lister) as pipeline:
        await store_version(pipeline.storage, tmp_path, module, "v1.0.0", 1000)
        protocol = pipeline.protocol

        async def ask() -> int:
            """Ask everything once; return how many questions reached upstream."""
            before = len(lister.asked)
            assert await protocol.list(module) == ["v1.0.0"]
            assert json.loads(await protocol.info(module, "main"))["Version"] == "v1.0.0"
            with pytest.raises(NotFoundError):
                await protocol.list(missing)
            return len(lister.asked) - before

        assert await ask() == 3
        if not ttl:
            assert await ask() == 3  # nothing remembered
            return
        mock_clock.jump(negative - 0.5)
        assert await ask() == 0  # all remembered
        mock_clock.jump(1)
        # "does not exist" forgotten first (after at most 10 s); answers still kept
        assert await ask() == 1
        mock_clock.jump(ttl - negative)
        assert await ask() == 3  # forgotten: asked again


async def test_concurrent_listings_and_resolutions_run_one_go_each() -> None:
    def answer(args: Sequence[str]) -> GoResult:
        listed: dict[str, object] = {
            "Path": "example.com/m",
            "Version": "v1.1.0",
            "Time": "2024-01-01T00:00:00Z",
        }
        if "-versions" in args:
            listed["Versions"] = ["v1.0.0", "v1.1.0"]
        return GoResult(0, json.dumps(listed).encode(), b"")

    go = GatedGo(answer, lambda args: "go")
    answers: list[object] = []
    async with trio.open_nursery() as nursery:
        # No TTL: only the single-flight can spare a go run.
        cached = CachedLister(GoLister(go, timeout=60), nursery, ttl=0, negative_ttl=0)

        async def ask(question: str) -> None:
            if question == "list":
                answers.append((await cached.list("example.com/m")).versions)
            else:
                answers.append((await cached.resolve("example.com/m", "main")).Version)

        async with trio.open_nursery() as callers:
            for _ in range(10):
                callers.start_soon(ask, "list")
                callers.start_soon(ask, "resolve")
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(go.arrived) == ["go", "go"]  # one run per question, waiting
            assert cached.statistics().joined == 18
            go.gates["go"].set()
        assert answers.count(["v1.0.0", "v1.1.0"]) == 10
        assert answers.count("v1.1.0") == 10
        # Done, and not remembered (TTL 0): the next question runs go again.
        await cached.list("example.com/m")
        assert len(go.runs) == 3
        nursery.cancel_scope.cancel()


class _ListsOf(Lister):
    """Lists ``count`` versions of any module; counts the questions."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.asked = 0

    async def list(self, module: str) -> UpstreamVersions:
        self.asked += 1
        await trio.lowlevel.checkpoint()
        return UpstreamVersions([f"v1.0.{i}" for i in range(self.count)], None)

    async def resolve(self, module: str, query: str) -> VersionInfo:
        raise NotImplementedError


async def test_remembered_lists_are_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_resolution, "MAX_BYTES", 256 << 10)
    lister = _ListsOf(100)  # ~7 KiB a list
    async with trio.open_nursery() as nursery:
        cached = CachedLister(lister, nursery, ttl=60, negative_ttl=10)
        for n in range(200):
            await cached.list(f"example.com/m{n}")
            assert cached.statistics().bytes <= 256 << 10
        assert 20 < cached.statistics().entries < 200  # the oldest forgotten first
        asked = lister.asked
        await cached.list("example.com/m199")  # the newest: remembered
        assert lister.asked == asked
        lister.count = 1000  # ~70 KiB: more than a sixteenth of the bound, never kept
        await cached.list("example.com/big")
        await cached.list("example.com/big")
        assert lister.asked == asked + 2
        nursery.cancel_scope.cancel()


def test_list_cache_ttl_from_toml_and_environment(tmp_path: Path) -> None:
    toml = tmp_path / "athens.toml"
    toml.write_text("ListCacheTTL = 5\n")
    assert load_config(environ={}).list_cache_ttl == 60
    assert load_config(toml, environ={}).list_cache_ttl == 5
    assert load_config(toml, environ={"ATHENS_LIST_CACHE_TTL": "0"}).list_cache_ttl == 0


@pytest.mark.parametrize(
    ("text", "environ", "key"),
    [
        ("ListCacheTTL = -1", {}, "ListCacheTTL"),
        ("ListCacheTTL = 'a minute'", {}, "ListCacheTTL"),
        ("", {"ATHENS_LIST_CACHE_TTL": "soon"}, "ATHENS_LIST_CACHE_TTL"),
        ("", {"ATHENS_LIST_CACHE_TTL": "-5"}, "ATHENS_LIST_CACHE_TTL (ListCacheTTL)"),
    ],
)
def test_a_bad_list_cache_ttl_names_its_key(
    tmp_path: Path, text: str, environ: dict[str, str], key: str
) -> None:
    toml = tmp_path / "athens.toml"
    toml.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(toml, environ=environ)
    assert caught.value.key == key


# --- storage alone where nothing may be asked upstream ------------------------------------

STORED = ["v0.9.0", "v1.0.0", "v1.1.0-rc.1", "v1.1.0", "v1.2.0-beta"]
PSEUDO = "v1.1.1-0.20240103000000-0123456789ab"


@pytest.mark.parametrize(
    ("query", "stored", "resolved"),
    [
        ("latest", STORED, "v1.1.0"),
        ("upgrade", STORED, "v1.1.0"),
        ("latest", ["v1.0.0", "v2.0.0-alpha"], "v1.0.0"),  # a release before any pre-release
        ("latest", ["v1.0.0-rc.1", "v1.0.0-rc.2"], "v1.0.0-rc.2"),
        ("latest", [PSEUDO, "v0.0.0-20230101000000-aaaaaaaaaaaa"], PSEUDO),
        ("latest", ["v1.0.0", PSEUDO], "v1.0.0"),
        ("v1", STORED, "v1.1.0"),
        ("v1.1", STORED, "v1.1.0"),
        ("v1.2", STORED, "v1.2.0-beta"),  # no release: the pre-release
        ("v0", STORED, "v0.9.0"),
        ("v1.0.0+meta", STORED, "v1.0.0"),
        ("0123456789abcdef0123456789abcdef01234567", [*STORED, PSEUDO], PSEUDO),
        ("0123456", [*STORED, PSEUDO], PSEUDO),
    ],
)
def test_resolve_stored_chooses_as_go_does(query: str, stored: list[str], resolved: str) -> None:
    assert resolve_stored("example.com/m", query, stored, "DownloadMode none") == resolved


@pytest.mark.parametrize(
    ("query", "stored"),
    [
        ("latest", []),
        ("v3", STORED),
        ("v1.0.1", STORED),
        ("main", STORED),  # a branch: only upstream knows its commit
        ("fedcba9876", [*STORED, PSEUDO]),
    ],
)
def test_resolve_stored_is_not_found_otherwise(query: str, stored: list[str]) -> None:
    with pytest.raises(NotFoundError, match="NetworkMode offline"):
        resolve_stored("example.com/m", query, stored, "NetworkMode offline")


@pytest.mark.parametrize("setting", ["download_mode", "network_mode"])
async def test_queries_list_and_latest_from_storage_alone(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, setting: str
) -> None:
    """DownloadMode none (a read-only mirror) and NetworkMode offline ask nothing
    upstream: a query, list and @latest are answered from what is stored (upstream's
    latest, v1.1.0, is not stored here, so it is never named)."""
    hello, pseudo = go_fixtures.hello, go_fixtures.hello_main_pseudo
    async with open_pipeline(make_config(tmp_path, go_binary, go_fixtures)) as pipeline:
        for version in ("v1.0.0", pseudo):
            await pipeline.protocol.info(hello, version)
    script, runs = counting_go(tmp_path, go_binary)
    value = {"download_mode": "none", "network_mode": "offline"}[setting]
    config = make_config(tmp_path, str(script), go_fixtures, **{setting: value})
    async with open_pipeline(config) as pipeline:
        protocol = pipeline.protocol

        async def version_of(query: str) -> str:
            version: str = json.loads(await protocol.info(hello, query))["Version"]
            return version

        assert await version_of("latest") == "v1.0.0"
        assert await version_of("v1") == "v1.0.0"
        assert await version_of(go_fixtures.hello_main_commit) == pseudo
        assert await protocol.list(hello) == ["v1.0.0"]
        assert json.loads(await protocol.latest(hello))["Version"] == "v1.0.0"
        with pytest.raises(NotFoundError, match=value):
            await protocol.info(hello, "main")
        with pytest.raises(NotFoundError, match=value):
            await protocol.info(go_fixtures.upper, "latest")
        with pytest.raises(NotFoundError, match=value):
            await protocol.list(go_fixtures.upper)
    assert go_runs(runs) == []
