"""Integrity on read: a Backend wrapper that never hands out a damaged go.mod or zip.

A stored file can be damaged after the fact (a crash, a full disk, a hand).  The cheap
checks run where storage is read, in one place for every backend:

- a go.mod is checked against the hash recorded at save time on every read; a big one
  read as a stream (``go_mod_file``, over 1 MiB), once per go.mod and size, as a zip;
- a zip is checked by its tail when opened (:func:`zip_is_whole`: the end record must be
  where the central directory says it ends, and end the file), once per zip and size —
  a truncation or an append changes the size, so it is caught again.

Either check failing raises :class:`~athens_trio.DamagedVersionError`; repairing (remove,
fetch again) is the download protocol's business.  The thorough check, the zip's whole
``h1:`` hash, is ``athens-trio verify``'s (:mod:`athens_trio._integrity`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import trio

from .._exceptions import DamagedVersionError
from .._ziphash import mod_h1, mod_h1_of_digest
from ._backend import Backend, StoredBytes, StoredZip

__all__ = ["check_go_mod", "with_integrity", "zip_is_whole"]

_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"

#: Zips whose tail was found whole are remembered, up to this many (the oldest go first).
WHOLE_MEMO_SIZE = 10_000


async def zip_is_whole(stored: StoredZip) -> bool:
    """Whether the zip's structure reaches exactly to its end.

    Reads the last 22 bytes, where a zip without a comment (every zip go makes) keeps
    its end record; only a zip with a comment costs a read of up to 64 KiB more.
    """
    if stored.size < _EOCD_SIZE:
        return False
    for start in (stored.size - _EOCD_SIZE, max(0, stored.size - _EOCD_SIZE - _MAX_COMMENT)):
        tail = b"".join([chunk async for chunk in stored.chunks(start, stored.size)])
        if _end_record_fits(tail, start, stored.size):
            return True
    return False


def _end_record_fits(tail: bytes, start: int, size: int) -> bool:
    """Whether an end-of-central-directory record in ``tail`` (bytes ``start``..``size``
    of the zip) ends the file and follows right after the central directory it names."""
    position = tail.rfind(_EOCD_SIGNATURE)
    while position >= 0:
        record = tail[position : position + _EOCD_SIZE]
        if len(record) == _EOCD_SIZE:
            cd_size, cd_offset, comment_length = struct.unpack("<IIH", record[12:22])
            eocd_at = start + position
            if eocd_at + _EOCD_SIZE + comment_length == size:
                if 0xFFFFFFFF in (cd_size, cd_offset):
                    # Zip64: the real offsets are in the zip64 record, whose locator
                    # sits right before this one.  Deeper checks are verify's job.
                    locator = tail[max(0, position - 20) : position]
                    return locator.startswith(_ZIP64_LOCATOR_SIGNATURE)
                if cd_offset + cd_size == eocd_at:
                    return True
        position = tail.rfind(_EOCD_SIGNATURE, 0, position)
    return False


def check_go_mod(module: str, version: str, mod: bytes, recorded: str | None) -> None:
    """Raise DamagedVersionError if ``mod`` is not the go.mod whose hash was recorded
    (no recorded hash, as in a tree filled by other means, passes)."""
    if recorded and mod_h1(mod) != recorded:
        raise DamagedVersionError(f"{module}@{version}: go.mod does not match its {recorded}")


@runtime_checkable
class ReadsModWithSum(Protocol):
    """A backend that reads a go.mod and its recorded hash at once (disk: one thread
    hop rather than two)."""

    async def go_mod_and_sum(self, module: str, version: str) -> tuple[bytes, str | None]: ...


def _remember(memo: dict[tuple[str, str, int], None], key: tuple[str, str, int]) -> None:
    if len(memo) >= WHOLE_MEMO_SIZE:
        del memo[next(iter(memo))]  # the oldest
    memo[key] = None


class _IntegrityChecked(Backend):
    """``inner`` with its go.mod and zip reads checked; everything else passed through."""

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        self.description = inner.description
        self._reads_mod_with_sum = inner if isinstance(inner, ReadsModWithSum) else None
        # (module, version, size) of zips found whole, and of big go.mod files found
        # matching their hash; a dict keeps insertion order.
        self._whole: dict[tuple[str, str, int], None] = {}
        self._mods_checked: dict[tuple[str, str, int], None] = {}

    async def go_mod(self, module: str, version: str) -> bytes:
        if self._reads_mod_with_sum is not None:
            mod, recorded = await self._reads_mod_with_sum.go_mod_and_sum(module, version)
        else:
            mod = await self._inner.go_mod(module, version)
            recorded = await self._inner.mod_sum(module, version)
        check_go_mod(module, version, mod, recorded)
        return mod

    async def go_mod_file(self, module: str, version: str) -> StoredZip:
        stored = await self._inner.go_mod_file(module, version)
        recorded = await self._inner.mod_sum(module, version)
        if isinstance(stored, StoredBytes):
            check_go_mod(module, version, stored.data, recorded)
        elif recorded and (module, version, stored.size) not in self._mods_checked:
            # A big one is hashed as it streams by (then streamed again to the client),
            # once per size, as a zip's tail: a truncation or an append is caught again.
            digest = hashlib.sha256()
            async for chunk in stored.chunks():
                digest.update(chunk)
            if mod_h1_of_digest(digest.hexdigest()) != recorded:
                raise DamagedVersionError(
                    f"{module}@{version}: go.mod does not match its {recorded}"
                )
            _remember(self._mods_checked, (module, version, stored.size))
        return stored

    async def zip(self, module: str, version: str) -> StoredZip:
        stored = await self._inner.zip(module, version)
        key = (module, version, stored.size)
        if key in self._whole:
            return stored
        if not await zip_is_whole(stored):
            raise DamagedVersionError(
                f"{module}@{version}: the stored zip is damaged ({stored.size} bytes, "
                "its structure does not reach its end)"
            )
        _remember(self._whole, key)
        return stored

    async def delete(self, module: str, version: str) -> None:
        for memo in (self._whole, self._mods_checked):
            for key in [k for k in memo if k[:2] == (module, version)]:
                del memo[key]
        await self._inner.delete(module, version)

    # --- passed through -----------------------------------------------------------

    async def list_versions(self, module: str) -> list[str]:
        return await self._inner.list_versions(module)

    async def exists(self, module: str, version: str) -> bool:
        return await self._inner.exists(module, version)

    async def info(self, module: str, version: str) -> bytes:
        return await self._inner.info(module, version)

    async def zip_sum(self, module: str, version: str) -> str | None:
        return await self._inner.zip_sum(module, version)

    async def mod_sum(self, module: str, version: str) -> str | None:
        return await self._inner.mod_sum(module, version)

    async def save_mod(
        self, module: str, version: str, *, info: bytes, mod: bytes, mod_sum: str | None = None
    ) -> bool:
        return await self._inner.save_mod(module, version, info=info, mod=mod, mod_sum=mod_sum)

    async def save(
        self,
        module: str,
        version: str,
        *,
        info: bytes,
        mod: bytes,
        zip_file: Path,
        zip_sum: str | None = None,
        mod_sum: str | None = None,
    ) -> bool:
        # The inner backend's save (one thread hop on disk) compares a stored go.mod
        # part unchecked; where it stored nothing, a damaged stored go.mod is told
        # apart from another save's, as the checked reads of Backend.save would.
        saved = await self._inner.save(
            module,
            version,
            info=info,
            mod=mod,
            zip_file=zip_file,
            zip_sum=zip_sum,
            mod_sum=mod_sum,
        )
        if not saved:
            await self.go_mod(module, version)
        return saved

    async def save_zip(
        self, module: str, version: str, *, zip_file: Path, zip_sum: str | None = None
    ) -> bool:
        return await self._inner.save_zip(module, version, zip_file=zip_file, zip_sum=zip_sum)

    def catalog(
        self, *, limiter: trio.CapacityLimiter | None = None
    ) -> AsyncIterator[tuple[str, str]]:
        return self._inner.catalog(limiter=limiter)

    async def ready(self) -> None:
        await self._inner.ready()

    async def sweep(self, older_than: float = 3600.0) -> int:
        return await self._inner.sweep(older_than)

    async def aclose(self) -> None:
        await self._inner.aclose()


def with_integrity(storage: Backend) -> Backend:
    """``storage`` whose go.mod and zip reads raise DamagedVersionError instead of
    handing out damaged bytes (wrapping twice checks once)."""
    if isinstance(storage, _IntegrityChecked):
        return storage
    return _IntegrityChecked(storage)
