"""Prefetch: the go.mod parts a client walking a module graph will ask for next."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import trio
import trio.testing

from athens_trio import Config
from athens_trio._config import DiskStorageConfig, StorageConfig, load_config
from athens_trio._exceptions import ConfigError, ForbiddenError, NotFoundError
from athens_trio._pipeline import open_pipeline
from athens_trio.download import DownloadProtocol
from athens_trio.prefetch import Prefetcher, parse_go_mod, with_prefetch
from athens_trio.prefetch._gomod import surely_pruned
from athens_trio.prefetch._prefetcher import _NearestFirst
from athens_trio.storage import MemoryStorage, StoredZip

from .staticproxy import StaticProxy, add_version, static_proxy

# ---------------------------------------------------------------------------------------
# The go.mod reader
# ---------------------------------------------------------------------------------------

GO_MOD = b"""module example.com/app // the main module

go 1.16

require example.com/one v1.0.0 // indirect
require (
\t"example.com/two" v1.2.3
\texample.com/three v0.0.0-20200101000000-abcdefabcdef // indirect
\t// example.com/commented v1.0.0
\texample.com/notcanonical v1.2
\texample.com/four/v2 v1.0.0
)
exclude example.com/excluded v1.0.0
replace example.com/replaced => ../replaced
replace (
\texample.com/five v1.0.0 => example.com/six v1.0.0
)
retract [v1.0.0, v1.1.0] // a bad release
retract (
\tv0.9.0
)
tool example.com/tool
"""


def test_only_require_lines_are_requirements() -> None:
    parsed = parse_go_mod(GO_MOD)
    assert parsed.requires == (
        ("example.com/one", "v1.0.0"),
        ("example.com/two", "v1.2.3"),
        ("example.com/three", "v0.0.0-20200101000000-abcdefabcdef"),
    )
    assert parsed.go == "1.16"
    assert not parsed.pruned


@pytest.mark.parametrize(
    ("go_line", "pruned"),
    [("", False), ("go 1.16\n", False), ("go 1.17\n", True), ("go 1.21.0\n", True)],
)
def test_go_prunes_the_graph_from_go_1_17(go_line: str, pruned: bool) -> None:
    parsed = parse_go_mod(f"module m\n{go_line}require a.example/b v1.0.0\n".encode())
    assert parsed.pruned is pruned
    assert parsed.requires == (("a.example/b", "v1.0.0"),)


@pytest.mark.parametrize(
    "go_mod",
    [
        "module m\ngo 1.16\n",
        "module m\ngo 1.17\n",
        "module m\n  go 1.21.0 // the toolchain\n",
        "module m\n// go 1.21\nrequire a.example/b v1.0.0\n",
        "module m\n",
        "module m\ngo 1.21\ngo 1.10\n",  # nonsense: unsure, so parsed
        'module m\nrequire (\n\t"go" v1.0.0\n)\ngo 1.16\n',
    ],
)
def test_the_quick_look_never_calls_pruned_what_the_parser_does_not(go_mod: str) -> None:
    if surely_pruned(go_mod.encode()):
        assert parse_go_mod(go_mod.encode()).pruned


def test_the_quick_look_sees_the_usual_go_line() -> None:
    assert surely_pruned(b"module m\n\ngo 1.22.3\n\nrequire a.example/b v1.0.0\n")
    assert not surely_pruned(b"module m\n\ngo 1.16\n")


def test_a_line_that_makes_no_sense_is_skipped() -> None:
    parsed = parse_go_mod(b'require (\n\t"unterminated v1.0.0\n\tok.example/m v1.0.0\n)\n')
    assert parsed.requires == (("ok.example/m", "v1.0.0"),)


# ---------------------------------------------------------------------------------------
# The prefetcher, over a stand-in protocol
# ---------------------------------------------------------------------------------------


def _mod(*requires: str, go: str = "1.16") -> bytes:
    return (f"module m\n\ngo {go}\n\n" + "".join(f"require {r}\n" for r in requires)).encode()


class _Graph(DownloadProtocol):
    """go.mod files by module@version; records what was asked, refuses ``refused``."""

    def __init__(self, mods: dict[str, bytes], refused: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.mods = mods
        self.refused = refused
        self.asked: list[str] = []

    async def go_mod(self, module: str, version: str) -> bytes:
        key = f"{module}@{version}"
        self.asked.append(key)
        if key in self.refused:
            raise ForbiddenError(f"{key} refused")
        if key not in self.mods:
            raise NotFoundError(key)
        return self.mods[key]

    async def list(self, module: str) -> list[str]:
        raise NotImplementedError

    async def latest(self, module: str) -> bytes:
        raise NotImplementedError

    async def info(self, module: str, version: str) -> bytes:
        return json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}).encode()

    async def zip(self, module: str, version: str) -> StoredZip:
        raise AssertionError("prefetch never asks for a zip")


async def _settled(prefetcher: Prefetcher) -> None:
    with trio.fail_after(10):
        while True:
            stats = prefetcher.statistics()
            if not stats.queued and not stats.in_flight:
                return
            await trio.sleep(0.005)


async def test_requirements_are_prefetched_level_by_level_down_to_the_depth() -> None:
    graph = _Graph(
        {
            "a.example/one@v1.0.0": _mod("a.example/two v1.0.0"),
            "a.example/two@v1.0.0": _mod("a.example/three v1.0.0"),
            "a.example/three@v1.0.0": _mod("a.example/four v1.0.0"),
            "a.example/pruned@v1.0.0": _mod("a.example/below v1.0.0", go="1.21"),
        }
    )
    prefetcher = Prefetcher(graph, MemoryStorage(), lambda: True, workers=2, depth=2)
    served = with_prefetch(prefetcher)(graph)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(prefetcher.run)
        await served.go_mod("a.example/one", "v1.0.0")  # the client's request
        await _settled(prefetcher)
        # two (level 1) and three (level 2); four would be level 3; the client's twice.
        assert graph.asked == [
            "a.example/one@v1.0.0",
            "a.example/two@v1.0.0",
            "a.example/three@v1.0.0",
        ]
        await served.go_mod("a.example/one", "v1.0.0")  # served again: queued once
        await served.go_mod("a.example/pruned", "v1.0.0")  # go 1.21: go stops there
        await _settled(prefetcher)
        assert graph.asked[3:] == ["a.example/one@v1.0.0", "a.example/pruned@v1.0.0"]
        assert prefetcher.statistics().prefetched == 2
        assert prefetcher.statistics().hit_ratio == 0.0
        await served.go_mod("a.example/two", "v1.0.0")
        await served.info("a.example/three", "v1.0.0")
        await served.info("a.example/three", "v1.0.0")  # counted once
        assert prefetcher.statistics().asked == 2
        assert prefetcher.statistics().hit_ratio == 1.0
        nursery.cancel_scope.cancel()


async def test_stored_go_mods_are_not_fetched_refusals_are_counted() -> None:
    storage = MemoryStorage()
    await storage.save_mod(
        "a.example/two", "v1.0.0", info=b"{}", mod=_mod("a.example/three v1.0.0")
    )
    graph = _Graph(
        {"a.example/one@v1.0.0": _mod("a.example/two v1.0.0", "a.example/refused v1.0.0")},
        refused={"a.example/refused@v1.0.0"},
    )
    prefetcher = Prefetcher(graph, storage, lambda: True, workers=1, depth=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(prefetcher.run)
        await with_prefetch(prefetcher)(graph).go_mod("a.example/one", "v1.0.0")
        await _settled(prefetcher)
        # two is stored: read, not fetched, its requirement (three) followed and missing.
        assert sorted(graph.asked) == [
            "a.example/one@v1.0.0",
            "a.example/refused@v1.0.0",
            "a.example/three@v1.0.0",
        ]
        stats = prefetcher.statistics()
        assert (stats.prefetched, stats.failed) == (0, 2)
        nursery.cancel_scope.cancel()


async def test_clients_first_no_prefetch_while_the_fetch_pool_is_full() -> None:
    graph = _Graph({"a.example/one@v1.0.0": _mod("a.example/two v1.0.0")})
    room = trio.Event()
    prefetcher = Prefetcher(graph, MemoryStorage(), room.is_set, workers=1, depth=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(prefetcher.run)
        await with_prefetch(prefetcher)(graph).go_mod("a.example/one", "v1.0.0")
        with trio.move_on_after(0.2):
            await _settled(prefetcher)
        assert graph.asked == ["a.example/one@v1.0.0"]
        stats = prefetcher.statistics()
        assert (stats.queued, stats.in_flight) == (1, 0)  # taken only once there is room
        room.set()
        await _settled(prefetcher)
        assert graph.asked == ["a.example/one@v1.0.0", "a.example/two@v1.0.0"]
        nursery.cancel_scope.cancel()


async def test_a_worker_takes_the_nearest_entry_of_when_a_fetch_slot_frees() -> None:
    # While the fetch pool is full, a deeper guess (d) waits, then the client is served
    # b, which requires z: when a slot frees, z goes first.
    graph = _Graph(
        {
            "a.example/a@v1.0.0": _mod("a.example/x v1.0.0"),
            "a.example/x@v1.0.0": _mod("a.example/d v1.0.0"),
            "a.example/b@v1.0.0": _mod("a.example/z v1.0.0"),
            "a.example/d@v1.0.0": _mod(),
            "a.example/z@v1.0.0": _mod(),
        }
    )
    released = trio.Event()
    grants = [1]  # one free slot (for x), then none until released

    def room() -> bool:
        if grants[0]:
            grants[0] -= 1
            return True
        return released.is_set()

    taken: list[str] = []

    class _Recording(_Graph):
        async def go_mod(self, module: str, version: str) -> bytes:
            taken.append(module.removeprefix("a.example/"))
            return await graph.go_mod(module, version)

    storage = MemoryStorage()
    await storage.save_mod("a.example/x", "v1.0.0", info=b"{}", mod=_mod("a.example/d v1.0.0"))
    prefetcher = Prefetcher(_Recording({}), storage, room, workers=1, depth=3)
    served = with_prefetch(prefetcher)(graph)

    def stats_in_flight() -> int:
        return prefetcher.statistics().in_flight

    async with trio.open_nursery() as nursery:
        nursery.start_soon(prefetcher.run)
        await served.go_mod("a.example/a", "v1.0.0")  # x: stored, read; d queued
        with trio.fail_after(10):  # x taken (the slot used) and read; d waits for a slot
            while grants[0] or (prefetcher.statistics().queued, stats_in_flight()) != (1, 0):
                await trio.sleep(0.005)
        await served.go_mod("a.example/b", "v1.0.0")  # z, nearer than d
        released.set()
        await _settled(prefetcher)
        assert taken == ["z", "d"]
        nursery.cancel_scope.cancel()


def test_a_full_queue_keeps_the_nearest() -> None:
    queue = _NearestFirst(depth=3, size=3)
    assert queue.add(("m/deep1", "v1"), 3) == (True, None)
    assert queue.add(("m/deep2", "v1"), 3) == (True, None)
    assert queue.add(("m/mid", "v1"), 2) == (True, None)
    # Full: a nearer one pushes out the newest of the deepest; one as deep is refused.
    assert queue.add(("m/near", "v1"), 1) == (True, ("m/deep2", "v1"))
    assert queue.add(("m/deep3", "v1"), 3) == (False, None)
    taken = [queue.take() for _ in range(len(queue))]
    assert taken == [(("m/near", "v1"), 1), (("m/mid", "v1"), 2), (("m/deep1", "v1"), 3)]


async def test_what_a_client_was_just_served_requires_goes_before_deeper_guesses() -> None:
    # x1 (prefetched for a) requires y1 and y2: guesses two levels from the client.  Then
    # the client is served b, which requires z: what go asks next.  z passes y2.
    graph = _Graph(
        {
            "a.example/a@v1.0.0": _mod("a.example/x1 v1.0.0"),
            "a.example/x1@v1.0.0": _mod("a.example/y1 v1.0.0", "a.example/y2 v1.0.0"),
            "a.example/b@v1.0.0": _mod("a.example/z v1.0.0"),
            "a.example/y1@v1.0.0": _mod(),
            "a.example/y2@v1.0.0": _mod(),
            "a.example/z@v1.0.0": _mod(),
        }
    )
    held = {"x1": trio.Event(), "y1": trio.Event()}
    taken: list[str] = []  # by the prefetcher, in order

    class _Held(_Graph):
        async def go_mod(self, module: str, version: str) -> bytes:
            name = module.removeprefix("a.example/")
            taken.append(name)
            if name in held:
                await held[name].wait()
            return await graph.go_mod(module, version)

    prefetcher = Prefetcher(_Held({}), MemoryStorage(), lambda: True, workers=1, depth=3)
    served = with_prefetch(prefetcher)(graph)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(prefetcher.run)
        await served.go_mod("a.example/a", "v1.0.0")
        await trio.testing.wait_all_tasks_blocked()
        assert taken == ["x1"]
        held["x1"].set()
        await trio.testing.wait_all_tasks_blocked()
        assert taken == ["x1", "y1"]  # y1 taken (and held): y2 waits
        await served.go_mod("a.example/b", "v1.0.0")
        held["y1"].set()
        await _settled(prefetcher)
        assert taken == ["x1", "y1", "z", "y2"]
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------
# In the pipeline, from an upstream proxy
# ---------------------------------------------------------------------------------------


def _config(tmp_path: Path, proxy: StaticProxy, **overrides: object) -> Config:
    fields: dict[str, object] = {
        "go_binary_env_vars": [f"GOPROXY={proxy.url},off", "GOSUMDB=off"],
        "storage_type": "disk",
        "storage": StorageConfig(disk=DiskStorageConfig(root_path=str(tmp_path / "storage"))),
        "prefetch_workers": 4,
        **overrides,
    }
    return Config(**fields)  # type: ignore[arg-type]


@pytest.fixture
def upstream_graph(tmp_path: Path) -> Path:
    root = tmp_path / "upstream"
    add_version(root, "a.example/app", "v1.0.0", mod=_mod("a.example/lib v1.0.0"))
    add_version(root, "a.example/lib", "v1.0.0", mod=_mod("a.example/base v1.0.0"))
    add_version(root, "a.example/base", "v1.0.0", mod=_mod())
    return root


async def test_prefetched_through_the_pipeline_go_mod_only_then_a_hit(
    tmp_path: Path, upstream_graph: Path
) -> None:
    async with static_proxy(upstream_graph) as proxy:
        config = _config(tmp_path, proxy)
        async with open_pipeline(config) as pipeline:
            prefetcher = pipeline.prefetcher
            assert prefetcher is not None
            await pipeline.protocol.go_mod("a.example/app", "v1.0.0")
            await _settled(prefetcher)
            assert prefetcher.statistics().prefetched == 2
            assert not [p for p in proxy.paths() if p.endswith(".zip")]
            seen = len(proxy.paths())
            for module in ("a.example/lib", "a.example/base"):
                await pipeline.protocol.info(module, "v1.0.0")
                await pipeline.protocol.go_mod(module, "v1.0.0")
            assert len(proxy.paths()) == seen  # hits: nothing asked upstream
            assert prefetcher.statistics().hit_ratio == 1.0


async def test_prefetch_honours_the_filter(tmp_path: Path, upstream_graph: Path) -> None:
    rules = tmp_path / "filter"
    rules.write_text("+\n- a.example/lib\n")
    async with static_proxy(upstream_graph) as proxy:
        config = _config(tmp_path, proxy, filter_file=str(rules))
        async with open_pipeline(config) as pipeline:
            prefetcher = pipeline.prefetcher
            assert prefetcher is not None
            await pipeline.protocol.go_mod("a.example/app", "v1.0.0")
            await _settled(prefetcher)
            assert prefetcher.statistics().failed == 1
    assert not [p for p in proxy.paths() if "a.example/lib" in p]


async def test_a_client_joins_the_prefetch_in_flight(tmp_path: Path, upstream_graph: Path) -> None:
    async with static_proxy(upstream_graph) as proxy:
        proxy.hang.add("a.example/lib/@v/v1.0.0.mod")
        async with open_pipeline(_config(tmp_path, proxy)) as pipeline:
            prefetcher = pipeline.prefetcher
            assert prefetcher is not None
            await pipeline.protocol.go_mod("a.example/app", "v1.0.0")
            with trio.fail_after(10):
                while not any(p.endswith("lib/@v/v1.0.0.mod") for p in proxy.paths()):
                    await trio.sleep(0.005)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pipeline.protocol.go_mod, "a.example/lib", "v1.0.0")
                    while pipeline.singleflight.statistics().joined < 1:
                        await trio.sleep(0.005)
                    proxy.hang.clear()
                    nursery.cancel_scope.cancel()  # the hung request never ends
    assert sum(p.endswith("lib/@v/v1.0.0.mod") for p in proxy.paths()) == 1


def test_prefetch_keys() -> None:
    config = load_config(None, {"ATHENS_PREFETCH_WORKERS": "8", "ATHENS_PREFETCH_DEPTH": "2"})
    assert (config.prefetch_workers, config.prefetch_depth) == (8, 2)
    assert load_config(None, {}).prefetch_workers == 8  # on unless turned off
    assert load_config(None, {"ATHENS_PREFETCH_WORKERS": "0"}).prefetch_workers == 0
    with pytest.raises(ConfigError, match="PrefetchDepth"):
        load_config(None, {"ATHENS_PREFETCH_DEPTH": "0"})


async def test_the_frontier_moves_on_with_the_client() -> None:
    chain = [f"a.example/m{i}" for i in range(6)]
    mods = {f"{m}@v1.0.0": _mod(f"{n} v1.0.0") for m, n in itertools.pairwise(chain)}
    graph = _Graph({**mods, f"{chain[-1]}@v1.0.0": _mod()})
    storage = MemoryStorage()

    class _Storing(_Graph):
        async def go_mod(self, module: str, version: str) -> bytes:
            found = await graph.go_mod(module, version)
            await storage.save_mod(module, version, info=b"{}", mod=found)
            return found

    prefetcher = Prefetcher(_Storing({}), storage, lambda: True, workers=2, depth=2)
    served = with_prefetch(prefetcher)(graph)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(prefetcher.run)
        await served.go_mod(chain[0], "v1.0.0")
        await _settled(prefetcher)
        assert graph.asked == [f"{m}@v1.0.0" for m in chain[:3]]
        await served.go_mod(chain[1], "v1.0.0")  # the client is a level further on
        await _settled(prefetcher)
        assert graph.asked[3:] == [f"{chain[1]}@v1.0.0", f"{chain[3]}@v1.0.0"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("cache_bytes", [64 << 20, 0], ids=["cached", "no-cache"])
async def test_a_served_server_prefetches_on_fast_path_hits_too_and_shows_it_in_metrics(
    tmp_path: Path, upstream_graph: Path, cache_bytes: int
) -> None:
    """The fast path answers stored go.mod files without the protocol: it still tells
    the prefetcher, and /metrics shows the prefetcher's counts."""
    import httpx

    from .helpers import served, wait_until

    async with static_proxy(upstream_graph) as proxy:
        config = _config(tmp_path, proxy, stored_file_cache_bytes=cache_bytes)
        async with served(config) as server, httpx.AsyncClient(base_url=server.url) as http:
            prefetcher = server.pipeline.prefetcher
            assert prefetcher is not None
            await server.pipeline.storage.save_mod(
                "a.example/app",
                "v1.0.0",
                info=json.dumps({"Version": "v1.0.0"}).encode(),
                mod=(upstream_graph / "a.example/app/@v/v1.0.0.mod").read_bytes(),
            )
            answer = await http.get("/a.example/app/@v/v1.0.0.mod")  # stored: the fast path
            assert answer.status_code == 200
            # Told once the answer is sent: the client may see it first.
            await wait_until(lambda: prefetcher.statistics().prefetched == 2)
            await _settled(prefetcher)
            metrics = (await http.get("/metrics")).text
            assert "athens_trio_prefetch_prefetched_total 2.0" in metrics
            assert "athens_trio_prefetch_asked_total 0.0" in metrics
