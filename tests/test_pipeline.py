"""The download protocol end to end through the library API: no HTTP, the real go."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.testing

from athens_trio import (
    Config,
    DiskStorage,
    FetchTimeoutError,
    InvalidVersionError,
    MemoryStorage,
    NotFoundError,
    open_pipeline,
)
from athens_trio._config import DiskStorageConfig, StorageConfig
from athens_trio._pipeline import storage_from_config
from athens_trio._ziphash import zip_h1

from .conftest import make_config
from .gofixtures import GoFixtures, build_go_fixtures
from .helpers import (
    counting_go,
    direct_download,
    go_downloads,
    go_runs,
    hanging_go,
    leftover,
    process_alive,
    wait_for_pids,
    wait_until,
)


async def test_protocol_serves_a_version_and_its_zip_hashes_as_go_expects(
    config: Config, go_fixtures: GoFixtures, go_binary: str, tmp_path: Path
) -> None:
    module, version = go_fixtures.hello, "v1.1.0"
    direct = direct_download(go_fixtures, go_binary, tmp_path, f"{module}@{version}")
    async with open_pipeline(config) as pipeline:
        protocol = pipeline.protocol
        info = json.loads(await protocol.info(module, version))
        assert info["Version"] == version
        assert await protocol.go_mod(module, version) == Path(direct["GoMod"]).read_bytes()
        stored_zip = await protocol.zip(module, version)
        served = tmp_path / "served.zip"
        with served.open("wb") as f:
            async for chunk in stored_zip.chunks():
                f.write(chunk)
        assert stored_zip.size == served.stat().st_size
        assert zip_h1(served) == direct["Sum"]
        assert await pipeline.storage.exists(module, version)
    assert leftover(config) == []


async def test_list_and_latest(config: Config, go_fixtures: GoFixtures) -> None:
    async with open_pipeline(config) as pipeline:
        assert await pipeline.protocol.list(go_fixtures.hello) == list(go_fixtures.hello_versions)
        latest = json.loads(await pipeline.protocol.latest(go_fixtures.hello))
        assert latest["Version"] == go_fixtures.hello_versions[-1]
        # A stored pseudo-version never shows in the list.
        await pipeline.protocol.info(go_fixtures.hello, "main")
        assert await pipeline.protocol.list(go_fixtures.hello) == list(go_fixtures.hello_versions)
        with pytest.raises(NotFoundError):
            await pipeline.protocol.list(go_fixtures.missing)
        with pytest.raises(NotFoundError):
            await pipeline.protocol.latest(go_fixtures.missing)


async def test_info_query_resolves_and_stores_the_pseudo_version(
    config: Config, go_fixtures: GoFixtures
) -> None:
    async with open_pipeline(config) as pipeline:
        info = json.loads(await pipeline.protocol.info(go_fixtures.hello, "main"))
        assert info["Version"] == go_fixtures.hello_main_pseudo
        # Stored as its canonical version (whole: from a VCS the zip costs little more).
        stored = await pipeline.storage.list_versions(go_fixtures.hello)
        assert stored == [go_fixtures.hello_main_pseudo]
        assert await pipeline.storage.exists(go_fixtures.hello, go_fixtures.hello_main_pseudo)
        assert await pipeline.protocol.go_mod(go_fixtures.hello, go_fixtures.hello_main_pseudo)


async def test_every_fixture_through_the_protocol(config: Config, go_fixtures: GoFixtures) -> None:
    wanted = [
        (go_fixtures.consumer, go_fixtures.consumer_version),
        (go_fixtures.upper, go_fixtures.upper_version),
        (go_fixtures.major_v2, go_fixtures.major_v2_version),
        (go_fixtures.incompatible, "v2.0.0+incompatible"),
    ]
    async with open_pipeline(config) as pipeline:
        for module, version in wanted:
            assert json.loads(await pipeline.protocol.info(module, version))["Version"] == version
            assert (await pipeline.protocol.zip(module, version)).size > 0


@pytest.mark.parametrize(
    ("module", "version", "error"),
    [
        ("missing", "v1.0.0", NotFoundError),
        ("hello", "v9.9.9", NotFoundError),
        # No v2 can exist at a path without /v2: refused without asking go.
        ("hello", "v2.0.0", NotFoundError),
        ("hello", "main", InvalidVersionError),  # .mod/.zip need canonical versions
        ("hello", "v1.0", InvalidVersionError),
    ],
)
async def test_mod_errors(
    config: Config, go_fixtures: GoFixtures, module: str, version: str, error: type[Exception]
) -> None:
    async with open_pipeline(config) as pipeline:
        with pytest.raises(error):
            await pipeline.protocol.go_mod(getattr(go_fixtures, module), version)


async def test_concurrent_cold_requests_run_one_download(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    script, count = counting_go(tmp_path, go_binary)
    config = make_config(tmp_path, str(script), go_fixtures)
    results: list[bytes] = []
    async with open_pipeline(config) as pipeline:

        async def request(kind: str) -> None:
            if kind == "zip":
                stored = await pipeline.protocol.zip(go_fixtures.hello, "v1.0.0")
                results.append(b"".join([c async for c in stored.chunks()]))
            else:
                results.append(await pipeline.protocol.go_mod(go_fixtures.hello, "v1.0.0"))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(request, "zip" if i % 2 else "mod")
    # One fetch per part at most: the go.mod part (go list, no zip) and the whole
    # version (the one go mod download); a .mod asked while the zip is fetched joins it.
    assert go_downloads(count) == 1
    assert len(go_runs(count)) <= 2
    assert len(results) == 50


async def test_requester_going_away_does_not_cancel_the_shared_fetch(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    script, count = counting_go(tmp_path, go_binary)
    config = make_config(tmp_path, str(script), go_fixtures)
    async with open_pipeline(config) as pipeline:
        with trio.move_on_after(0.05):  # the client hangs up almost at once
            await pipeline.protocol.go_mod(go_fixtures.hello, "v1.0.0")
        # The fetch goes on in the pipeline's nursery; a later request gets its result.
        assert await pipeline.protocol.go_mod(go_fixtures.hello, "v1.0.0")
    assert len(go_runs(count)) == 1  # one go list: the go.mod part


async def test_fetch_timeout_surfaces_and_leaves_nothing(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    config = make_config(tmp_path, str(hanging_go(tmp_path)), go_fixtures, stash_timeout=0.5)
    async with open_pipeline(config) as pipeline:
        with pytest.raises(FetchTimeoutError):
            await pipeline.protocol.info(go_fixtures.hello, "v1.0.0")
        assert not await pipeline.storage.exists(go_fixtures.hello, "v1.0.0")
    pids = await wait_for_pids(tmp_path / "pids", 2)
    await wait_until(lambda: not any(process_alive(pid) for pid in pids))
    assert leftover(config) == []


async def test_closing_the_pipeline_kills_in_flight_fetches(
    tmp_path: Path, go_fixtures: GoFixtures
) -> None:
    config = make_config(tmp_path, str(hanging_go(tmp_path)), go_fixtures)
    failures: list[Exception] = []
    async with trio.open_nursery() as nursery, open_pipeline(config) as pipeline:

        async def request() -> None:
            try:
                await pipeline.protocol.info(go_fixtures.hello, "v1.0.0")
            except Exception as exc:
                failures.append(exc)

        nursery.start_soon(request)
        pids = await wait_for_pids(tmp_path / "pids", 2)
        # Leaving the pipeline cancelled its nursery: the waiting request is told why.
    assert [type(e).__name__ for e in failures] == ["FetchStoppedError"]
    # The group was killed; the processes are gone once the kernel reaped them.
    await wait_until(lambda: not any(process_alive(pid) for pid in pids))
    assert leftover(config) == []


async def test_stored_versions_outlive_the_repositories(tmp_path: Path, go_binary: str) -> None:
    fixtures = build_go_fixtures(tmp_path / "private-repos")
    config = make_config(tmp_path, go_binary, fixtures)
    async with open_pipeline(config) as pipeline:
        await pipeline.protocol.zip(fixtures.hello, "v1.0.0")
    shutil.rmtree(fixtures.repos_root)
    async with open_pipeline(config) as pipeline:
        protocol = pipeline.protocol
        assert json.loads(await protocol.info(fixtures.hello, "v1.0.0"))["Version"] == "v1.0.0"
        assert (await protocol.zip(fixtures.hello, "v1.0.0")).size > 0
        # Upstream says "does not exist"; storage still answers list and latest.
        assert await protocol.list(fixtures.hello) == ["v1.0.0"]
        assert json.loads(await protocol.latest(fixtures.hello))["Version"] == "v1.0.0"
        with pytest.raises(NotFoundError):
            await protocol.info(fixtures.hello, "v1.1.0")


async def test_offline_network_mode_answers_from_storage_only(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    online = make_config(tmp_path, go_binary, go_fixtures)
    async with open_pipeline(online) as pipeline:
        await pipeline.protocol.info(go_fixtures.hello, "v1.0.0")
    offline = make_config(tmp_path, "/nonexistent/go", go_fixtures, network_mode="offline")
    async with open_pipeline(offline) as pipeline:
        assert await pipeline.protocol.list(go_fixtures.hello) == ["v1.0.0"]
        assert json.loads(await pipeline.protocol.latest(go_fixtures.hello))["Version"] == "v1.0.0"
        with pytest.raises(NotFoundError):
            await pipeline.protocol.list(go_fixtures.upper)


async def test_memory_storage_pipeline(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures, storage_type="memory")
    async with open_pipeline(config) as pipeline:
        assert pipeline.storage.description == "memory"
        assert await pipeline.protocol.go_mod(go_fixtures.upper, "v1.0.0")
    assert not (tmp_path / "storage").exists()


async def test_listing_shares_the_go_pool(tmp_path: Path, go_fixtures: GoFixtures) -> None:
    """GoGetWorkers bounds every go the proxy starts: a burst of list requests too."""
    from athens_trio import Lister, UpstreamVersions, VersionInfo

    class SlowLister(Lister):
        running = peak = 0

        async def list(self, module: str) -> UpstreamVersions:
            SlowLister.running += 1
            SlowLister.peak = max(SlowLister.peak, SlowLister.running)
            await trio.sleep(0.02)
            SlowLister.running -= 1
            return UpstreamVersions(
                ["v1.0.0"], VersionInfo("v1.0.0", datetime(2024, 1, 1, tzinfo=UTC))
            )

        async def resolve(self, module: str, query: str) -> VersionInfo:
            raise NotImplementedError

    config = make_config(tmp_path, "/nonexistent/go", go_fixtures, go_get_workers=2)
    async with (
        open_pipeline(config, lister=SlowLister()) as pipeline,
        trio.open_nursery() as nursery,
    ):
        for i in range(12):
            nursery.start_soon(pipeline.protocol.list, f"example.com/m{i}")
    assert SlowLister.peak == 2


def test_storage_type_names_the_backend(tmp_path: Path) -> None:
    assert isinstance(storage_from_config(Config(storage_type="memory")), MemoryStorage)
    root = tmp_path / "tree"
    disk = Config(storage=StorageConfig(disk=DiskStorageConfig(root_path=str(root))))
    storage = storage_from_config(disk)
    assert isinstance(storage, DiskStorage)
    assert storage.root == root
