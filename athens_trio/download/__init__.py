"""The download protocol (list, latest, info, mod, zip), its pool, and the policy
wrappers: DownloadMode (what to do on a storage miss) and FilterFile (who is served),
and the lister that remembers listings and resolutions a short while."""

from __future__ import annotations

from ._filter import FilterCheck, FilterRule, ModuleFilter, with_filter
from ._mode import DownloadPolicy, Mode, load_download_policy
from ._pool import Pool, with_pool
from ._protocol import (
    DownloadProtocol,
    LookupStatistics,
    NetworkMode,
    ProtocolWrapper,
    StorageFirst,
    VersionCheck,
    new,
    wrap,
)
from ._resolution import CachedLister, ResolutionStatistics, negative_ttl_for

__all__ = [
    "CachedLister",
    "DownloadPolicy",
    "DownloadProtocol",
    "FilterCheck",
    "FilterRule",
    "LookupStatistics",
    "Mode",
    "ModuleFilter",
    "NetworkMode",
    "Pool",
    "ProtocolWrapper",
    "ResolutionStatistics",
    "StorageFirst",
    "VersionCheck",
    "load_download_policy",
    "negative_ttl_for",
    "new",
    "with_filter",
    "with_pool",
    "wrap",
]
