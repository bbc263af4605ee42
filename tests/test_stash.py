"""Stasher, Pool and SingleFlight, with a scripted fetcher standing in for go."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from athens_trio import (
    FetchedVersion,
    Fetcher,
    MemoryStorage,
    NotFoundError,
    UpstreamError,
    download,
    stash,
)
from athens_trio._ziphash import mod_h1
from athens_trio.upstream import FetchedMod, Lister, UpstreamVersions, VersionInfo

MODULE = "github.com/example/mod"


class ScriptedFetcher(Fetcher):
    """Fetches instantly (or when released), counting calls and peak concurrency."""

    def __init__(self, tmp_path: Path, *, fail_with: Exception | None = None) -> None:
        self.tmp_path = tmp_path
        self.fail_with = fail_with
        self.calls: list[str] = []
        self.running = 0
        self.peak = 0
        self.release = trio.Event()
        self.started = trio.Event()
        self.hold = False
        self.cancelled = 0

    @contextlib.asynccontextmanager
    async def fetch(self, module: str, version: str) -> AsyncIterator[FetchedVersion]:
        self.calls.append(version)
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started.set()
        try:
            if self.hold:
                await self.release.wait()
            else:
                await trio.sleep(0.01)
            if self.fail_with is not None:
                raise self.fail_with
            resolved = "v1.0.0" if version == "main" else version
            zip_file = self.tmp_path / f"{resolved}-{len(self.calls)}.zip"
            zip_file.write_bytes(b"zip of " + resolved.encode())
            yield FetchedVersion(
                module=module,
                version=resolved,
                info=b'{"Version":"%s"}' % resolved.encode(),
                mod=b"module " + module.encode(),
                zip_file=zip_file,
                zip_sum="h1:fake",
                mod_sum=mod_h1(b"module " + module.encode()),
            )
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    async def fetch_mod(self, module: str, version: str) -> FetchedMod:
        async with self.fetch(module, version) as fetched:
            return FetchedMod(module, fetched.version, fetched.info, fetched.mod, fetched.mod_sum)


async def test_stasher_fetches_then_saves(tmp_path: Path) -> None:
    storage = MemoryStorage()
    stasher = stash.new(ScriptedFetcher(tmp_path), storage)
    await stasher.stash(MODULE, "v1.2.0", "zip")
    assert await storage.go_mod(MODULE, "v1.2.0") == b"module " + MODULE.encode()
    assert await storage.exists(MODULE, "v1.2.0")


async def test_a_mod_stash_stores_no_zip_and_a_zip_stash_completes_it(tmp_path: Path) -> None:
    """(Replaces the query test: stashes take canonical versions, resolved before.)"""
    storage = MemoryStorage()
    fetcher = ScriptedFetcher(tmp_path)
    stasher = stash.new(fetcher, storage)
    await stasher.stash(MODULE, "v1.0.0", "mod")
    assert await storage.list_versions(MODULE) == ["v1.0.0"]
    assert await storage.mod_sum(MODULE, "v1.0.0") == mod_h1(b"module " + MODULE.encode())
    assert not await storage.exists(MODULE, "v1.0.0")
    await stasher.stash(MODULE, "v1.0.0", "mod")  # stored: no fetch
    await stasher.stash(MODULE, "v1.0.0", "zip")
    assert await storage.exists(MODULE, "v1.0.0")
    await stasher.stash(MODULE, "v1.0.0", "zip")  # stored: no fetch
    assert fetcher.calls == ["v1.0.0", "v1.0.0"]


async def test_wrappers_apply_in_order(tmp_path: Path) -> None:
    order: list[str] = []

    def tag(name: str) -> stash.Wrapper:
        def wrap(inner: stash.Stasher) -> stash.Stasher:
            class Tagged(stash.Stasher):
                async def stash(self, module: str, version: str, part: stash.Part) -> None:
                    order.append(name)
                    await inner.stash(module, version, part)

            return Tagged()

        return wrap

    stasher = stash.new(ScriptedFetcher(tmp_path), MemoryStorage(), tag("inner"), tag("outer"))
    await stasher.stash(MODULE, "v1.0.0", "zip")
    assert order == ["outer", "inner"]


async def test_pool_bounds_concurrent_fetches(tmp_path: Path) -> None:
    fetcher = ScriptedFetcher(tmp_path)
    stasher = stash.new(fetcher, MemoryStorage(), stash.with_pool(3))
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(stasher.stash, MODULE, f"v1.0.{i}", "zip")
    assert len(fetcher.calls) == 20
    assert fetcher.peak == 3


async def test_singleflight_runs_one_fetch_for_fifty_callers(tmp_path: Path) -> None:
    fetcher = ScriptedFetcher(tmp_path)
    fetcher.hold = True
    results: list[str] = []
    async with trio.open_nursery() as pipeline_nursery:
        stasher = stash.new(
            fetcher, MemoryStorage(), stash.with_pool(2), stash.with_singleflight(pipeline_nursery)
        )

        async def call() -> None:
            await stasher.stash(MODULE, "v1.0.0", "zip")
            results.append("v1.0.0")

        async with trio.open_nursery() as callers:
            for _ in range(50):
                callers.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            fetcher.release.set()
    assert fetcher.calls == ["v1.0.0"]
    assert results == ["v1.0.0"] * 50


async def test_singleflight_first_caller_cancelled_others_still_served(tmp_path: Path) -> None:
    fetcher = ScriptedFetcher(tmp_path)
    fetcher.hold = True
    storage = MemoryStorage()
    async with trio.open_nursery() as pipeline_nursery:
        stasher = stash.new(fetcher, storage, stash.with_singleflight(pipeline_nursery))
        second_result: list[str] = []
        with trio.CancelScope() as first_caller:

            async def second() -> None:
                await stasher.stash(MODULE, "v1.0.0", "zip")
                second_result.append("v1.0.0")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stasher.stash, MODULE, "v1.0.0", "zip")  # the first caller
                await fetcher.started.wait()
                pipeline_nursery.start_soon(second)
                await trio.testing.wait_all_tasks_blocked()
                first_caller.cancel()
        assert first_caller.cancelled_caught
        fetcher.release.set()
    assert fetcher.cancelled == 0
    assert second_result == ["v1.0.0"]
    assert await storage.exists(MODULE, "v1.0.0")


async def test_singleflight_error_reaches_every_waiter_then_retries(tmp_path: Path) -> None:
    fetcher = ScriptedFetcher(tmp_path, fail_with=NotFoundError("no such module"))
    fetcher.hold = True
    errors: list[BaseException] = []
    async with trio.open_nursery() as pipeline_nursery:
        stasher = stash.new(fetcher, MemoryStorage(), stash.with_singleflight(pipeline_nursery))

        async def call() -> None:
            try:
                await stasher.stash(MODULE, "v1.0.0", "zip")
            except NotFoundError as exc:
                errors.append(exc)

        async with trio.open_nursery() as callers:
            for _ in range(10):
                callers.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            fetcher.release.set()
        assert len(errors) == 10
        assert len({id(e) for e in errors}) == 10  # each waiter raised its own copy
        assert all(str(e) == "no such module" for e in errors)
        # The entry is gone: the next request fetches again.
        fetcher.fail_with = None
        await stasher.stash(MODULE, "v1.0.0", "zip")
    assert fetcher.calls == ["v1.0.0", "v1.0.0"]


async def test_singleflight_pipeline_closing_fails_waiters_cleanly(tmp_path: Path) -> None:
    fetcher = ScriptedFetcher(tmp_path)
    fetcher.hold = True
    errors: list[BaseException] = []
    async with trio.open_nursery() as outer:
        with trio.CancelScope() as pipeline_scope:
            async with trio.open_nursery() as pipeline_nursery:
                stasher = stash.new(
                    fetcher, MemoryStorage(), stash.with_singleflight(pipeline_nursery)
                )

                async def waiter() -> None:
                    try:
                        await stasher.stash(MODULE, "v1.0.0", "zip")
                    except UpstreamError as exc:
                        errors.append(exc)

                outer.start_soon(waiter)
                await fetcher.started.wait()
                await trio.testing.wait_all_tasks_blocked()
                pipeline_scope.cancel()
    assert fetcher.cancelled == 1
    assert len(errors) == 1
    assert "shutting down" in str(errors[0])


@pytest.mark.parametrize("workers", [1, 4])
async def test_singleflight_distinct_versions_each_fetch_once(tmp_path: Path, workers: int) -> None:
    fetcher = ScriptedFetcher(tmp_path)
    async with trio.open_nursery() as pipeline_nursery:
        stasher = stash.new(
            fetcher,
            MemoryStorage(),
            stash.with_pool(workers),
            stash.with_singleflight(pipeline_nursery),
        )
        async with trio.open_nursery() as callers:
            for i in range(30):
                callers.start_soon(stasher.stash, MODULE, f"v1.0.{i % 5}", "zip")
    assert sorted(fetcher.calls) == [f"v1.0.{i}" for i in range(5)]
    assert fetcher.peak <= workers


# ---------------------------------------------------------------------------------------
# statistics()
# ---------------------------------------------------------------------------------------


async def test_fetch_statistics_count_by_outcome_with_durations(tmp_path: Path) -> None:
    fetcher = ScriptedFetcher(tmp_path)
    fetches = stash.FetchAndSave(fetcher, MemoryStorage())
    assert fetches.statistics() == stash.FetchStatistics(in_progress=0, outcomes={})

    fetcher.hold = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetches.stash, MODULE, "v1.0.0", "zip")
        await fetcher.started.wait()
        assert fetches.statistics().in_progress == 1
        fetcher.release.set()
    fetcher.hold = False
    fetcher.fail_with = NotFoundError("no such version")
    with pytest.raises(NotFoundError):
        await fetches.stash(MODULE, "v9.9.9", "zip")
    fetcher.fail_with = UpstreamError("vcs down")
    with pytest.raises(UpstreamError):
        await fetches.stash(MODULE, "v9.9.8", "zip")

    statistics = fetches.statistics()
    assert statistics.in_progress == 0
    assert set(statistics.outcomes) == {"ok", "not_found", "upstream_error"}
    for tally in statistics.outcomes.values():
        assert tally.count == 1
        assert tally.seconds > 0
        assert len(tally.buckets) == len(stash.FETCH_SECONDS_BOUNDS)
        # Cumulative and bounded by the count: each took well under the last bound.
        assert list(tally.buckets) == sorted(tally.buckets)
        assert tally.buckets[-1] == 1


async def test_fetch_statistics_count_a_cancelled_fetch(tmp_path: Path) -> None:
    fetcher = ScriptedFetcher(tmp_path)
    fetcher.hold = True
    fetches = stash.FetchAndSave(fetcher, MemoryStorage())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetches.stash, MODULE, "v1.0.0", "zip")
        await fetcher.started.wait()
        nursery.cancel_scope.cancel()
    statistics = fetches.statistics()
    assert statistics.in_progress == 0
    assert statistics.outcomes["cancelled"].count == 1


async def test_pool_and_singleflight_statistics(tmp_path: Path) -> None:
    fetcher = ScriptedFetcher(tmp_path)
    fetcher.hold = True
    pool = stash.with_pool(1)
    assert pool.statistics() == stash.PoolStatistics(in_use=0, size=1, waiting=0)
    async with trio.open_nursery() as pipeline_nursery:
        singleflight = stash.with_singleflight(pipeline_nursery)
        stasher = stash.new(fetcher, MemoryStorage(), pool, singleflight)
        async with trio.open_nursery() as callers:
            for _ in range(5):
                callers.start_soon(stasher.stash, MODULE, "v1.0.0", "zip")
            callers.start_soon(stasher.stash, MODULE, "v2.0.0", "zip")
            await trio.testing.wait_all_tasks_blocked()
            # Two distinct versions in flight: one fetching, one waiting for the slot.
            assert singleflight.statistics() == stash.SingleFlightStatistics(in_flight=2, joined=4)
            assert pool.statistics() == stash.PoolStatistics(in_use=1, size=1, waiting=1)
            fetcher.release.set()
    assert singleflight.statistics() == stash.SingleFlightStatistics(in_flight=0, joined=4)
    assert pool.statistics() == stash.PoolStatistics(in_use=0, size=1, waiting=0)


class NoLister(Lister):
    """Canonical versions only: nothing is ever listed or resolved."""

    async def list(self, module: str) -> UpstreamVersions:
        raise AssertionError("listed")

    async def resolve(self, module: str, query: str) -> VersionInfo:
        raise AssertionError("resolved")


class ZipRefusingFetcher(ScriptedFetcher):
    """A go.mod is had alone; the whole version fails for its zip (go refuses to build
    it), after the test releases it."""

    @contextlib.asynccontextmanager
    async def fetch(self, module: str, version: str) -> AsyncIterator[FetchedVersion]:
        self.calls.append(f"whole {version}")
        self.started.set()
        await self._refuse(module, version)
        async with super().fetch(module, version) as never:
            yield never

    async def _refuse(self, module: str, version: str) -> None:
        """Once released: go refuses the zip (it always does)."""
        await self.release.wait()
        raise UpstreamError(f"{module}@{version}: go cannot build its zip")

    async def fetch_mod(self, module: str, version: str) -> FetchedMod:
        self.calls.append(f"mod {version}")
        mod = b"module " + module.encode()
        info = b'{"Version":"%s"}' % version.encode()
        return FetchedMod(module, version, info, mod, mod_h1(mod))


async def test_a_go_mod_asked_while_its_zip_fails_is_fetched_alone(tmp_path: Path) -> None:
    # A .mod joins the zip's flight (which would store the go.mod part too); that
    # failing for the zip alone, the go.mod part is fetched by itself and served.
    storage = MemoryStorage()
    fetcher = ZipRefusingFetcher(tmp_path)
    async with trio.open_nursery() as nursery:
        stasher = stash.new(fetcher, storage, stash.with_singleflight(nursery))
        outcomes: dict[str, str] = {}

        async def ask(part: stash.Part) -> None:
            try:
                await stasher.stash(MODULE, "v1.0.0", part)
                outcomes[part] = "ok"
            except UpstreamError:
                outcomes[part] = "failed"

        nursery.start_soon(ask, "zip")
        await fetcher.started.wait()
        nursery.start_soon(ask, "mod")
        await trio.testing.wait_all_tasks_blocked()
        fetcher.release.set()
    assert outcomes == {"zip": "failed", "mod": "ok"}
    assert fetcher.calls == ["whole v1.0.0", "mod v1.0.0"]
    assert await storage.go_mod(MODULE, "v1.0.0") == b"module " + MODULE.encode()


async def test_from_a_vcs_a_go_mod_whose_zip_cannot_be_made_is_still_served(
    tmp_path: Path,
) -> None:
    # From a VCS a .mod miss fetches the whole version; when only the zip fails (not a
    # timeout, not "does not exist"), the go.mod part alone is fetched and served.
    class FromAVcs(ZipRefusingFetcher):
        def whole_for_go_mod(self, module: str) -> bool:
            return True

    storage = MemoryStorage()
    fetcher = FromAVcs(tmp_path)
    fetcher.release.set()
    async with trio.open_nursery() as nursery:
        stasher = stash.new(fetcher, storage, stash.with_singleflight(nursery))
        protocol = download.new(
            storage, stasher, NoLister(), whole_for_go_mod=fetcher.whole_for_go_mod
        )
        assert await protocol.go_mod(MODULE, "v1.0.0") == b"module " + MODULE.encode()
        with pytest.raises(UpstreamError):
            await protocol.zip(MODULE, "v1.0.0")
    assert fetcher.calls == ["whole v1.0.0", "mod v1.0.0", "whole v1.0.0"]
