"""Several replicas, one S3 bucket: ``SingleFlightType = "s3"``.

Each "replica" is a whole pipeline (open_pipeline) of its own, on one bucket of a real S3
server (moto's, and versitygw), which holds both the modules and the lock objects; go
is the real one, counted.  S3 has no pub/sub: waiters poll the lock and storage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from athens_trio import Config, ConfigError, load_config
from athens_trio._config import (
    DiskStorageConfig,
    S3SingleFlightConfig,
    S3StorageConfig,
    SingleFlightConfig,
    StorageConfig,
)
from athens_trio.storage._s3client import S3Client
from athens_trio.storage._s3lock import S3Leases

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import counting_go, go_downloads, go_runs, wait_until
from .redisfixtures import free_port
from .s3fixtures import (
    REGION,
    S3Server,
    s3_server,
    start_s3_server,
    stop_s3_server,
    versitygw_server,
)
from .test_replicas import (
    V1,
    V2,
    fetch_mod,
    fetch_zip,
    gated_go,
    one_holds_one_waits,
    replicas,
    stats,
    unreachable_warnings,
)

# Fixtures, used by name.
__all__ = ["s3_server", "versitygw_server"]


@pytest.fixture(params=["moto", "versitygw"])
def any_s3(request: pytest.FixtureRequest) -> tuple[S3Server, str]:
    """Each real server in turn, with a fresh bucket."""
    server: S3Server = request.getfixturevalue(
        "s3_server" if request.param == "moto" else "versitygw_server"
    )
    return server, server.create_bucket()


def bucket_config(server_endpoint: str, key: str, secret: str, bucket: str) -> S3StorageConfig:
    return S3StorageConfig(
        region=REGION,
        key=key,
        secret=secret,
        bucket=bucket,
        endpoint=server_endpoint,
        force_path_style=True,
        prefix="go",
    )


def s3_lock_config(
    tmp_path: Path,
    go: str,
    fixtures: GoFixtures,
    s3: S3StorageConfig,
    *,
    storage_type: str = "s3",
    ttl: int = 5,
) -> Config:
    """Replicas whose locks live in ``s3``'s bucket; their modules too (or on one
    disk root, for ``storage_type="disk"``)."""
    return make_config(
        tmp_path,
        go,
        fixtures,
        storage_type=storage_type,
        storage=StorageConfig(disk=DiskStorageConfig(root_path=str(tmp_path / "storage")), s3=s3),
        single_flight_type="s3",
        single_flight=SingleFlightConfig(
            s3=S3SingleFlightConfig(ttl=ttl, timeout=5, max_retries=10)
        ),
    )


# ---------------------------------------------------------------------------------------
# Configuration: Athens' keys and variables
# ---------------------------------------------------------------------------------------


def test_athens_s3_singleflight_keys_and_variables(tmp_path: Path) -> None:
    toml = tmp_path / "athens.toml"
    toml.write_text(
        'SingleFlightType = "s3"\n'
        "[Storage.S3]\n"
        'Region = "eu-west-1"\nBucket = "mods"\nKey = "k"\nSecret = "s"\n'
        "[SingleFlight.S3]\nTTL = 20\nTimeout = 3\nMaxRetries = 4\n"
    )
    config = load_config(toml, environ={})
    assert config.single_flight_type == "s3"
    assert config.single_flight.s3 == S3SingleFlightConfig(ttl=20, timeout=3, max_retries=4)
    config = load_config(
        toml,
        environ={
            "ATHENS_S3_LOCK_TTL": "7",
            "ATHENS_S3_LOCK_TIMEOUT": "2",
            "ATHENS_S3_LOCK_MAX_RETRIES": "9",
        },
    )
    assert config.single_flight.s3 == S3SingleFlightConfig(ttl=7, timeout=2, max_retries=9)
    # Athens' defaults but a short lease: it is refreshed.
    assert load_config(None, environ={}).single_flight.s3 == S3SingleFlightConfig(30, 15, 10)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"ATHENS_S3_LOCK_TTL": "0"}, "ATHENS_S3_LOCK_TTL"),
        ({"ATHENS_S3_LOCK_MAX_RETRIES": "many"}, "ATHENS_S3_LOCK_MAX_RETRIES"),
        # The lock objects live in [Storage.S3]'s bucket, whatever StorageType is.
        ({"ATHENS_SINGLE_FLIGHT_TYPE": "s3"}, "Storage.S3.Bucket: SingleFlightType s3 needs"),
    ],
)
def test_a_bad_s3_singleflight_value_names_its_variable(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(None, environ=environ)


# ---------------------------------------------------------------------------------------
# Two replicas, one bucket
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_herd_on_two_replicas_sharing_a_bucket_runs_go_once_per_version_and_part(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, any_s3: tuple[S3Server, str]
) -> None:
    server, bucket = any_s3
    wrapper, runs = counting_go(tmp_path, go_binary)
    s3 = bucket_config(server.endpoint, server.key, server.secret, bucket)
    config = s3_lock_config(tmp_path, str(wrapper), go_fixtures, s3)
    module = go_fixtures.hello
    zips: list[int] = []
    mods: list[int] = []
    async with replicas(config, subscribed=False) as pipelines:
        async with trio.open_nursery() as nursery:
            for i in range(20):
                pipeline = pipelines[i % 2]
                nursery.start_soon(fetch_zip, pipeline, module, V1, zips)
                nursery.start_soon(fetch_mod, pipeline, module, V2, mods)
        statistics = stats(pipelines)
    assert len(zips) == len(mods) == 20
    assert len(set(zips)) == len(set(mods)) == 1  # every client got the same bytes
    # One go run per version and part, not one each: V1's zip, V2's go.mod part (from a
    # VCS, a download of the whole version).
    assert go_downloads(runs, f"{module}@{V1}") == 1
    assert len(go_runs(runs)) == 2, go_runs(runs)
    assert sum(s.acquired for s in statistics) >= 2  # a lock per (version, part)
    assert sum(s.waited for s in statistics) >= 1  # a replica waited for the other
    assert all(s.fallbacks == 0 and s.reachable for s in statistics)
    assert all(s.held == s.waiting == 0 and not s.subscribed for s in statistics)


@pytest.mark.slow
async def test_a_waiter_polls_until_the_holder_stores_then_serves_without_go(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, any_s3: tuple[S3Server, str]
) -> None:
    server, bucket = any_s3
    wrapper, runs, gate = gated_go(tmp_path, go_binary)
    s3 = bucket_config(server.endpoint, server.key, server.secret, bucket)
    config = s3_lock_config(tmp_path, str(wrapper), go_fixtures, s3, ttl=3)
    sizes: list[int] = []
    async with replicas(config, subscribed=False) as pipelines:
        async with trio.open_nursery() as nursery:
            for pipeline in pipelines:
                nursery.start_soon(fetch_zip, pipeline, go_fixtures.hello, V1, sizes)
            await wait_until(lambda: one_holds_one_waits(pipelines), 30)
            # The holder refreshes its 3 s lease: the waiter (looking every 0.75 s)
            # waits on, past two leases, without taking it over.
            await wait_until(lambda: max(s.lock_checks for s in stats(pipelines)) >= 8, 60)
            gate.touch()
        statistics = stats(pipelines)
    assert len(sizes) == 2
    assert sizes[0] == sizes[1]
    assert go_downloads(runs) == 1
    assert sum(s.takeovers for s in statistics) == 0
    assert sum(s.waited for s in statistics) >= 1


@pytest.mark.slow
async def test_a_dead_holders_lock_object_is_taken_over_after_its_lease(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, any_s3: tuple[S3Server, str]
) -> None:
    server, bucket = any_s3
    wrapper, runs = counting_go(tmp_path, go_binary)
    s3 = bucket_config(server.endpoint, server.key, server.secret, bucket)
    config = s3_lock_config(tmp_path, str(wrapper), go_fixtures, s3, ttl=3)
    module = go_fixtures.hello
    key = f"zip:{module}@{V1}"  # the distributed lock's name for V1's zip
    client = S3Client(server.bucket(bucket), server.credentials())
    try:
        sizes: list[int] = []
        async with replicas(config, 1, subscribed=False) as pipelines:
            # Another replica holds V1's zip lock, alive as far as anyone can tell (a
            # lease longer than the test) until the replica has met it and waits ...
            holding = await S3Leases(client, prefix="go", ttl=600).try_acquire(key)
            assert holding is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch_zip, pipelines[0], module, V1, sizes)
                await wait_until(lambda: stats(pipelines)[0].waiting == 1, 60)
                # ... then refreshes it a last time, for 3 s, and dies: its lock object
                # is never refreshed again.
                died = trio.current_time()
                await S3Leases(client, prefix="go", ttl=3).refresh(holding)
            took = trio.current_time() - died
            statistics = stats(pipelines)[0]
    finally:
        await client.aclose()
    assert len(sizes) == 1
    assert statistics.takeovers == 1
    assert statistics.waited >= 1
    assert go_downloads(runs) == 1
    assert took >= 1, took  # the last lease ran out first (3 s, server time by the second)


# ---------------------------------------------------------------------------------------
# The lock's S3 unreachable: local single-flight, a warning, no failed request
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_an_unreachable_lock_endpoint_is_a_warning_not_a_failure(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="athens_trio.singleflight")
    wrapper, runs = counting_go(tmp_path, go_binary)
    # Modules on disk; the lock's bucket behind a port nobody listens on.
    s3 = bucket_config(f"http://127.0.0.1:{free_port()}", "k", "s", "locks")
    config = s3_lock_config(tmp_path, str(wrapper), go_fixtures, s3, storage_type="disk")
    module = go_fixtures.hello
    sizes: list[int] = []
    with trio.fail_after(60):  # never a hang
        async with replicas(config, 1, subscribed=False) as pipelines:
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(fetch_zip, pipelines[0], module, V1, sizes)
            await fetch_mod(pipelines[0], module, V2, sizes)
            statistics = stats(pipelines)[0]
    assert len(sizes) == 6
    # The local single-flight still shares the fetch.
    assert go_downloads(runs, f"{module}@{V1}") == 1
    assert statistics.fallbacks >= 1
    assert not statistics.reachable
    warnings = unreachable_warnings(caplog)
    assert len(warnings) == 1, caplog.text
    assert warnings[0].getMessage().startswith("S3 bucket locks at http://127.0.0.1:")


@pytest.mark.slow
async def test_the_lock_server_stopped_mid_fetch_fails_no_request(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="athens_trio.singleflight")
    wrapper, runs, gate = gated_go(tmp_path, go_binary)
    # A moto of this test's own (stopped below); the modules on one disk root.
    process, server = start_s3_server(check_signatures=False)
    try:
        s3 = bucket_config(server.endpoint, server.key, server.secret, server.create_bucket())
        config = s3_lock_config(tmp_path, str(wrapper), go_fixtures, s3, storage_type="disk")
        module = go_fixtures.hello
        sizes: list[Any] = []
        async with replicas(config, subscribed=False) as pipelines:
            async with trio.open_nursery() as nursery:
                for pipeline in pipelines:
                    nursery.start_soon(fetch_zip, pipeline, module, V1, sizes)
                await wait_until(lambda: one_holds_one_waits(pipelines), 30)
                stop_s3_server(process)
                # The waiter's next look at the lock fails: it fetches on its own.
                await wait_until(lambda: sum(s.fallbacks for s in stats(pipelines)) >= 1, 30)
                gate.touch()
            # Later requests, the lock's S3 still gone: served, with no warning more.
            for pipeline in pipelines:
                for _ in range(3):
                    await fetch_mod(pipeline, module, V2, sizes)
            statistics = stats(pipelines)
    finally:
        stop_s3_server(process)
    assert len(sizes) == 2 + 6
    assert not any(s.reachable for s in statistics)
    # One warning per replica for the whole outage.
    assert 1 <= len(unreachable_warnings(caplog)) <= 2, caplog.text
    assert 1 <= go_downloads(runs, f"{module}@{V1}") <= 2  # each replica on its own, at worst
