"""S3Lock: the distributed single-flight on leases in the S3 storage's bucket.

``SingleFlightType = "s3"``, as Athens' newest release: the lock objects live in the
bucket of ``[Storage.S3]`` (under its prefix, in ``.locks/``), taken, refreshed, taken
over and released by conditional writes (:class:`~athens_trio.storage._s3lock.S3Leases`),
so replicas sharing the bucket need nothing else.  S3 has no pub/sub: waiters look at
the lock and in storage every :attr:`LockSettings.poll` seconds (at most 2), so a
version is served within that of the holder storing it.  The holder's outcome is not
carried: a version that does not exist is looked up again by each waiting replica.

Imported only by those who choose it (it loads botocore, as S3 storage does).
"""

from __future__ import annotations

import httpx
import trio

from .._exceptions import StorageError
from ..storage import Backend
from ..storage._s3client import S3Client
from ..storage._s3lock import Lease, LeaseLost, S3Leases
from ._distributed import DistributedLock, LeaseBackend, LockSettings, Look

__all__ = ["S3Lock"]


class _S3LockLeases(LeaseBackend[Lease]):
    kind = "S3"
    # A refused or failing request (StorageError after the client's retries), a
    # connection the client did not turn into one, or a lock object that is not ours
    # to read (ValueError: not JSON).
    failures = (StorageError, httpx.HTTPError, OSError, ValueError)

    def __init__(self, client: S3Client, settings: LockSettings, prefix: str, name: str) -> None:
        self._client = client
        self._leases = S3Leases(client, prefix=prefix, ttl=settings.ttl)
        self.name = name

    async def take(self, key: str) -> Lease | None:
        return await self._leases.try_acquire(key)

    async def refresh(self, key: str, lease: Lease) -> Lease | None:
        try:
            return await self._leases.refresh(lease)
        except LeaseLost:
            return None

    async def release(self, key: str, lease: Lease, outcome: str) -> None:
        await self._leases.release(lease)

    async def look(self, key: str) -> Look:
        lives = await self._leases.lives(key)
        if lives is None:
            return Look.RELEASED
        return Look.HELD if lives else Look.LAPSED

    async def aclose(self) -> None:
        await self._client.aclose()


class S3Lock(DistributedLock[Lease]):
    """The distributed single-flight on ``client``'s bucket (its own client, whose
    timeout is the lock's call deadline); lock objects under ``prefix``; ``name`` is
    how the log names the bucket (no secret)."""

    def __init__(
        self,
        client: S3Client,
        storage: Backend,
        nursery: trio.Nursery,
        settings: LockSettings,
        *,
        prefix: str = "",
        name: str,
    ) -> None:
        super().__init__(_S3LockLeases(client, settings, prefix, name), storage, nursery, settings)
