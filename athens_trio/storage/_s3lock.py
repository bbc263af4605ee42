"""Leases in an S3 bucket by conditional writes: the primitive of an S3 single-flight.

A lease is an object ``<prefix>.locks/<sha256 of the name>`` holding who took it and
for how long.  Taking a free one is a create-if-absent PUT (``If-None-Match: *``);
refreshing one's own, and taking over an expired one, are compare-and-swap PUTs
(``If-Match: <ETag>``); releasing is a DELETE with ``If-Match``.  So two replicas never
both hold a lease, a holder that died loses it ``ttl`` seconds after its last refresh,
and a holder that was taken over learns it at its next refresh (:class:`LeaseLost`).
Expiry is judged on the server's clock (its ``Date`` against the lease's
``Last-Modified``), so the replicas' clocks do not matter.

The stash single-flight's ``SingleFlightType = "s3"`` (``athens_trio.stash._s3lock``)
stands on these.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from dataclasses import dataclass

from ._s3client import S3Client, S3PreconditionFailed

__all__ = ["Lease", "LeaseLost", "S3Leases"]


class LeaseLost(Exception):
    """The lease expired and another holder took it over (or it was removed)."""


@dataclass(frozen=True)
class Lease:
    name: str
    key: str
    etag: str


class S3Leases:
    """Leases named by strings, each ``ttl`` seconds from its last take or refresh."""

    def __init__(self, client: S3Client, *, prefix: str = "", ttl: float = 30.0) -> None:
        self._client = client
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._ttl = ttl
        self._owner = secrets.token_hex(8)  # this process, in the lease body

    def _key(self, name: str) -> str:
        return f"{self._prefix}.locks/{hashlib.sha256(name.encode()).hexdigest()}"

    def _body(self, name: str) -> bytes:
        # A nonce per write: every write's ETag (an MD5 of the body) is its own, so a
        # compare-and-swap on it names one write, never an equal earlier one.
        write = {
            "name": name,
            "owner": self._owner,
            "ttl": self._ttl,
            "nonce": secrets.token_hex(8),
        }
        return json.dumps(write).encode()

    async def try_acquire(self, name: str) -> Lease | None:
        """The lease if it was free or expired; None if someone holds it."""
        key = self._key(name)
        try:
            etag = await self._client.put(key, self._body(name), if_absent=True)
            return Lease(name, key, etag)
        except S3PreconditionFailed:
            pass
        stored = await self._read(key)
        if stored is None:
            return await self.try_acquire(name)  # released meanwhile: try again
        etag, lives = stored
        if lives:
            return None
        try:  # expired: take it over, unless someone else just did
            new_etag = await self._client.put(key, self._body(name), if_absent=False, if_match=etag)
        except S3PreconditionFailed:
            return None
        return Lease(name, key, new_etag)

    async def _read(self, key: str) -> tuple[str, bool] | None:
        """The lease object's ETag and whether its lease still runs (server time), or
        None if there is none."""
        stored = await self._client.get_versioned(key)
        if stored is None:
            return None
        body, etag, modified, server_now = stored
        ttl = float(json.loads(body).get("ttl", self._ttl))
        return etag, server_now < modified + ttl

    async def lives(self, name: str) -> bool | None:
        """Whether someone holds the lease: True, False if it expired (its holder
        stopped refreshing it), None if nobody took it or it was released."""
        stored = await self._read(self._key(name))
        return None if stored is None else stored[1]

    async def refresh(self, lease: Lease) -> Lease:
        """The lease for another ``ttl`` seconds; LeaseLost if it is no longer ours."""
        try:
            etag = await self._client.put(
                lease.key, self._body(lease.name), if_absent=False, if_match=lease.etag
            )
        except S3PreconditionFailed:
            raise LeaseLost(lease.name) from None
        return Lease(lease.name, lease.key, etag)

    async def release(self, lease: Lease) -> None:
        """Give the lease up (if it is still ours; else there is nothing to give)."""
        with contextlib.suppress(S3PreconditionFailed):
            await self._client.delete(lease.key, if_match=lease.etag)
