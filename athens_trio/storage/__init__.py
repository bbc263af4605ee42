"""Storage: where modules live.  Once there, always there.

One interface, :class:`Backend`, and its backends, chosen by ``StorageType``:

- ``memory`` — :class:`MemoryStorage`, a dict; gone with the process.
- ``disk`` — :class:`DiskStorage`, a GOPROXY tree under ``[Storage.Disk] RootPath``.
"""

from __future__ import annotations

from .._config import Config
from ._backend import CHUNK_SIZE, Backend, StoredZip
from ._disk import DiskStorage
from ._memory import MemoryStorage

__all__ = [
    "CHUNK_SIZE",
    "Backend",
    "DiskStorage",
    "MemoryStorage",
    "StoredZip",
    "storage_from_config",
]


def storage_from_config(config: Config) -> Backend:
    """The backend ``StorageType`` names, configured from the ``[Storage]`` section."""
    if config.storage_type == "memory":
        return MemoryStorage()
    return DiskStorage(config.disk_root)
