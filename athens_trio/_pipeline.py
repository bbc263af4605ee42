"""The pipeline: every component wired together, living in one nursery.

This is the one place that turns the config into components: each component takes
the values it needs, and the wrappers (pool, single-flight, the validator hook, the
filter) are chosen here from the config.

``open_pipeline(config)`` is an async context manager.  Inside it the pipeline's
nursery runs the shared work (single-flight stashes), so a caller that goes away
cancels nothing others wait for; leaving the block cancels that work, which kills the
go process groups and removes their temporary directories.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio

from . import download, stash, upstream
from ._config import Config, StorageType
from ._ownership import remove_if_empty
from ._redact import redact_url
from ._sumdb import SumDBProxy
from .download import DownloadProtocol
from .ops._activity import LAST_SERVED_DIR, Activity, LastServed
from .prefetch import Prefetcher, with_prefetch
from .storage import Backend, DiskStorage, MemoryStorage, with_integrity
from .sumdb import SumDBClient, settings_from_env
from .upstream import (
    Fetcher,
    GoFetcher,
    GoLister,
    GoProcessRunner,
    GoproxyClient,
    Lister,
    PooledLister,
    ProxyFetcher,
    ProxyLister,
    ProxyPlan,
    SumCheck,
    Toolchains,
    plan_from_env,
    private_home,
    read_netrc,
    sumdb_locator,
)

#: Where, under a disk storage's root, the checksum database client keeps the newest tree
#: it verified (a leading dot: no module path element has one, and storage skips it).
SUMDB_STATE_DIR = ".sumdb"

#: Seconds for the pipeline's own HTTP calls (the validator hook, checksum databases).
HTTP_TIMEOUT = 30.0

__all__ = ["Pipeline", "go_env", "go_runner", "open_pipeline", "storage_from_config"]

if TYPE_CHECKING:
    from .storage._s3client import Bucket, CredentialSource

log = logging.getLogger("athens_trio.pipeline")


@dataclass(frozen=True)
class Pipeline:
    """The opened components; :attr:`protocol` is what a GOPROXY serves."""

    config: Config
    storage: Backend
    protocol: DownloadProtocol
    #: The parts whose statistics() the metrics read: the fetches (inside the stasher),
    #: the single-flight, the GoGetWorkers pool, the ProtocolWorkers pool and the
    #: protocol's storage lookups.
    fetches: stash.FetchAndSave
    singleflight: stash.SingleFlight
    stash_pool: stash.Pool
    protocol_pool: download.Pool
    lookups: download.StorageFirst
    #: The checksum database proxy over ``SumDBs`` (None if there are none).
    sumdb: SumDBProxy | None = None
    #: The lock shared by replicas (``SingleFlightType`` redis, redis-sentinel or s3),
    #: or None (memory).
    distributed_lock: stash.DistributedLock[Any] | None = None
    #: Where shared and background work runs (single-flight fetches, admin jobs).
    nursery: trio.Nursery | None = None
    #: When each version was last served, and the recent failures (ops/_activity).
    activity: Activity | None = None
    #: The prefetcher (None while PrefetchWorkers is 0).
    prefetcher: Prefetcher | None = None
    #: The filter's verdict on a version (None without a FilterFile): the server's fast
    #: path for stored files asks it as the protocol's filter wrapper does.
    filter_check: download.FilterCheck | None = None
    #: The root of a disk storage's tree (None for other storage).
    storage_root: Path | None = None

    @property
    def machine_root(self) -> Path:
        """Where the workers of this machine share lock and status files (under its
        ``.locks``): beside a disk tree, else in GoGetDir."""
        return machine_root(self.config, self.storage_root)


def machine_root(config: Config, storage_root: Path | None) -> Path:
    """See :attr:`Pipeline.machine_root`."""
    return storage_root or config.go_get_root / "athens-trio-locks"


def _s3_bucket(config: Config) -> tuple[Bucket, CredentialSource]:
    """``[Storage.S3]``'s bucket and credentials (S3 storage's, and the s3 lock's)."""
    # Imported here: botocore is loaded only by those who use S3.
    from .storage._s3 import Bucket, CredentialSource

    s3 = config.storage.s3
    return Bucket(s3.bucket, s3.region, s3.endpoint, s3.force_path_style), CredentialSource(
        key=s3.key,
        secret=s3.secret,
        token=s3.token,
        use_default_configuration=s3.use_default_configuration,
        credentials_endpoint=s3.credentials_endpoint,
        container_relative_uri=s3.aws_container_credentials_relative_uri,
    )


def _s3_storage(config: Config) -> Backend:
    from .storage._s3 import S3Storage

    s3 = config.storage.s3
    return S3Storage(
        *_s3_bucket(config),
        prefix=s3.prefix,
        redirect_expiry=s3.redirect_expiry if s3.redirect_zips else None,
    )


#: StorageType → its backend, built from the ``[Storage]`` section.
_STORAGE: Mapping[StorageType, Callable[[Config], Backend]] = {
    "memory": lambda config: MemoryStorage(),
    "disk": lambda config: DiskStorage(config.disk_root),
    "s3": _s3_storage,
}


def storage_from_config(config: Config) -> Backend:
    """The backend ``StorageType`` names (not yet ready: see :meth:`Backend.ready`)."""
    return _STORAGE[config.storage_type](config)


def go_env(config: Config) -> dict[str, str]:
    """The environment go gets on top of the passed-through variables; what the upstream
    proxies and the checksum database are read from too."""
    env = config.go_env_overrides()
    # As Athens: NoSumPatterns reach go as GONOSUMDB unless GoBinaryEnvVars set it.
    if config.no_sum_patterns and "GONOSUMDB" not in env:
        env["GONOSUMDB"] = ",".join(config.no_sum_patterns)
    return env


def go_runner(
    config: Config,
    environ: Mapping[str, str] | None = None,
    *,
    home: Path | None = None,
    direct: bool = False,
    temp_root: Path | None = None,
) -> GoProcessRunner:
    """The go runner for ``config``: GoBinary, GoBinaryEnvVars, GoGetDir, and the private
    ``home`` (see :func:`~athens_trio.upstream.private_home`); ``environ`` is what go's
    passed-through variables come from (default: ours).  ``direct`` runs go with
    ``GOPROXY=direct``: for what the upstream proxies hand over to go.  ``temp_root`` is
    where the temporary GOPATHs go (default: GoGetDir as given, else the system temp)."""
    env = go_env(config)
    if direct:
        env["GOPROXY"] = "direct"
    return GoProcessRunner(
        config.go_binary,
        env=env,
        temp_root=temp_root or config.go_get_dir or None,
        home=home,
        environ=environ,
        max_bytes=config.max_fetch_bytes or None,
    )


def go_toolchains(config: Config, runner: GoProcessRunner) -> Toolchains | None:
    """Where GoFetcher gets a newer go for a module that needs one (GoToolchainSwitch,
    GoToolchainDir, GoToolchainProxy); None when switched off."""
    if not config.go_toolchain_switch:
        return None
    directory = config.go_toolchain_dir or os.path.join(
        config.go_get_root, "athens-trio-toolchains"
    )
    return Toolchains(
        runner, Path(directory), proxy=config.go_toolchain_proxy, timeout=config.stash_timeout
    )


def _upstream_client(
    config: Config, plan: ProxyPlan, http: httpx.AsyncClient, home: Path | None
) -> GoproxyClient | None:
    """The client of the upstream proxies GOPROXY names (None: it names none), with the
    logins of the .netrc go gets (NETRCPath, GithubToken): go sends them to https
    GOPROXYs too."""
    if not plan.has_proxies:
        return None
    netrc = home / ".netrc" if home is not None else None
    return GoproxyClient(
        plan,
        http,
        timeout=config.timeout,
        download_timeout=config.stash_timeout,
        netrc=read_netrc(netrc) if netrc is not None and netrc.exists() else None,
    )


def _upstream(
    config: Config,
    client: GoproxyClient | None,
    http: httpx.AsyncClient,
    home: Path | None,
    sumdb_state: Path | None,
    stack: contextlib.ExitStack | contextlib.AsyncExitStack,
    temp_root: Path,
) -> tuple[Fetcher, Lister]:
    """The fetcher and the lister: go alone (GOPROXY=direct, Athens' default), or the
    upstream proxies of ``client``, handing over to go (run with GOPROXY=direct) where
    the walk goes direct.  Their temporary files go in ``temp_root``."""
    if client is None:
        runner = go_runner(config, home=home, temp_root=temp_root)
        return (
            GoFetcher(
                runner, timeout=config.stash_timeout, toolchains=go_toolchains(config, runner)
            ),
            GoLister(runner, timeout=config.timeout),
        )
    runner = go_runner(config, home=home, direct=True, temp_root=temp_root)
    settings = settings_from_env(go_env(config))
    sumdb: SumDBClient | None = None
    if settings.database is not None:
        if sumdb_state is None:
            # Memory storage forgets the modules at exit; the tree it verified goes too.
            sumdb_state = Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="athens-sumdb-", dir=temp_root)
                )
            )
        # As go: through the GOPROXY list's proxy that serves the database, if any.
        sumdb = SumDBClient(
            settings, http, sumdb_state, timeout=HTTP_TIMEOUT, locate=sumdb_locator(client)
        )
    return (
        ProxyFetcher(
            client,
            GoFetcher(
                runner, timeout=config.stash_timeout, toolchains=go_toolchains(config, runner)
            ),
            SumCheck(sumdb),
            temp_root=temp_root,
        ),
        ProxyLister(client, GoLister(runner, timeout=config.timeout)),
    )


def _distributed_lock(
    config: Config, storage: Backend, nursery: trio.Nursery
) -> stash.DistributedLock[Any] | None:
    """The lock ``SingleFlightType`` names, on ``[SingleFlight.Redis]``,
    ``[SingleFlight.RedisSentinel]`` or ``[Storage.S3]``'s bucket (``[SingleFlight.S3]``);
    None for ``memory`` (this process alone)."""
    section = config.single_flight
    if config.single_flight_type == "redis":
        lock = section.redis.lock_config
        settings = stash.LockSettings(lock.ttl, lock.timeout, lock.max_retries)
        client, where = stash.redis_client(section.redis.endpoint, section.redis.password, settings)
        return stash.RedisLock(client, storage, nursery, settings, where=where)
    if config.single_flight_type == "redis-sentinel":
        sentinel = section.redis_sentinel
        lock = sentinel.lock_config
        settings = stash.LockSettings(lock.ttl, lock.timeout, lock.max_retries)
        client, where, close = stash.sentinel_client(
            sentinel.endpoints,
            sentinel.master_name,
            settings,
            sentinel_password=sentinel.sentinel_password,
            username=sentinel.redis_username,
            password=sentinel.redis_password,
            db=sentinel.db,
        )
        return stash.RedisLock(client, storage, nursery, settings, where=where, on_close=close)
    if config.single_flight_type == "s3":
        # Imported here: botocore is loaded only by those who use S3.
        from .stash._s3lock import S3Lock
        from .storage._s3client import S3Client

        s3 = section.s3
        settings = stash.LockSettings(s3.ttl, s3.timeout, s3.max_retries)
        bucket, credentials = _s3_bucket(config)
        # A client of its own, timed out by the lock's deadline, not storage's.
        s3_client = S3Client(bucket, credentials, timeout=settings.call_deadline)
        at = f"at {redact_url(bucket.endpoint)}" if bucket.endpoint else f"in {bucket.region}"
        return S3Lock(
            s3_client,
            storage,
            nursery,
            settings,
            prefix=config.storage.s3.prefix,
            name=f"S3 bucket {bucket.bucket} {at}",
        )
    return None


def _across_workers(
    root: Path, storage: Backend
) -> tuple[list[stash.Wrapper], list[stash.Wrapper]]:
    """The version lock when this process is one of several workers (on one machine:
    the lock files are local, whatever the storage): its wrappers inside the pool and
    outside it."""
    from .server._workers import VersionLock, in_worker  # the server imports us

    if not in_worker():
        return [], []
    lock = VersionLock(root, storage)
    return [lock.inside], [lock.outside]


async def _sweep(storage: Backend, go_get_root: Path) -> None:
    """Clear what killed saves and killed servers' fetches left behind, in the background
    (a big tree takes a while)."""
    try:
        removed = await storage.sweep()
        gone = await trio.to_thread.run_sync(
            upstream.sweep_run_dirs, go_get_root, abandon_on_cancel=True
        )
    except OSError as exc:
        log.warning("could not sweep storage or GoGetDir leftovers: %s", exc)
        return
    if removed:
        log.info("removed %d temporary files left by interrupted saves", removed)
    if gone:
        log.info("removed %d fetch directories left by servers that died", gone)


@contextlib.asynccontextmanager
async def open_pipeline(
    config: Config,
    *,
    storage: Backend | None = None,
    fetcher: Fetcher | None = None,
    lister: Lister | None = None,
    activity: Activity | None = None,
) -> AsyncIterator[Pipeline]:
    """Build the pipeline from ``config``; any component may be passed in instead."""
    # The policy files are read now, so a bad one stops the start with its key named.
    policy = download.load_download_policy(config.download_mode, config.download_url)
    module_filter = (
        download.ModuleFilter.from_file(config.filter_file) if config.filter_file else None
    )
    if storage is None:
        storage = storage_from_config(config)
    # The checksum database client's state lives with the modules it vouched for.
    storage_root = storage.root if isinstance(storage, DiskStorage) else None
    sumdb_state = storage_root / SUMDB_STATE_DIR if storage_root is not None else None
    if activity is None:
        # When each version was last served, kept beside the modules (retention reads it).
        activity = Activity(LastServed(storage_root / LAST_SERVED_DIR if storage_root else None))
    # Every read of a go.mod or a zip checked: damage raises, the protocol repairs.
    storage = with_integrity(storage)
    try:
        await storage.ready()
        async with contextlib.AsyncExitStack() as stack:
            # This server's own directory in GoGetDir: every temporary GOPATH and the
            # private home go in it, so nothing there outlives it (see _ownership).
            run_dir = await trio.to_thread.run_sync(upstream.claim_run_dir, config.go_get_root)
            if not config.go_get_dir and storage_root is not None:
                # The default place beside a disk tree: ours to make and to remove (the
                # system temp dir, the default for other storage, is not).
                stack.callback(remove_if_empty, config.go_get_root)
            # On the loop, not in a thread: a pipeline left by cancellation (a second
            # SIGTERM, "stop now") must still remove it, and a thread hop would be
            # cancelled before it started.  Its fetches' directories are gone by then.
            stack.callback(run_dir.release)
            home = stack.enter_context(
                private_home(
                    netrc_path=config.netrc_path,
                    hgrc_path=config.hgrc_path,
                    github_token=config.github_token,
                    parent=run_dir.path,
                )
            )
            # One HTTP client for what the pipeline asks over HTTP: the hook, the sumdbs,
            # the upstream proxies.
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=HTTP_TIMEOUT))
            plan = plan_from_env(go_env(config))
            upstream_client = _upstream_client(config, plan, http, home)
            if fetcher is None or lister is None:
                made = _upstream(
                    config, upstream_client, http, home, sumdb_state, stack, run_dir.path
                )
                fetcher = fetcher or made[0]
                lister = lister or made[1]
            policy_stash_wrappers: list[stash.Wrapper] = []
            if config.validator_hook:
                policy_stash_wrappers.append(stash.with_validator(config.validator_hook, http))
            sumdb: SumDBProxy | None = None
            if config.sum_dbs:
                # A database named by its own URL is reached as the fetcher reaches it:
                # through the GOPROXY list's proxy serving it, if one does.
                locate = sumdb_locator(upstream_client) if upstream_client else None
                sumdb = SumDBProxy(
                    config.sum_dbs,
                    config.no_sum_patterns,
                    http,
                    locate=locate,
                    timeout=HTTP_TIMEOUT,
                )
            policy_protocol_wrappers: list[download.ProtocolWrapper] = []
            filter_check: download.FilterCheck | None = None
            if module_filter is not None:
                filter_check = download.FilterCheck(module_filter, config.global_endpoint)
                policy_protocol_wrappers.append(download.with_filter(filter_check))

            # Closed once the nursery is done: its listener uses the connections.
            lock_closer = contextlib.AsyncExitStack()
            stack.push_async_exit(lock_closer)
            nursery = await stack.enter_async_context(trio.open_nursery())
            nursery.start_soon(_sweep, storage, config.go_get_root, name="sweep leftovers")
            nursery.start_soon(activity.last_served.run, name="flush last-served times")
            stash_pool = stash.with_pool(config.go_get_workers, queue=config.go_get_queue)
            protocol_pool = download.with_pool(config.protocol_workers, queue=config.protocol_queue)
            # A fetch nobody waits for any more is cancelled after the grace.
            singleflight = stash.with_singleflight(
                nursery, abandon_after=config.abandoned_fetch_grace
            )
            # Across replicas: inside the local single-flight (one shared lock per
            # replica per version), outside the hook and the pool (a waiter takes
            # no go worker, and only the lock's holder asks the hook).
            distributed_lock = _distributed_lock(config, storage, nursery)
            if distributed_lock is not None:
                lock_closer.push_async_callback(distributed_lock.aclose)
            fetches = stash.FetchAndSave(fetcher, storage)
            # Workers (server/_workers.py): one fetch per version across processes,
            # the lock taken inside the pool and waited for outside it.
            lock_inside, lock_outside = _across_workers(machine_root(config, storage_root), storage)
            stasher = stash.wrap(
                fetches,
                *lock_inside,
                stash_pool,
                *lock_outside,
                # The hook is asked once per fetch, without holding a go worker.
                *policy_stash_wrappers,
                *([distributed_lock] if distributed_lock is not None else []),
                singleflight,
            )
            resolutions = download.CachedLister(
                PooledLister(lister, stash_pool.limiter),
                nursery,
                ttl=config.list_cache_ttl,
                negative_ttl=download.negative_ttl_for(config.list_cache_ttl),
            )
            lookups = download.new(
                storage,
                stasher,
                resolutions,
                network_mode=config.network_mode,
                policy=policy,
                background=nursery,
                # The filter's version rules, on the version a query resolves to.
                version_check=filter_check,
                background_queue=config.background_fetch_queue,
                whole_for_go_mod=fetcher.whole_for_go_mod,
            )
            protocol = download.wrap(
                lookups,
                protocol_pool,
                # The filter answers first, before anything is looked up.
                *policy_protocol_wrappers,
                # Outermost: what was served (retention), what failed (/ui).
                activity.wrap,
            )
            prefetcher: Prefetcher | None = None
            if config.prefetch_workers:
                # Through the whole protocol (pool, filter, DownloadMode, the stasher's
                # hook and single-flight), in the gaps between clients' fetches.
                limiter = stash_pool.limiter
                prefetcher = Prefetcher(
                    protocol,
                    storage,
                    lambda: limiter.available_tokens > 0 and not limiter.statistics().tasks_waiting,
                    workers=config.prefetch_workers,
                    depth=config.prefetch_depth,
                )
                nursery.start_soon(prefetcher.run, name="prefetch")
                protocol = with_prefetch(prefetcher)(protocol)
            yield Pipeline(
                config,
                storage,
                protocol,
                fetches,
                singleflight,
                stash_pool,
                protocol_pool,
                lookups,
                sumdb,
                distributed_lock,
                nursery,
                activity,
                prefetcher=prefetcher,
                filter_check=filter_check,
                storage_root=storage_root,
            )
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await storage.aclose()
