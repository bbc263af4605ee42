"""The download protocol (list, latest, info, mod, zip), its pool, and the policy
wrappers: DownloadMode (what to do on a storage miss) and FilterFile (who is served)."""

from __future__ import annotations

from ._filter import FilterRule, ModuleFilter, with_filter
from ._mode import DownloadPolicy, Mode, load_download_policy
from ._pool import Pool, with_pool
from ._protocol import (
    DownloadProtocol,
    LookupStatistics,
    NetworkMode,
    ProtocolWrapper,
    StorageFirst,
    new,
    wrap,
)

__all__ = [
    "DownloadPolicy",
    "DownloadProtocol",
    "FilterRule",
    "LookupStatistics",
    "Mode",
    "ModuleFilter",
    "NetworkMode",
    "Pool",
    "ProtocolWrapper",
    "StorageFirst",
    "load_download_policy",
    "new",
    "with_filter",
    "with_pool",
    "wrap",
]
