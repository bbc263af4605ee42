"""Scenario ``replicas``: athens-trio replicas sharing an S3 bucket and a Redis.

Two athens-trio processes (one worker each) run with ``StorageType = "s3"`` on one bucket
of a real S3 server on loopback, and ``SingleFlightType = "redis"`` on one redis-server:
the "Run several replicas" setup of the README.  Each configuration is measured with the
very same load, made by two load generators at once (wrk, one thread each, or the httpx
generator), so that only where the load goes changes:

- **1 replica**: both generators on replica 1 (replica 2 runs, idle);
- **2 replicas**: one generator on each (the clients split, as a load balancer would).

Cached: the ``.info`` and ``.mod`` of versions stored in the bucket beforehand, requests
per second of both generators together (all requests over the longer one's time).  Cold:
a herd of clients (split over the replicas the same way) asks for one version nobody has
fetched, its ``.info``, ``.mod`` and ``.zip`` in turn; the replicas' go is one counting
wrapper, so the go runs per version across the replicas are counted: one (from a VCS
a go.mod miss fetches the whole version, which the .zip then finds stored), whatever
the replica asked.

The S3 server is versitygw (its posix gateway, which checks signatures), as the test
suite builds it (``python -m tests.s3fixtures build``; a full run builds it when it is
missing); ``--quick`` falls back to moto's server where it is not built.  Redis is
Debian's redis-server.  Both are started by the test suite's fixtures' own functions
(``tests/s3fixtures.py``, ``tests/redisfixtures.py``), so this scenario needs the test
extra (moto, pytest) as well as the bench one.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import trio

from ._context import Context, version_paths
from ._fixtures import OWNER, StoredVersion, Tag, make_repo, store_version
from ._herd import count_runs, write_counting_go
from ._load import BurstResult, LoadResult, burst
from ._results import Row, ScenarioResult, ratio
from ._server import Server, ServerError, _clean_environ, _serve, free_port, started_together
from ._sizes import KIB

if TYPE_CHECKING:
    from tests.redisfixtures import RedisServer
    from tests.s3fixtures import S3Server

__all__ = ["ONE_REPLICA", "TWO_REPLICAS", "run_replicas", "split"]

ONE_REPLICA = "1 replica"
TWO_REPLICAS = "2 replicas"
_T = TypeVar("_T")


def split(total: int, ways: int) -> list[int]:
    """``total`` clients dealt over ``ways`` generators as evenly as they go."""
    return [total // ways + (index < total % ways) for index in range(ways)]


def _fixture_call(function: Callable[..., _T], *args: object) -> _T:
    """Call a test fixture's function; its ``pytest.fail`` (a missing server, with the
    line that installs it) becomes a :class:`ServerError` the runner records."""
    import pytest

    try:
        return function(*args)
    except pytest.fail.Exception as exc:
        raise ServerError(str(exc)) from None


@dataclass
class _Shared:
    """What the replicas share: a bucket on an S3 server, and a Redis."""

    s3: S3Server
    s3_label: str
    bucket: str
    redis: RedisServer

    def replica_env(self) -> dict[str, str]:
        from tests.s3fixtures import REGION

        return {
            "ATHENS_STORAGE_TYPE": "s3",
            "ATHENS_S3_BUCKET_NAME": self.bucket,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.s3.key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret,
            "AWS_ENDPOINT": self.s3.endpoint,
            "AWS_FORCE_PATH_STYLE": "true",
            "ATHENS_SINGLE_FLIGHT_TYPE": "redis",
            "ATHENS_REDIS_ENDPOINT": self.redis.endpoint,
        }


@contextlib.asynccontextmanager
async def _s3_server(ctx: Context, directory: Path) -> AsyncIterator[tuple[S3Server, str]]:
    """versitygw (built unless ``--quick``), else moto's server in ``--quick``."""
    import secrets

    from tests.s3fixtures import (
        VERSITYGW_VERSION,
        S3Server,
        build_versitygw,
        start_s3_server,
        stop_s3_server,
        versitygw_binary,
    )

    binary = versitygw_binary()
    if not binary.exists() and not ctx.quick:
        print(f"bench: building versitygw {VERSITYGW_VERSION} into {binary}", flush=True)
        binary = await trio.to_thread.run_sync(build_versitygw, ctx.tools.go)
    if binary.exists():
        key, secret = "athens-bench-key", secrets.token_hex(16)
        port = free_port()
        root = directory / "versitygw"
        root.mkdir(parents=True, exist_ok=True)
        async with _serve(
            "versitygw",
            [str(binary), "--port", f"127.0.0.1:{port}", "posix", str(root)],
            port=port,
            env={**_clean_environ(), "ROOT_ACCESS_KEY": key, "ROOT_SECRET_KEY": secret},
            log=directory / "versitygw.log",
            ready_path="/",
            need_ok=False,  # it answers 403 to an unsigned request: it is up
        ) as server:
            yield S3Server(server.url, key, secret), f"versitygw {VERSITYGW_VERSION} (posix)"
        return
    process, s3 = await trio.to_thread.run_sync(
        lambda: _fixture_call(lambda: start_s3_server(check_signatures=False))
    )
    try:
        yield s3, "moto's S3 server (STAND-IN: versitygw not built)"
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(stop_s3_server, process)


@contextlib.asynccontextmanager
async def _shared(ctx: Context, directory: Path) -> AsyncIterator[_Shared]:
    from tests.redisfixtures import start_redis

    async with _s3_server(ctx, directory) as (s3, label):
        bucket = await trio.to_thread.run_sync(s3.create_bucket)
        with contextlib.ExitStack() as stack:
            try:
                redis = await trio.to_thread.run_sync(
                    _fixture_call, stack.enter_context, start_redis(directory / "redis")
                )
                yield _Shared(s3, label, bucket, redis)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(stack.close)


async def _fill_bucket(
    shared: _Shared, count: int, scratch: Path, limit: int = 8
) -> list[StoredVersion]:
    """``count`` small versions saved into the bucket (athens-trio's own S3Storage)."""
    storage = shared.s3.storage(shared.bucket)
    module = f"github.com/{OWNER}/replicas-cached"
    stored: dict[int, StoredVersion] = {}
    limiter = trio.CapacityLimiter(limit)

    async def save(index: int) -> None:
        async with limiter:
            stored[index] = await store_version(storage, module, f"v1.0.{index}", 2 * KIB, scratch)

    try:
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(save, index)
    finally:
        with trio.CancelScope(shield=True):
            await storage.aclose()
    return [stored[index] for index in range(count)]


async def _split_load(
    ctx: Context, targets: Sequence[Server], paths: list[str], concurrency: int, workdir: Path
) -> tuple[float, dict[str, object]]:
    """One generator per target at once, ``concurrency`` clients dealt over them; the
    requests per second of all (every request over the longer generator's time)."""
    runs: list[LoadResult] = []
    per_generator = ctx.sizes.load_requests // len(targets)

    async def generate(index: int, server: Server, clients: int) -> None:
        where = workdir / f"load-{index}"
        where.mkdir(parents=True, exist_ok=True)
        runs.append(
            await ctx.load(
                server, paths, concurrency=clients, workdir=where, max_requests=per_generator
            )
        )

    async with trio.open_nursery() as nursery:
        for index, (server, clients) in enumerate(
            zip(targets, split(concurrency, len(targets)), strict=True)
        ):
            if clients:
                nursery.start_soon(generate, index, server, clients)
    requests = sum(run.requests for run in runs)
    seconds = max(run.seconds for run in runs)
    details: dict[str, object] = {
        "requests": requests,
        "errors": sum(run.errors for run in runs),
        "seconds": round(seconds, 4),
        "generators": [run.details() for run in runs],
    }
    return (requests / seconds if seconds > 0 else 0.0), details


async def _split_burst(
    targets: Sequence[Server],
    sequence: list[str],
    clients: int,
    timeout: float,  # noqa: ASYNC109 - a bound per request, as burst's
) -> BurstResult:
    """A herd of ``clients`` dealt over ``targets``, released together."""
    parts: list[BurstResult] = []

    async def herd(server: Server, count: int) -> None:
        parts.append(await burst(server.url, sequence, clients=count, timeout=timeout))

    async with trio.open_nursery() as nursery:
        for server, count in zip(targets, split(clients, len(targets)), strict=True):
            if count:
                nursery.start_soon(herd, server, count)
    return BurstResult(
        clients=clients,
        ok=sum(part.ok for part in parts),
        errors=sum(part.errors for part in parts),
        bytes=sum(part.bytes for part in parts),
        seconds=max(part.seconds for part in parts),
        first_seconds=max(part.first_seconds for part in parts),
        error_samples=[sample for part in parts for sample in part.error_samples],
    )


async def run_replicas(ctx: Context, result: ScenarioResult) -> None:
    sizes = ctx.sizes
    directory = ctx.scenario_dir("replicas")
    scratch = directory / "scratch"
    scratch.mkdir(exist_ok=True)
    log = directory / "go-runs.log"
    wrapper = write_counting_go(directory / "go-counting", ctx.tools.go, log)
    herd_modules = {
        config: [
            await trio.to_thread.run_sync(
                make_repo,
                ctx.go_env,
                f"replicas-herd-{config.split()[0]}-{index}",
                [Tag("v1.0.0", padding=200_000)],
            )
            for index in range(sizes.replicas_herd_versions)
        ]
        for config in (ONE_REPLICA, TWO_REPLICAS)
    }
    result.params.update(
        {
            "versions": sizes.replicas_versions,
            "concurrency": list(sizes.replicas_concurrency),
            "herd_clients": sizes.replicas_herd_clients,
            "herd_versions": sizes.replicas_herd_versions,
            "max_requests_per_run": sizes.load_requests,
            "max_seconds_per_run": sizes.load_seconds,
            "settings": "StorageType=s3, SingleFlightType=redis, Workers=1 per replica",
        }
    )

    async with _shared(ctx, directory) as shared:
        result.reference = (
            f"one replica of two sharing a bucket on {shared.s3_label} and a redis-server; "
            f"load: {ctx.load_label} x2 (the clients split over two generators)"
        )
        small = await _fill_bucket(shared, sizes.replicas_versions, scratch)
        paths = [p for v in small for p in version_paths(v, ("info", "mod"))]
        env = shared.replica_env()
        # Their disk root (``directory``) goes unused: StorageType is s3.
        replicas = [
            ctx.athens_trio(
                directory / f"replica-{n}", directory, str(wrapper), env=env, name=f"replica {n}"
            )
            for n in (1, 2)
        ]
        async with started_together(replicas) as (first, second):
            configs: dict[str, list[Server]] = {
                ONE_REPLICA: [first, first],
                TWO_REPLICAS: [first, second],
            }
            for server in (first, second):  # warm: imports, connections, the file cache
                await ctx.load(
                    server, paths, concurrency=2, workdir=directory, max_requests=2 * len(paths)
                )
            flip = False
            for concurrency in sizes.replicas_concurrency:
                values: dict[str, float | None] = {}
                details: dict[str, object] = {}
                for config in reversed(configs) if flip else configs:
                    values[config], details[config] = await _split_load(
                        ctx, configs[config], paths, concurrency, directory
                    )
                flip = not flip
                result.add(
                    Row(
                        case=f".info+.mod, {concurrency} clients split",
                        metric="req/s",
                        values={config: values[config] for config in configs},
                        ratio_name=f"{TWO_REPLICAS} / {ONE_REPLICA}",
                        ratio=ratio(values[TWO_REPLICAS], values[ONE_REPLICA]),
                        better="higher",
                        details=details,
                    )
                )
                for config, detail in details.items():
                    if isinstance(detail, dict) and detail["errors"]:
                        result.notes.append(
                            f"{config}: {detail['errors']} errors at {concurrency} clients"
                        )

            herds: dict[str, list[BurstResult]] = {config: [] for config in configs}
            timeout = float(sizes.stash_timeout + 30)
            for index in range(sizes.replicas_herd_versions):
                for config in reversed(configs) if index % 2 else configs:
                    module = herd_modules[config][index]
                    sequence = [
                        f"/{module}/@v/v1.0.0.{suffix}" for suffix in ("info", "mod", "zip")
                    ]
                    herds[config].append(
                        await _split_burst(
                            configs[config], sequence, sizes.replicas_herd_clients, timeout
                        )
                    )
    _herd_rows(
        result, herds, {c: [count_runs(log, m) for m in ms] for c, ms in herd_modules.items()}
    )


def _herd_rows(
    result: ScenarioResult,
    herds: dict[str, list[BurstResult]],
    runs: dict[str, list[int]],
) -> None:
    clients = next(iter(herds.values()))[0].clients
    versions = len(next(iter(herds.values())))
    case = f"cold herd, {clients} clients split, .info+.mod+.zip"
    if versions > 1:
        case += f" (median of {versions} versions)"
    for metric, attribute in (("s", "seconds"), ("s to .info", "first_seconds")):
        values: dict[str, float | None] = {
            config: statistics.median(getattr(run, attribute) for run in herd)
            for config, herd in herds.items()
        }
        result.add(
            Row(
                case=case,
                metric=metric,
                values=values,
                ratio_name=f"{TWO_REPLICAS} / {ONE_REPLICA}",
                ratio=ratio(values[TWO_REPLICAS], values[ONE_REPLICA]),
                better="lower",
                details={config: [run.details() for run in herd] for config, herd in herds.items()},
            )
        )
    result.add(
        Row(
            case="cold herd, go runs fetching each version (want 1)",
            metric="go runs",
            values={config: max(per) for config, per in runs.items()},
            details={"per_version": runs},
        )
    )
    result.add(
        Row(
            case="cold herd, failed clients",
            metric="errors",
            values={config: sum(run.errors for run in herd) for config, herd in herds.items()},
        )
    )
    for config, per in runs.items():
        for index, count in enumerate(per):
            if count != 1:
                result.notes.append(
                    f"{config}, version {index + 1}: go fetched it {count} times (want 1)"
                )
    for config, herd in herds.items():
        for run in herd:
            if run.errors:
                result.notes.append(
                    f"{config}: {run.errors} of {run.clients} clients failed,"
                    f" e.g. {run.error_samples[:2]}"
                )
