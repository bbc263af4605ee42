"""The download protocol (list, latest, info, mod, zip), its pool, and the policy
wrappers: DownloadMode (what to do on a storage miss) and FilterFile (who is served)."""

from __future__ import annotations

from ._filter import FilterRule, ModuleFilter, with_filter
from ._mode import DownloadPolicy, Mode, load_download_policy, proxy_path
from ._pool import with_pool
from ._protocol import DownloadProtocol, LookupObserver, NetworkMode, ProtocolWrapper, new

__all__ = [
    "DownloadPolicy",
    "DownloadProtocol",
    "FilterRule",
    "LookupObserver",
    "Mode",
    "ModuleFilter",
    "NetworkMode",
    "ProtocolWrapper",
    "load_download_policy",
    "new",
    "proxy_path",
    "with_filter",
    "with_pool",
]
