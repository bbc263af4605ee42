"""A single-flight shared by replicas: one stash per module@version and part.

The local :class:`~athens_trio.stash.SingleFlight` stays outermost: a replica's
concurrent callers join one stash, and only that one stash goes through this lock, so
each replica asks the shared lock once per key, not once per request.

The protocol is written once (:class:`DistributedLock`); what holds the locks is a
:class:`LeaseBackend` — Redis here (:class:`RedisLock`), an S3 bucket's conditional
writes in :mod:`._s3lock`:

- **The lock** is a lease per (module, version, part) with a random owner.  Its lease
  is short (``TTL``) and refreshed every third of it while the stash runs, so a long
  fetch keeps it and a dead holder loses it within ``TTL``.  Only its owner releases it.
- **Waiters** (the replicas that found the lock taken) wait as long as its holder lives.
  With pub/sub (Redis) they are woken by the holder's message when it ends; they also
  look at the lock every :attr:`LockSettings.poll` seconds in case a message was missed
  or the holder died, and without a subscription (S3, or Redis' listener down) they look
  in storage too, so a version the holder stored is served as soon as it is there.
  The lock gone, a waiter takes it and looks in storage first.  No retry count ends a
  wait on a live holder; ``MaxRetries`` bounds only how many *dead* holders (expired
  leases) a waiter outlives.
- **The lock's server unreachable** (refused, timed out, failing over): the stash runs on
  the local single-flight alone, so no request fails or hangs for it; a warning is
  logged once per outage, the server is left alone for :data:`OUTAGE_RETRY` seconds at
  a time, and an info line says when it answers again.  Every call runs under a
  deadline (``Timeout``, at most half the lease).  Two replicas may then fetch one
  version at once; storage's create-if-absent writes keep that safe.

Redis' client is redis-py's synchronous one, run in :func:`trio.to_thread.run_sync`.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import functools
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import redis
import redis.exceptions
import redis.sentinel
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._exceptions import ConfigError, NotFoundError, StorageError
from ..storage import Backend
from ._stasher import Part, Stasher, is_stored

__all__ = [
    "OUTAGE_RETRY",
    "DistributedLock",
    "DistributedLockStatistics",
    "LeaseBackend",
    "LockSettings",
    "Look",
    "RedisLock",
    "redis_client",
    "sentinel_client",
]

log = logging.getLogger("athens_trio.singleflight")

T = TypeVar("T")
#: What a backend knows a lease it holds by (a token, an ETag...).
H = TypeVar("H")

#: Seconds the lock's server is left alone after it failed (requests go local
#: meanwhile), then tried.
OUTAGE_RETRY = 2.0
#: Seconds one wait of the listener thread for a message lasts (how long its
#: cancellation may take); a message is handed over as soon as it arrives.
LISTEN_WAIT = 0.25
#: Worker threads that may run Redis calls at once (the listener's is apart).
REDIS_THREADS = 16

_PREFIX = "athens-trio:singleflight:"
_LOCK_PREFIX = _PREFIX + "lock:"
_CHANNEL_PREFIX = _PREFIX + "done:"

#: What a holder's release tells waiters: the version is stored; it does not exist
#: (followed by ``:`` and go's words); or anything else (failed, cancelled): look again.
STORED = "stored"
NOT_FOUND = "not_found"
RELEASED = "released"

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
    """Athens' lock settings (``LockConfig``, ``[SingleFlight.S3]``), in seconds."""

    #: The lease: refreshed every third of it while the stash runs; a dead holder's
    #: lock is taken over within it.
    ttl: float
    #: The deadline of each call to the lock's server (capped at half the lease).
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
class DistributedLockStatistics:
    """What :meth:`DistributedLock.statistics` returns."""

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
    #: Stashes run on the local single-flight alone because the lock's server failed.
    fallbacks: int
    #: Whether the lock's server answered the last call (False during an outage).
    reachable: bool
    #: Whether the listener is subscribed to the holders' messages (else waiters poll;
    #: always False for a backend without messages, such as S3).
    subscribed: bool


class Look(enum.Enum):
    """What a waiter sees when it looks at a lock."""

    #: A live holder (its lease runs).
    HELD = "held"
    #: Gone, given up by its holder.
    RELEASED = "released"
    #: Gone or expired, and nothing says its holder gave it up: maybe it died.
    LAPSED = "lapsed"


class LockServerUnreachable(Exception):
    """A call to the lock's server failed or ran past its deadline (internal: the stash
    goes local)."""


class LeaseBackend(abc.ABC, Generic[H]):
    """Where the leases live: each call may raise one of :attr:`failures` (the server
    is unreachable); :class:`DistributedLock` puts each under its deadline."""

    #: How the log names the server ("Redis at host:port"; no secret).
    name: str
    #: What kind of server it is ("Redis", "S3"), for task names.
    kind: str
    #: The exceptions that mean the server is unreachable.
    failures: tuple[type[BaseException], ...]

    @abc.abstractmethod
    async def take(self, key: str) -> H | None:
        """The lease on ``key`` if it was free (or expired: taken over); None if held."""

    @abc.abstractmethod
    async def refresh(self, key: str, lease: H) -> H | None:
        """The lease for another TTL; None if it is no longer ours."""

    @abc.abstractmethod
    async def release(self, key: str, lease: H, outcome: str) -> None:
        """Give the lease up (if it is still ours) and tell waiters ``outcome``."""

    @abc.abstractmethod
    async def look(self, key: str) -> Look:
        """Whether someone holds ``key``'s lease now."""

    async def listen(self, lock: DistributedLock[H]) -> None:
        """Hand holders' outcomes to ``lock`` (:meth:`DistributedLock.deliver`) for
        ever; a backend without messages returns at once (waiters poll)."""

    async def aclose(self) -> None:
        """Close the connections (once the nursery is done with them)."""


class _Watch:
    """A waiter's interest in one key's messages: set when a message comes."""

    def __init__(self) -> None:
        self.arrived = trio.Event()
        self.message: str | None = None

    def take(self) -> str | None:
        message, self.message = self.message, None
        if message is not None:
            self.arrived = trio.Event()
        return message


class _Holding(Generic[H]):
    """A held lease, as its refresher last renewed it."""

    def __init__(self, lease: H) -> None:
        self.lease = lease


class DistributedLock(Generic[H]):
    """A stash wrapper (call it on one stasher, inside the local single-flight) that
    shares each stash among replicas through ``backend``'s leases; the listener and
    refreshers run in ``nursery``.  ``storage`` is looked at once the lock is taken
    (and while waiting without messages)."""

    def __init__(
        self,
        backend: LeaseBackend[H],
        storage: Backend,
        nursery: trio.Nursery,
        settings: LockSettings,
    ) -> None:
        self._backend = backend
        self._storage = storage
        self._settings = settings
        self._nursery = nursery
        self._failures: tuple[type[BaseException], ...] = (
            *backend.failures,
            trio.TooSlowError,
        )
        self._watches: dict[str, set[_Watch]] = {}
        self._reachable = True
        self._subscribed = False
        self._retry_at = -math.inf
        self._held = self._waiting = 0
        self._acquired = self._waited = self._woken = 0
        self._takeovers = self._lock_checks = self._fallbacks = 0
        nursery.start_soon(backend.listen, self, name=f"{backend.kind} single-flight listener")

    def __call__(self, inner: Stasher) -> Stasher:
        return _LockedStasher(inner, self)

    @property
    def settings(self) -> LockSettings:
        return self._settings

    def statistics(self) -> DistributedLockStatistics:
        """Locks held and waited for now, and what happened so far."""
        return DistributedLockStatistics(
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
        """Close the backend's connections (once the nursery is done with them)."""
        with trio.CancelScope(shield=True):
            await self._backend.aclose()

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
        except LockServerUnreachable:
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
            lease = await self._call(functools.partial(self._backend.take, key))
            if lease is not None:
                self._acquired += 1
                if dead_holders:
                    self._takeovers += 1
                await self._hold(inner, module, version, part, key, lease)
                return
            self._waited += 1
            outcome = await self._wait(module, version, part, key, watch)
            if outcome == STORED:
                return
            if outcome is not None and outcome.startswith(NOT_FOUND):
                raise NotFoundError(outcome.removeprefix(NOT_FOUND).removeprefix(":"))
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

    async def _wait(
        self, module: str, version: str, part: Part, key: str, watch: _Watch
    ) -> str | None:
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
                    if message != RELEASED:
                        return message
                elif not self._subscribed and await self._stored(module, version, part):
                    return STORED  # no message to wait for: storage says it
                look = await self._call(functools.partial(self._backend.look, key))
                if look is Look.HELD:
                    continue  # a live holder (or a new one): wait on
                return RELEASED if message is not None or look is Look.RELEASED else None
        finally:
            self._waiting -= 1

    async def _stored(self, module: str, version: str, part: Part) -> bool:
        # Storage failing is the stash's business (the lock's holder will see it): a
        # waiter looks at the lock instead.
        try:
            return await is_stored(self._storage, module, version, part)
        except StorageError:
            return False

    async def _hold(
        self, inner: Stasher, module: str, version: str, part: Part, key: str, lease: H
    ) -> None:
        self._held += 1
        holding = _Holding(lease)
        outcome = RELEASED
        # The refresher runs beside the stash in the pipeline's nursery (where the stash
        # itself runs), not in a nursery of ours: the stash's error reaches its callers
        # as itself, not inside an exception group.
        keeping = trio.CancelScope()
        self._nursery.start_soon(self._keep, key, holding, keeping, name=f"refresh lock {key}")
        try:
            if not await is_stored(self._storage, module, version, part):
                await inner.stash(module, version, part)
            outcome = STORED
        except NotFoundError as exc:
            outcome = f"{NOT_FOUND}:{exc}"
            raise
        finally:
            keeping.cancel()
            self._held -= 1
            # Unreachable: the lease runs out instead.
            with trio.CancelScope(shield=True), contextlib.suppress(LockServerUnreachable):
                await self._call(
                    functools.partial(self._backend.release, key, holding.lease, outcome)
                )

    async def _keep(self, key: str, holding: _Holding[H], scope: trio.CancelScope) -> None:
        """Refresh the lease until ``scope`` is cancelled (the stash ended)."""
        with scope:
            await self._keep_refreshing(key, holding)

    async def _keep_refreshing(self, key: str, holding: _Holding[H]) -> None:
        while True:
            await trio.sleep(self._settings.refresh_every)
            try:
                kept = await self._call(
                    functools.partial(self._backend.refresh, key, holding.lease)
                )
            except LockServerUnreachable:
                continue  # the stash goes on; storage keeps a second fetch harmless
            if kept is None:
                log.warning(
                    "lost the single-flight lock on %s (its lease ran out): another "
                    "replica may fetch it too",
                    key,
                )
                return
            holding.lease = kept

    async def _local(self, inner: Stasher, module: str, version: str, part: Part) -> None:
        self._fallbacks += 1
        await inner.stash(module, version, part)

    # ------------------------------------------------------------------ server calls

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` under the deadline; LockServerUnreachable if it fails (the outage
        noted once)."""
        try:
            with trio.fail_after(self._settings.call_deadline):
                result = await call()
        except self._failures as exc:
            self.note_unreachable(exc)
            raise LockServerUnreachable(str(exc)) from exc
        self.note_answered()
        return result

    def note_unreachable(self, exc: BaseException) -> None:
        """The server failed: requests go local for OUTAGE_RETRY (warned once)."""
        self._retry_at = trio.current_time() + OUTAGE_RETRY
        if self._reachable:
            self._reachable = False
            reason = "no answer in time" if isinstance(exc, trio.TooSlowError) else str(exc)
            log.warning(
                "%s is unreachable (%s): each replica fetches on its own until it answers again",
                self._backend.name,
                reason,
            )

    def note_answered(self) -> None:
        """The server answered (the outage, if any, is over)."""
        if not self._reachable:
            self._reachable = True
            self._retry_at = -math.inf
            log.info("%s answers again: one fetch per version across replicas", self._backend.name)

    # ------------------------------------------------------------------ messages

    def note_subscribed(self, subscribed: bool) -> None:
        """Whether the listener hears holders' messages now (else waiters poll)."""
        self._subscribed = subscribed

    def deliver(self, key: str, message: str) -> None:
        """A holder's ``message`` on ``key``, to this replica's waiters on it."""
        for watch in self._watches.get(key, ()):
            watch.message = message
            watch.arrived.set()


class _LockedStasher(Stasher, Generic[H]):
    def __init__(self, inner: Stasher, lock: DistributedLock[H]) -> None:
        self._inner = inner
        self._lock = lock

    async def stash(self, module: str, version: str, part: Part) -> None:
        await self._lock.stash(self._inner, module, version, part)


# ---------------------------------------------------------------------- Redis


class _RedisLeases(LeaseBackend[str]):
    """Leases as Redis keys (``SET NX PX`` to a random token, refreshed and deleted
    only by that token in Lua), and outcomes on a channel per key."""

    kind = "Redis"
    failures = (redis.exceptions.RedisError, OSError)

    def __init__(
        self,
        client: redis.Redis,
        settings: LockSettings,
        where: str,
        on_close: Callable[[], None] | None,
    ) -> None:
        self._client = client
        self._ttl_ms = math.ceil(settings.ttl * 1000)
        self._poll = settings.poll
        # For the log: host:port or the sentinel master, no secret.
        self.name = f"Redis at {where}"
        self._on_close = on_close
        self._limiter = trio.CapacityLimiter(REDIS_THREADS)
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)

    async def _run(self, call: Callable[[], T]) -> T:
        # Abandoned if the deadline passes: a thread stuck on a dead socket must not
        # hold the caller (redis-py's own socket timeout ends it later).
        return await trio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=self._limiter)

    async def take(self, key: str) -> str | None:
        token = secrets.token_hex(16)
        set_if_free = functools.partial(
            self._client.set, _LOCK_PREFIX + key, token, nx=True, px=self._ttl_ms
        )
        return token if await self._run(set_if_free) else None

    async def refresh(self, key: str, lease: str) -> str | None:
        call = functools.partial(
            self._refresh, keys=[_LOCK_PREFIX + key], args=[lease, self._ttl_ms]
        )
        return lease if await self._run(call) else None

    async def release(self, key: str, lease: str, outcome: str) -> None:
        call = functools.partial(
            self._release, keys=[_LOCK_PREFIX + key, _CHANNEL_PREFIX + key], args=[lease, outcome]
        )
        await self._run(call)

    async def look(self, key: str) -> Look:
        # An expired key and a released one look alike: the release's message tells.
        held = await self._run(functools.partial(self._client.exists, _LOCK_PREFIX + key))
        return Look.HELD if held else Look.LAPSED

    async def listen(self, lock: DistributedLock[str]) -> None:
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
                lock.note_subscribed(True)
                while True:
                    message = await trio.to_thread.run_sync(
                        functools.partial(pubsub.get_message, timeout=LISTEN_WAIT)
                    )
                    if message is not None:
                        channel = _text(message.get("channel"))
                        lock.deliver(
                            channel.removeprefix(_CHANNEL_PREFIX), _text(message.get("data"))
                        )
                    lock.note_answered()
            except self.failures as exc:
                lock.note_unreachable(exc)
            finally:
                lock.note_subscribed(False)
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(pubsub.close)
            # Waiters poll meanwhile; a listener that cannot connect tries again later.
            await trio.sleep(min(OUTAGE_RETRY, self._poll))

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._close_connections)

    def _close_connections(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()
        if self._on_close is not None:
            self._on_close()


class RedisLock(DistributedLock[str]):
    """The distributed single-flight on a Redis (``SingleFlightType`` redis or
    redis-sentinel): ``client``'s keys are the leases, its pub/sub wakes waiters."""

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
        super().__init__(
            _RedisLeases(client, settings, where, on_close), storage, nursery, settings
        )


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
