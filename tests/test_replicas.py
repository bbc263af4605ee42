"""Several replicas, one Redis: one go run per (version, part) across them.

Each "replica" is a whole pipeline (open_pipeline) of its own, all on one disk storage
root and one real redis-server (or redis-sentinel); go is the real one, counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from athens_trio import Config, ConfigError, NotFoundError, load_config, open_pipeline
from athens_trio._config import (
    RedisLockConfig,
    RedisSentinelSingleFlightConfig,
    RedisSingleFlightConfig,
    SingleFlightConfig,
)
from athens_trio._pipeline import Pipeline
from athens_trio.stash import (
    DistributedLock,
    DistributedLockStatistics,
    LockSettings,
    redis_client,
    sentinel_client,
)

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import (
    child_env,
    child_server,
    counting_go,
    fixture_env_vars,
    go_downloads,
    go_runs,
    go_script,
    recording_go,
    session_processes,
    wait_for_pids,
    wait_until,
)
from .redisfixtures import (
    MASTER_NAME,
    RedisServer,
    free_port,
    start_redis,
    start_sentinel,
)

V1 = "v1.0.0"
V2 = "v1.1.0"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with start_redis(tmp_path / "redis") as server:
        yield server


def redis_config(
    tmp_path: Path,
    go: str,
    fixtures: GoFixtures,
    endpoint: str,
    *,
    ttl: int = 5,
    max_retries: int = 10,
) -> Config:
    lock = RedisLockConfig(ttl=ttl, timeout=5, max_retries=max_retries)
    return make_config(
        tmp_path,
        go,
        fixtures,
        single_flight_type="redis",
        single_flight=SingleFlightConfig(
            redis=RedisSingleFlightConfig(endpoint=endpoint, lock_config=lock)
        ),
    )


@contextlib.asynccontextmanager
async def replicas(
    config: Config, count: int = 2, *, subscribed: bool = True
) -> AsyncIterator[list[Pipeline]]:
    """``count`` pipelines on ``config``; ``subscribed``: once each hears the holders'
    messages (Redis is up)."""
    async with contextlib.AsyncExitStack() as stack:
        pipelines = [await stack.enter_async_context(open_pipeline(config)) for _ in range(count)]
        if subscribed:
            await wait_until(lambda: all(s.subscribed for s in stats(pipelines)), 30)
        yield pipelines


def lock_of(pipeline: Pipeline) -> DistributedLock[Any]:
    assert pipeline.distributed_lock is not None
    return pipeline.distributed_lock


def stats(pipelines: list[Pipeline]) -> list[DistributedLockStatistics]:
    return [lock_of(pipeline).statistics() for pipeline in pipelines]


def one_holds_one_waits(pipelines: list[Pipeline]) -> bool:
    return sorted((s.held, s.waiting) for s in stats(pipelines)) == [(0, 1), (1, 0)]


def gated_go(tmp_path: Path, go_binary: str) -> tuple[Path, Path, Path]:
    """A counted go that waits for the file ``gate`` before it is the real go: a fetch
    that lasts as long as the test wants."""
    gate = tmp_path / "gate"
    wrapper, runs = recording_go(
        tmp_path,
        "gated-go",
        f'while [ ! -e "{gate}" ]; do sleep 0.02; done\nexec {go_binary} "$@"\n',
    )
    return wrapper, runs, gate


async def fetch_zip(pipeline: Pipeline, module: str, version: str, sizes: list[int]) -> None:
    sizes.append((await pipeline.protocol.zip(module, version)).size)


async def fetch_mod(pipeline: Pipeline, module: str, version: str, sizes: list[int]) -> None:
    sizes.append(len(await pipeline.protocol.go_mod(module, version)))


def unreachable_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "athens_trio.singleflight"
        and record.levelno == logging.WARNING
        and "unreachable" in record.getMessage()
    ]


# ---------------------------------------------------------------------------------------
# Configuration: Athens' keys and variables
# ---------------------------------------------------------------------------------------


def test_athens_singleflight_keys_and_variables(tmp_path: Path) -> None:
    toml = tmp_path / "athens.toml"
    toml.write_text(
        'SingleFlightType = "redis-sentinel"\n'
        "[SingleFlight.Redis]\n"
        'Endpoint = "10.0.0.1:6379"\nPassword = "p"\n'
        "[SingleFlight.Redis.LockConfig]\nTTL = 20\nTimeout = 3\nMaxRetries = 4\n"
        "[SingleFlight.RedisSentinel]\n"
        'Endpoints = ["10.0.0.2:26379"]\nMasterName = "m"\nSentinelPassword = "s"\n'
        'RedisUsername = "u"\nRedisPassword = "rp"\nDB = 2\n'
        "[SingleFlight.Etcd]\n"  # Athens' other lock: read and ignored
        'Endpoints = "localhost:2379"\n'
    )
    config = load_config(toml, environ={})
    assert config.single_flight_type == "redis-sentinel"
    redis = config.single_flight.redis
    assert (redis.endpoint, redis.password) == ("10.0.0.1:6379", "p")
    assert (redis.lock_config.ttl, redis.lock_config.timeout) == (20, 3)
    assert redis.lock_config.max_retries == 4
    sentinel = config.single_flight.redis_sentinel
    assert (sentinel.endpoints, sentinel.master_name, sentinel.sentinel_password) == (
        ["10.0.0.2:26379"],
        "m",
        "s",
    )
    assert (sentinel.redis_username, sentinel.redis_password, sentinel.db) == ("u", "rp", 2)

    config = load_config(
        toml,
        environ={
            "ATHENS_SINGLE_FLIGHT_TYPE": "redis",
            "ATHENS_REDIS_ENDPOINT": "redis://h:7000/1",
            "ATHENS_REDIS_PASSWORD": "env",
            "ATHENS_REDIS_LOCK_TTL": "7",
            "ATHENS_REDIS_LOCK_TIMEOUT": "2",
            "ATHENS_REDIS_LOCK_MAX_RETRIES": "9",
            "ATHENS_REDIS_SENTINEL_ENDPOINTS": "a:1, b:2",
            "ATHENS_REDIS_SENTINEL_MASTER_NAME": "mm",
            "ATHENS_REDIS_SENTINEL_PASSWORD": "ss",
            "ATHENS_REDIS_USERNAME": "uu",
            "ATHENS_REDIS_SENTINEL_DB": "3",
        },
    )
    assert config.single_flight_type == "redis"
    redis = config.single_flight.redis
    assert (redis.endpoint, redis.password) == ("redis://h:7000/1", "env")
    sentinel = config.single_flight.redis_sentinel
    assert sentinel.endpoints == ["a:1", "b:2"]
    assert (sentinel.master_name, sentinel.sentinel_password) == ("mm", "ss")
    # As Athens: ATHENS_REDIS_PASSWORD is the sentinel master's password too.
    assert (sentinel.redis_username, sentinel.redis_password, sentinel.db) == ("uu", "env", 3)
    for lock in (redis.lock_config, sentinel.lock_config):
        assert (lock.ttl, lock.timeout, lock.max_retries) == (7, 2, 9)
    assert load_config(None, environ={}).single_flight_type == "memory"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"ATHENS_SINGLE_FLIGHT_TYPE": "etcd"}, "ATHENS_SINGLE_FLIGHT_TYPE"),
        ({"ATHENS_REDIS_LOCK_TTL": "0"}, "ATHENS_REDIS_LOCK_TTL"),
        ({"ATHENS_REDIS_LOCK_MAX_RETRIES": "many"}, "ATHENS_REDIS_LOCK_MAX_RETRIES"),
    ],
)
def test_a_bad_singleflight_value_names_its_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(None, environ=environ)


def test_a_bad_redis_endpoint_names_its_key() -> None:
    settings = LockSettings(ttl=30, timeout=15, max_retries=10)
    with pytest.raises(ConfigError, match=r"SingleFlight\.Redis\.Endpoint"):
        redis_client("no-port-here:x", "", settings)
    with pytest.raises(ConfigError, match=r"SingleFlight\.Redis\.Password"):
        redis_client("redis://:one@127.0.0.1:6379/0", "two", settings)
    with pytest.raises(ConfigError, match=r"SingleFlight\.RedisSentinel\.Endpoints"):
        sentinel_client([], "m", settings)
    client, where = redis_client("redis://:secret@127.0.0.1:6379/0", "", settings)
    client.close()
    assert "secret" not in where


# ---------------------------------------------------------------------------------------
# Two replicas, one Redis
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_herd_on_two_replicas_runs_go_once_per_version_and_part(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, redis_server: RedisServer
) -> None:
    wrapper, runs = counting_go(tmp_path, go_binary)
    config = redis_config(tmp_path, str(wrapper), go_fixtures, redis_server.endpoint)
    module = go_fixtures.hello
    zips: list[int] = []
    mods: list[int] = []
    async with replicas(config) as pipelines:
        async with trio.open_nursery() as nursery:
            for i in range(30):
                pipeline = pipelines[i % 2]
                nursery.start_soon(fetch_zip, pipeline, module, V1, zips)
                nursery.start_soon(fetch_mod, pipeline, module, V2, mods)
        statistics = stats(pipelines)
    assert len(zips) == len(mods) == 30
    assert len(set(zips)) == len(set(mods)) == 1  # every client got the same bytes
    # One go run per version and part, not one each: V1's zip, V2's go.mod part (from a
    # VCS, a download of the whole version).
    assert go_downloads(runs, f"{module}@{V1}") == 1
    assert len(go_runs(runs)) == 2, go_runs(runs)
    assert sum(s.acquired for s in statistics) >= 2  # a lock per (version, part)
    assert sum(s.waited for s in statistics) >= 1  # a replica waited for the other
    assert all(s.fallbacks == 0 and s.reachable for s in statistics)
    assert all(s.held == s.waiting == 0 for s in statistics)


@pytest.mark.slow
async def test_a_version_that_does_not_exist_is_a_404_on_every_replica_from_one_go_run(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, redis_server: RedisServer
) -> None:
    wrapper, runs, gate = gated_go(tmp_path, go_binary)
    config = redis_config(tmp_path, str(wrapper), go_fixtures, redis_server.endpoint)
    missing: list[str] = []

    async def info(pipeline: Pipeline) -> None:
        with pytest.raises(NotFoundError):
            await pipeline.protocol.info(go_fixtures.hello, "v1.9.9")
        missing.append("404")

    async with replicas(config) as pipelines:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(info, pipelines[i % 2])
            await wait_until(lambda: one_holds_one_waits(pipelines))
            gate.touch()
        statistics = stats(pipelines)
    assert len(missing) == 10
    assert len(go_runs(runs)) == 1, go_runs(runs)
    assert sum(s.woken for s in statistics) == 1


@pytest.mark.slow
async def test_a_fetch_longer_than_ttl_times_max_retries_is_still_fetched_once(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, redis_server: RedisServer
) -> None:
    # gomods/athens#1972: Athens' waiters give up after MaxRetries; ours wait for a
    # holder that keeps refreshing its lease, however long its fetch takes.
    wrapper, runs, gate = gated_go(tmp_path, go_binary)
    config = redis_config(
        tmp_path, str(wrapper), go_fixtures, redis_server.endpoint, ttl=1, max_retries=2
    )
    module = go_fixtures.hello
    sizes: list[int] = []
    async with replicas(config) as pipelines:
        async with trio.open_nursery() as nursery:
            for pipeline in pipelines:
                nursery.start_soon(fetch_zip, pipeline, module, V1, sizes)
            await wait_until(lambda: one_holds_one_waits(pipelines))
            # The waiter looks at the lock every TTL/4: 12 looks is 3 s, past TTL x MaxRetries.
            await wait_until(lambda: max(s.lock_checks for s in stats(pipelines)) >= 12, 60)
            gate.touch()
        statistics = stats(pipelines)
    assert len(sizes) == 2
    assert sizes[0] == sizes[1]
    assert go_downloads(runs) == 1
    assert sum(s.takeovers for s in statistics) == 0
    assert sum(s.woken for s in statistics) == 1  # the holder's message, not a poll


@pytest.mark.slow
async def test_a_dead_holders_lock_is_taken_over_within_its_ttl(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, redis_server: RedisServer
) -> None:
    wrapper, runs = counting_go(tmp_path, go_binary)
    config = redis_config(tmp_path, str(wrapper), go_fixtures, redis_server.endpoint, ttl=1)
    module = go_fixtures.hello
    marker = tmp_path / "holding"
    holder = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "tests.redisfixtures",
            "hold",
            redis_server.endpoint,
            module,
            V1,
            str(marker),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        await wait_until(marker.exists, 60)
        sizes: list[int] = []
        async with replicas(config, 1) as pipelines:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch_zip, pipelines[0], module, V1, sizes)
                # Waiting on a live holder that refreshes its lease...
                await wait_until(lambda: stats(pipelines)[0].lock_checks >= 8, 60)
                assert stats(pipelines)[0].waiting == 1
                holder.kill()  # ...until it dies, lease and all
                await holder.wait()
                died = trio.current_time()
            took = trio.current_time() - died
            statistics = stats(pipelines)[0]
    finally:
        holder.kill()
        with trio.CancelScope(shield=True):
            await holder.wait()
    assert len(sizes) == 1
    assert statistics.takeovers == 1
    assert go_downloads(runs) == 1
    assert took < 30, took  # TTL (1 s) and a poll, plus the fetch


@pytest.mark.slow
async def test_redis_stopped_mid_fetch_fails_no_request(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="athens_trio.singleflight")
    wrapper, runs, gate = gated_go(tmp_path, go_binary)
    config = redis_config(tmp_path, str(wrapper), go_fixtures, redis_server.endpoint)
    module = go_fixtures.hello
    sizes: list[int] = []
    async with replicas(config) as pipelines:
        async with trio.open_nursery() as nursery:
            for pipeline in pipelines:
                nursery.start_soon(fetch_zip, pipeline, module, V1, sizes)
            await wait_until(lambda: one_holds_one_waits(pipelines))
            redis_server.stop()
            # The waiter's next look at the lock fails: it fetches on its own.
            await wait_until(lambda: sum(s.fallbacks for s in stats(pipelines)) >= 1)
            gate.touch()
        # Later requests, Redis still gone: served, with no warning more.
        for pipeline in pipelines:
            for _ in range(3):
                await fetch_mod(pipeline, module, V2, sizes)
        statistics = stats(pipelines)
    assert len(sizes) == 2 + 6
    assert not any(s.reachable for s in statistics)
    # One warning per replica for the whole outage.
    assert 1 <= len(unreachable_warnings(caplog)) <= 2, caplog.text
    assert 1 <= go_downloads(runs, f"{module}@{V1}") <= 2  # each replica on its own, at worst


@pytest.mark.slow
async def test_an_unreachable_redis_at_start_is_a_warning_not_a_failure(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="athens_trio.singleflight")
    wrapper, runs = counting_go(tmp_path, go_binary)
    config = redis_config(tmp_path, str(wrapper), go_fixtures, f"127.0.0.1:{free_port()}")
    module = go_fixtures.hello
    sizes: list[int] = []
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
    assert len(unreachable_warnings(caplog)) == 1, caplog.text


@pytest.mark.slow
async def test_a_redis_that_never_answers_costs_one_deadline_not_a_hang(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="athens_trio.singleflight")
    wrapper, runs = counting_go(tmp_path, go_binary)
    # Connections are taken (the kernel's backlog) and never answered.
    silent = trio.socket.socket()
    await silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    host, port = silent.getsockname()
    config = make_config(
        tmp_path,
        str(wrapper),
        go_fixtures,
        single_flight_type="redis",
        single_flight=SingleFlightConfig(
            redis=RedisSingleFlightConfig(
                endpoint=f"{host}:{port}",
                lock_config=RedisLockConfig(ttl=30, timeout=1, max_retries=10),
            )
        ),
    )
    sizes: list[int] = []
    with silent:
        async with replicas(config, 1, subscribed=False) as pipelines:
            with trio.fail_after(30):  # the fetch, plus one deadline (1 s)
                await fetch_zip(pipelines[0], go_fixtures.hello, V1, sizes)
            statistics = stats(pipelines)[0]
    assert len(sizes) == 1
    assert go_downloads(runs) == 1
    assert statistics.fallbacks == 1
    assert len(unreachable_warnings(caplog)) == 1, caplog.text


@pytest.mark.slow
async def test_after_an_outage_replicas_share_fetches_again(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="athens_trio.singleflight")
    wrapper, runs = counting_go(tmp_path, go_binary)
    config = redis_config(tmp_path, str(wrapper), go_fixtures, redis_server.endpoint)
    module = go_fixtures.hello
    sizes: list[int] = []
    async with replicas(config) as pipelines:
        redis_server.stop()
        # The listeners notice first; requests then go local without asking Redis.
        await wait_until(lambda: not any(s.reachable for s in stats(pipelines)))
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(fetch_zip, pipelines[i % 2], module, V1, sizes)
        during = go_downloads(runs)
        redis_server.restart()
        await wait_until(lambda: all(s.reachable for s in stats(pipelines)))
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(fetch_zip, pipelines[i % 2], module, V2, sizes)
    assert len(sizes) == 20
    assert 1 <= during <= 2  # one per replica at most, while Redis was away
    assert go_downloads(runs) == during + 1  # one across both, once it was back
    assert len(unreachable_warnings(caplog)) == 2, caplog.text  # once per replica
    again = [
        r for r in caplog.records if r.levelno == logging.INFO and "answers again" in r.getMessage()
    ]
    assert len(again) == 2, caplog.text


# ---------------------------------------------------------------------------------------
# Redis Sentinel
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_herd_on_two_replicas_through_a_sentinel_runs_go_once(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, redis_server: RedisServer
) -> None:
    wrapper, runs = counting_go(tmp_path, go_binary)
    with start_sentinel(tmp_path / "sentinel", redis_server) as sentinel:
        config = make_config(
            tmp_path,
            str(wrapper),
            go_fixtures,
            single_flight_type="redis-sentinel",
            single_flight=SingleFlightConfig(
                redis_sentinel=RedisSentinelSingleFlightConfig(
                    endpoints=[sentinel.endpoint],
                    master_name=MASTER_NAME,
                    lock_config=RedisLockConfig(ttl=5, timeout=5, max_retries=10),
                )
            ),
        )
        module = go_fixtures.hello
        sizes: list[int] = []
        async with replicas(config) as pipelines:
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(fetch_zip, pipelines[i % 2], module, V1, sizes)
            statistics = stats(pipelines)
    assert len(sizes) == 20
    assert len(set(sizes)) == 1
    assert go_downloads(runs) == 1
    assert sum(s.acquired for s in statistics) == 1
    assert all(s.fallbacks == 0 and s.reachable for s in statistics)


# ---------------------------------------------------------------------------------------
# athens-trio processes, configured by Athens' variables
# ---------------------------------------------------------------------------------------


def replica_env(
    tmp_path: Path, name: str, go: Path, fixtures: GoFixtures, redis: RedisServer, **extra: str
) -> dict[str, str]:
    goget = tmp_path / f"goget-{name}"
    goget.mkdir()
    return child_env(
        tmp_path,
        ATHENS_STORAGE_TYPE="disk",
        ATHENS_DISK_STORAGE_ROOT=str(tmp_path / "shared-storage"),
        ATHENS_GOGET_DIR=str(goget),
        ATHENS_GO_BINARY_PATH=str(go),
        ATHENS_GO_BINARY_ENV_VARS=fixture_env_vars(fixtures),
        ATHENS_SINGLE_FLIGHT_TYPE="redis",
        ATHENS_REDIS_ENDPOINT=redis.endpoint,
        **extra,
    )


@pytest.mark.slow
async def test_three_processes_thirty_clients_one_go_run(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, redis_server: RedisServer
) -> None:
    wrapper, runs = counting_go(tmp_path, go_binary)
    path = f"/{go_fixtures.hello}/@v/{V1}.zip"
    bodies: list[bytes] = []
    async with contextlib.AsyncExitStack() as stack:
        children = [
            await stack.enter_async_context(
                child_server(
                    tmp_path,
                    name,
                    replica_env(tmp_path, name, wrapper, go_fixtures, redis_server),
                )
            )
            for name in ("a", "b", "c")
        ]

        async def get(url: str) -> None:
            async with httpx.AsyncClient(base_url=url) as http:
                answer = await http.get(path, timeout=120)
                assert answer.status_code == 200, answer.text
                bodies.append(answer.content)

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(get, children[i % 3].url)
    assert len(bodies) == 30
    assert len(set(bodies)) == 1
    assert go_downloads(runs) == 1


@pytest.mark.slow
async def test_a_process_killed_holding_the_lock_is_taken_over(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, redis_server: RedisServer
) -> None:
    # a's go is the real one (athens-trio asks it its version at start) but hangs
    # fetching, with a child, as go with git.
    pids = tmp_path / "pids"
    hangs = go_script(
        tmp_path,
        "hangs-fetching-go",
        f'case " $* " in *" mod download "*)\n'
        f"  echo $$ >> {pids}; sleep 1000 & wait;;\n"
        f'esac\nexec {go_binary} "$@"\n',
    )
    wrapper, runs = counting_go(tmp_path, go_binary)
    path = f"/{go_fixtures.hello}/@v/{V1}.zip"
    ttl = {"ATHENS_REDIS_LOCK_TTL": "1"}
    async with (
        child_server(
            tmp_path, "a", replica_env(tmp_path, "a", hangs, go_fixtures, redis_server, **ttl)
        ) as holder,
        child_server(
            tmp_path, "b", replica_env(tmp_path, "b", wrapper, go_fixtures, redis_server, **ttl)
        ) as other,
        httpx.AsyncClient() as http,
    ):
        answers: list[httpx.Response] = []

        async def get(url: str) -> None:
            with contextlib.suppress(httpx.HTTPError):  # a's client loses its server
                answers.append(await http.get(url + path, timeout=120))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(get, holder.url)
            go_pid = (await wait_for_pids(pids, 1))[0]  # a holds the lock
            nursery.start_soon(get, other.url)
            holder.process.kill()  # lease and all: nothing releases the lock
            await holder.process.wait()
            for pid in session_processes(go_pid):  # its orphaned go, for tidiness
                os.kill(pid, signal.SIGKILL)
            died = trio.current_time()
    took = trio.current_time() - died
    assert [answer.status_code for answer in answers] == [200], [a.text for a in answers]
    assert go_downloads(runs) == 1  # b's go, after the lease (1 s) ran out
    assert took < 60, took
