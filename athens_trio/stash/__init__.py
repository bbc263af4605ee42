"""Stash: fetch a version from its VCS and save it into storage, once.

``new(fetcher, storage, with_pool(n), with_singleflight(nursery))`` builds the stasher
the pipeline uses: the plain fetch-then-save, bounded by the pool, shared by the
single-flight (outermost, so callers that join an in-flight stash take no pool slot).
The pool bounds the stashes waiting too (``queue``: one more is refused with
:class:`~athens_trio.OverloadedError`), and the single-flight cancels a stash nobody
waits for once ``abandon_after`` seconds passed.  The fetch-then-save
(:class:`FetchAndSave`), the pool and the single-flight each tell their
:meth:`statistics` (frozen dataclasses, as trio's primitives do).
Across replicas, a :class:`DistributedLock` goes just inside the single-flight: one
stash per version among all the replicas sharing a Redis (:class:`RedisLock`) or an S3
bucket (``S3Lock``, in ``athens_trio.stash._s3lock``: imported by those who choose it).
"""

from __future__ import annotations

from ._distributed import (
    DistributedLock,
    DistributedLockStatistics,
    LockSettings,
    RedisLock,
    redis_client,
    sentinel_client,
)
from ._pool import Pool, PoolStatistics, Slots, with_pool
from ._singleflight import Flights, SingleFlight, SingleFlightStatistics, with_singleflight
from ._stasher import (
    FETCH_SECONDS_BOUNDS,
    FetchAndSave,
    FetchStatistics,
    OutcomeStatistics,
    Part,
    Stasher,
    Wrapper,
    is_stored,
    new,
    wrap,
)
from ._validator import with_validator

__all__ = [
    "FETCH_SECONDS_BOUNDS",
    "DistributedLock",
    "DistributedLockStatistics",
    "FetchAndSave",
    "FetchStatistics",
    "LockSettings",
    "Flights",
    "OutcomeStatistics",
    "Part",
    "Pool",
    "PoolStatistics",
    "RedisLock",
    "SingleFlight",
    "SingleFlightStatistics",
    "Slots",
    "Stasher",
    "Wrapper",
    "is_stored",
    "new",
    "redis_client",
    "sentinel_client",
    "with_pool",
    "with_singleflight",
    "with_validator",
    "wrap",
]
