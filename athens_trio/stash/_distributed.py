"""RedisLock: one stash per module@version and part across replicas sharing a Redis.

The local :class:`~athens_trio.stash.SingleFlight` stays outermost: a replica's
concurrent callers join one stash, and only that one stash goes through this lock, so
each replica asks Redis once per key, not once per request.

- **The lock** is a key per (module, version, part), set with ``SET NX PX`` to a random
  token.  Its lease is short (``TTL``) and refreshed every third of it while the stash
  runs, so a long fetch keeps it and a dead holder loses it within ``TTL``.  Only the
  holder's token deletes it (compare-and-delete in one Lua script).
- **Waiters** (the replicas that found the lock taken) wait as long as its holder lives:
  they are woken by a message on the key's channel when the holder ends (one pub/sub
  connection per replica, pattern-subscribed), and poll the lock every
  :attr:`LockSettings.poll` seconds in case a message was missed or the holder died.
  The lock gone, a waiter takes it and looks in storage first: the version the holder
  stored is served without a fetch.  No retry count ends a wait on a live holder;
  ``MaxRetries`` bounds only how many *dead* holders (expired locks) a waiter outlives.
- **Redis unreachable** (refused, timed out, failing over): the stash runs on the local
  single-flight alone, so no request fails or hangs for Redis; a warning is logged once
  per outage, Redis is left alone for :data:`OUTAGE_RETRY` seconds at a time, and an
  info line says when it answers again.  Every Redis call runs in a worker thread under
  a deadline (``Timeout``, at most half the lease).  Two replicas may then fetch one
  version at once; storage's create-if-absent writes keep that safe.

The client is redis-py's synchronous one, run in :func:`trio.to_thread.run_sync`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import redis.exceptions
import redis.sentinel
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._exceptions import ConfigError, NotFoundError
from ..storage import Backend
from ._stasher import Part, Stasher, is_stored

__all__ = [
    "OUTAGE_RETRY",
    "LockSettings",
    "RedisLock",
    "RedisLockStatistics",
    "redis_client",
    "sentinel_client",
]

log = logging.getLogger("athens_trio.singleflight")

T = TypeVar("T")

#: Seconds Redis is left alone after it failed (requests go local meanwhile), then tried.
OUTAGE_RETRY = 2.0
#: Seconds one wait of the listener thread for a message lasts (how long its
#: cancellation may take); a message is handed over as soon as it arrives.
LISTEN_WAIT = 0.25
#: Worker threads that may run Redis calls at once (the listener's is apart).
REDIS_THREADS = 16

_PREFIX = "athens-trio:singleflight:"
_LOCK_PREFIX = _PREFIX + "lock:"
_CHANNEL_PREFIX = _PREFIX + "done:"

#: What a holder publishes when it ends: the version is stored; it does not exist
#: (followed by ``:`` and go's words); or anything else (failed, cancelled): look again.
_STORED = "stored"
_NOT_FOUND = "not_found"
_RELEASED = "released"

# KEYS[1] the lock, ARGV[1] the token, ARGV[2] the lease in ms.
_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] the lock, KEYS[2] its channel, ARGV[1] the token, ARGV[2] the outcome.  The
# outcome is published even if the lock was lost meanwhile: "stored" is true anyway,
# and any other word only makes waiters look at the lock again.
_RELEASE = """
local deleted = 0
if redis.call('get', KEYS[1]) == ARGV[1] then
    deleted = redis.call('del', KEYS[1])
end
redis.call('publish', KEYS[2], ARGV[2])
return deleted
"""


@dataclass(frozen=True)
class LockSettings:
    """Athens' ``LockConfig``, in seconds, as this lock reads it."""

    #: The lease: refreshed every third of it while the stash runs; a dead holder's
    #: lock is taken over within it.
    ttl: float
    #: The deadline of each Redis call (capped at half the lease).
    timeout: float
    #: How many dead holders (expired locks) one waiting stash outlives before it gives
    #: up; never a bound on waiting for a live one.
    max_retries: int

    @property
    def call_deadline(self) -> float:
        return min(self.timeout, self.ttl / 2)

    @property
    def refresh_every(self) -> float:
        return self.ttl / 3

    @property
    def poll(self) -> float:
        """Seconds between a waiter's looks at the lock: a message usually comes first."""
        return min(max(self.ttl / 4, 0.05), 2.0)


@dataclass(frozen=True)
class RedisLockStatistics:
    """What :meth:`RedisLock.statistics` returns."""

    #: Locks this replica holds now (its stashes running).
    held: int
    #: Stashes waiting now for another replica's lock.
    waiting: int
    #: Locks taken so far.
    acquired: int
    #: Times so far a stash found another replica's lock and waited for it.
    waited: int
    #: Waits ended by the holder's message (the rest by polling).
    woken: int
    #: Locks taken over from a dead holder (its lease ran out) so far.
    takeovers: int
    #: Looks at the lock so far while waiting (one per poll interval, or per message).
    lock_checks: int
    #: Stashes run on the local single-flight alone because Redis failed.
    fallbacks: int
    #: Whether Redis answered the last call (False during an outage).
    reachable: bool
    #: Whether the listener is subscribed to the holders' messages (else waiters poll).
    subscribed: bool


class RedisUnreachable(Exception):
    """A Redis call failed or ran past its deadline (internal: the stash goes local)."""


class _Watch:
    """A waiter's interest in one key's channel: set when a message comes."""

    def __init__(self) -> None:
        self.arrived = trio.Event()
        self.message: str | None = None

    def take(self) -> str | None:
        message, self.message = self.message, None
        if message is not None:
            self.arrived = trio.Event()
        return message


class RedisLock:
    """A stash wrapper (call it on one stasher, inside the local single-flight) that
    shares each stash among replicas through ``client``; the listener runs in
    ``nursery``.  ``storage`` is looked at once the lock is taken."""

    def __init__(
        self,
        client: redis.Redis,
        storage: Backend,
        nursery: trio.Nursery,
        settings: LockSettings,
        *,
        where: str,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._storage = storage
        self._settings = settings
        self._where = where  # for the log: host:port or the sentinel master, no secret
        self._on_close = on_close
        self._nursery = nursery
        self._limiter = trio.CapacityLimiter(REDIS_THREADS)
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)
        self._watches: dict[str, set[_Watch]] = {}
        self._reachable = True
        self._subscribed = False
        self._retry_at = -math.inf
        self._held = self._waiting = 0
        self._acquired = self._waited = self._woken = 0
        self._takeovers = self._lock_checks = self._fallbacks = 0
        nursery.start_soon(self._listen, name="redis single-flight listener")

    def __call__(self, inner: Stasher) -> Stasher:
        return _LockedStasher(inner, self)

    def statistics(self) -> RedisLockStatistics:
        """Locks held and waited for now, and what happened so far."""
        return RedisLockStatistics(
            held=self._held,
            waiting=self._waiting,
            acquired=self._acquired,
            waited=self._waited,
            woken=self._woken,
            takeovers=self._takeovers,
            lock_checks=self._lock_checks,
            fallbacks=self._fallbacks,
            reachable=self._reachable,
            subscribed=self._subscribed,
        )

    async def aclose(self) -> None:
        """Close the connections (once the nursery is done with them)."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._close_connections)

    def _close_connections(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()
        if self._on_close is not None:
            self._on_close()

    # ------------------------------------------------------------------ the stash

    async def stash(self, inner: Stasher, module: str, version: str, part: Part) -> None:
        if trio.current_time() < self._retry_at:
            return await self._local(inner, module, version, part)
        key = f"{part}:{module}@{version}"
        watch = _Watch()
        # Watched before the first try, so a release between it and the wait is heard.
        self._watches.setdefault(key, set()).add(watch)
        try:
            await self._stash(inner, module, version, part, key, watch)
        except RedisUnreachable:
            await self._local(inner, module, version, part)
        finally:
            watchers = self._watches[key]
            watchers.discard(watch)
            if not watchers:
                del self._watches[key]

    async def _stash(
        self, inner: Stasher, module: str, version: str, part: Part, key: str, watch: _Watch
    ) -> None:
        dead_holders = 0
        while True:
            token = secrets.token_hex(16)
            ttl_ms = math.ceil(self._settings.ttl * 1000)
            take = functools.partial(
                self._client.set, _LOCK_PREFIX + key, token, nx=True, px=ttl_ms
            )
            if await self._call(take):
                self._acquired += 1
                if dead_holders:
                    self._takeovers += 1
                await self._hold(inner, module, version, part, key, token)
                return
            self._waited += 1
            outcome = await self._wait(key, watch)
            if outcome == _STORED:
                return
            if outcome is not None and outcome.startswith(_NOT_FOUND):
                raise NotFoundError(outcome.removeprefix(_NOT_FOUND).removeprefix(":"))
            if outcome is None:  # the lease ran out under its holder
                dead_holders += 1
                if dead_holders > self._settings.max_retries:
                    # Replicas die fetching it (a zip too big for their memory?): one
                    # more try here, without the lock, rather than a failed request.
                    log.warning(
                        "%d holders of the single-flight lock on %s died (MaxRetries is "
                        "%d): fetching it here without the lock",
                        dead_holders,
                        key,
                        self._settings.max_retries,
                    )
                    await self._local(inner, module, version, part)
                    return

    async def _wait(self, key: str, watch: _Watch) -> str | None:
        """Until the lock is free: the holder's outcome, or None if its lease ran out
        (or its message was missed)."""
        self._waiting += 1
        try:
            while True:
                with trio.move_on_after(self._settings.poll):
                    await watch.arrived.wait()
                message = watch.take()
                self._lock_checks += 1
                if message is not None:
                    self._woken += 1
                    if message != _RELEASED:
                        return message
                if await self._call(functools.partial(self._client.exists, _LOCK_PREFIX + key)):
                    continue  # a live holder (or a new one): wait on
                return _RELEASED if message is not None else None
        finally:
            self._waiting -= 1

    async def _hold(
        self, inner: Stasher, module: str, version: str, part: Part, key: str, token: str
    ) -> None:
        self._held += 1
        outcome = _RELEASED
        # The refresher runs beside the stash in the pipeline's nursery (where the stash
        # itself runs), not in a nursery of ours: the stash's error reaches its callers
        # as itself, not inside an exception group.
        keeping = trio.CancelScope()
        self._nursery.start_soon(self._keep, key, token, keeping, name=f"refresh lock {key}")
        try:
            if not await is_stored(self._storage, module, version, part):
                await inner.stash(module, version, part)
            outcome = _STORED
        except NotFoundError as exc:
            outcome = f"{_NOT_FOUND}:{exc}"
            raise
        finally:
            keeping.cancel()
            self._held -= 1
            # Unreachable: the lease runs out instead.
            with trio.CancelScope(shield=True), contextlib.suppress(RedisUnreachable):
                await self._call(
                    functools.partial(
                        self._release,
                        keys=[_LOCK_PREFIX + key, _CHANNEL_PREFIX + key],
                        args=[token, outcome],
                    )
                )

    async def _keep(self, key: str, token: str, scope: trio.CancelScope) -> None:
        """Refresh the lease until ``scope`` is cancelled (the stash ended)."""
        ttl_ms = math.ceil(self._settings.ttl * 1000)
        with scope:
            await self._keep_refreshing(key, token, ttl_ms)

    async def _keep_refreshing(self, key: str, token: str, ttl_ms: int) -> None:
        while True:
            await trio.sleep(self._settings.refresh_every)
            try:
                kept = await self._call(
                    functools.partial(
                        self._refresh, keys=[_LOCK_PREFIX + key], args=[token, ttl_ms]
                    )
                )
            except RedisUnreachable:
                continue  # the stash goes on; storage keeps a second fetch harmless
            if not kept:
                log.warning(
                    "lost the single-flight lock on %s (its lease ran out): another "
                    "replica may fetch it too",
                    key,
                )
                return

    async def _local(self, inner: Stasher, module: str, version: str, part: Part) -> None:
        self._fallbacks += 1
        await inner.stash(module, version, part)

    # ------------------------------------------------------------------ Redis calls

    async def _call(self, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread under the deadline; RedisUnreachable if it
        fails (the outage noted once)."""
        try:
            with trio.fail_after(self._settings.call_deadline):
                result = await trio.to_thread.run_sync(
                    call, abandon_on_cancel=True, limiter=self._limiter
                )
        except (redis.exceptions.RedisError, OSError, trio.TooSlowError) as exc:
            self._unreachable(exc)
            raise RedisUnreachable(str(exc)) from exc
        self._answered()
        return result

    def _unreachable(self, exc: BaseException) -> None:
        self._retry_at = trio.current_time() + OUTAGE_RETRY
        if self._reachable:
            self._reachable = False
            reason = "no answer in time" if isinstance(exc, trio.TooSlowError) else str(exc)
            log.warning(
                "Redis at %s is unreachable (%s): each replica fetches on its own until "
                "it answers again",
                self._where,
                reason,
            )

    def _answered(self) -> None:
        if not self._reachable:
            self._reachable = True
            self._retry_at = -math.inf
            log.info(
                "Redis at %s answers again: one fetch per version across replicas", self._where
            )

    # ------------------------------------------------------------------ the listener

    async def _listen(self) -> None:
        """Hand each holder's outcome to this replica's waiters, for ever."""
        while True:
            pubsub = self._client.pubsub(  # type: ignore[no-untyped-call]
                ignore_subscribe_messages=True
            )
            try:
                # Abandoned if cancelled: a Redis that never answers must not hold up
                # the pipeline's close for the call's deadline.
                await trio.to_thread.run_sync(
                    pubsub.psubscribe, _CHANNEL_PREFIX + "*", abandon_on_cancel=True
                )
                self._subscribed = True
                while True:
                    message = await trio.to_thread.run_sync(
                        functools.partial(pubsub.get_message, timeout=LISTEN_WAIT)
                    )
                    if message is not None:
                        self._deliver(message)
                    self._answered()
            except (redis.exceptions.RedisError, OSError) as exc:
                self._unreachable(exc)
            finally:
                self._subscribed = False
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(pubsub.close)
            # Waiters poll meanwhile; a listener that cannot connect tries again later.
            await trio.sleep(min(OUTAGE_RETRY, self._settings.poll))

    def _deliver(self, message: dict[str, Any]) -> None:
        channel = _text(message.get("channel"))
        watchers = self._watches.get(channel.removeprefix(_CHANNEL_PREFIX), ())
        for watch in watchers:
            watch.message = _text(message.get("data"))
            watch.arrived.set()


class _LockedStasher(Stasher):
    def __init__(self, inner: Stasher, lock: RedisLock) -> None:
        self._inner = inner
        self._lock = lock

    async def stash(self, module: str, version: str, part: Part) -> None:
        await self._lock.stash(self._inner, module, version, part)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------- clients


def _connection_kwargs(settings: LockSettings) -> dict[str, Any]:
    # No retries inside redis-py: the deadline and the outage logic decide.
    return {
        "socket_timeout": settings.call_deadline,
        "socket_connect_timeout": settings.call_deadline,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }


def redis_client(endpoint: str, password: str, settings: LockSettings) -> tuple[redis.Redis, str]:
    """A client of ``endpoint`` (``host:port`` or a ``redis[s]://`` URL), and how the log
    names it (no password).  A URL's password must agree with ``password`` (as Athens)."""
    kwargs = _connection_kwargs(settings)
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.password and password and parts.password != password:
            raise ConfigError(
                "SingleFlight.Redis.Password",
                "the Endpoint URL carries another password: set one of them",
            )
        try:
            client = redis.Redis.from_url(endpoint, password=password or parts.password, **kwargs)
        except ValueError as exc:
            raise ConfigError("SingleFlight.Redis.Endpoint", str(exc)) from None
        return client, f"{parts.hostname}:{parts.port or 6379}"
    host, port = _host_port(endpoint, "SingleFlight.Redis.Endpoint", 6379)
    return redis.Redis(host=host, port=port, password=password or None, **kwargs), f"{host}:{port}"


def sentinel_client(
    endpoints: Sequence[str],
    master_name: str,
    settings: LockSettings,
    *,
    sentinel_password: str = "",
    username: str = "",
    password: str = "",
    db: int = 0,
) -> tuple[redis.Redis, str, Callable[[], None]]:
    """A client of the master the sentinels at ``endpoints`` name ``master_name``, how
    the log names it, and what closes the sentinels' own connections."""
    if not endpoints:
        raise ConfigError("SingleFlight.RedisSentinel.Endpoints", "no sentinel given")
    if not master_name:
        raise ConfigError("SingleFlight.RedisSentinel.MasterName", "empty")
    addresses = [
        _host_port(endpoint, "SingleFlight.RedisSentinel.Endpoints", 26379)
        for endpoint in endpoints
    ]
    kwargs = _connection_kwargs(settings)
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        addresses,
        sentinel_kwargs={"password": sentinel_password or None, **kwargs},
        **kwargs,
    )
    client = sentinel.master_for(  # type: ignore[no-untyped-call]
        master_name, username=username or None, password=password or None, db=db, **kwargs
    )

    def close_sentinels() -> None:
        for connection in sentinel.sentinels:
            connection.close()

    return client, f"sentinel master {master_name}", close_sentinels


def _host_port(endpoint: str, key: str, default_port: int) -> tuple[str, int]:
    host, sep, port = endpoint.strip().rpartition(":")
    if not sep:
        host, port = port, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, f"{endpoint!r} is not host:port")
    return host, int(port)
