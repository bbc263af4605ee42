"""Storage in a dict: for tests and for embedding, gone when the process ends."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trio

from .._exceptions import NotFoundError
from ._backend import CHUNK_SIZE, Backend, StoredZip

__all__ = ["MemoryStorage"]


@dataclass(frozen=True)
class _StoredVersion:
    info: bytes
    mod: bytes
    mod_sum: str | None
    zip: bytes | None = None  # None: saved without its zip (yet)
    zip_sum: str | None = None


class _MemoryZip(StoredZip):
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)

    async def chunks(self, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        stop = self.size if stop is None else min(stop, self.size)
        view = memoryview(self._data)
        for offset in range(start, stop, CHUNK_SIZE):
            yield bytes(view[offset : min(offset + CHUNK_SIZE, stop)])
            await trio.lowlevel.checkpoint()


class MemoryStorage(Backend):
    """Every version in a dict keyed by (module, version), its parts in one entry: the
    first save of each part stores it, later ones change nothing."""

    description = "memory"

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], _StoredVersion] = {}

    def _get(self, module: str, version: str) -> _StoredVersion:
        try:
            return self._versions[module, version]
        except KeyError:
            raise NotFoundError(f"{module}@{version} is not in storage") from None

    async def list_versions(self, module: str) -> list[str]:
        await trio.lowlevel.checkpoint()
        return [v for (m, v) in self._versions if m == module]

    async def exists(self, module: str, version: str) -> bool:
        await trio.lowlevel.checkpoint()
        stored = self._versions.get((module, version))
        return stored is not None and stored.zip is not None

    async def info(self, module: str, version: str) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._get(module, version).info

    async def go_mod(self, module: str, version: str) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._get(module, version).mod

    async def zip(self, module: str, version: str) -> StoredZip:
        await trio.lowlevel.checkpoint()
        return _MemoryZip(self._get_zipped(module, version).zip or b"")

    def _get_zipped(self, module: str, version: str) -> _StoredVersion:
        stored = self._get(module, version)
        if stored.zip is None:
            raise NotFoundError(f"{module}@{version}: its zip is not in storage")
        return stored

    async def zip_sum(self, module: str, version: str) -> str | None:
        await trio.lowlevel.checkpoint()
        return self._get_zipped(module, version).zip_sum

    async def mod_sum(self, module: str, version: str) -> str | None:
        await trio.lowlevel.checkpoint()
        return self._get(module, version).mod_sum

    async def catalog(
        self, *, limiter: trio.CapacityLimiter | None = None
    ) -> AsyncIterator[tuple[str, str]]:
        for key in list(self._versions):
            await trio.lowlevel.checkpoint()
            yield key

    async def save_mod(
        self, module: str, version: str, *, info: bytes, mod: bytes, mod_sum: str | None = None
    ) -> bool:
        await trio.lowlevel.checkpoint()
        if (module, version) in self._versions:
            return False
        self._versions[module, version] = _StoredVersion(info=info, mod=mod, mod_sum=mod_sum)
        return True

    async def save_zip(
        self, module: str, version: str, *, zip_file: Path, zip_sum: str | None = None
    ) -> bool:
        if self._get(module, version).zip is not None:
            await trio.lowlevel.checkpoint()
            return False
        data = await trio.Path(zip_file).read_bytes()
        # Checked again: another save may have finished (or a delete) while it was read.
        stored = self._get(module, version)
        if stored.zip is not None:
            return False
        self._versions[module, version] = dataclasses.replace(stored, zip=data, zip_sum=zip_sum)
        return True

    async def delete(self, module: str, version: str) -> None:
        await trio.lowlevel.checkpoint()
        if self._versions.pop((module, version), None) is None:
            raise NotFoundError(f"{module}@{version} is not in storage")
