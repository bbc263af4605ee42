"""Upstream: where modules come from.

The Fetcher and the Lister of Athens' diagram, and what they stand on: the go runner
(a throwaway GOPATH per run, its own process group, a clean death) and the private
home that carries the credentials for private modules.
"""

from __future__ import annotations

from ._credentials import private_home
from ._fetcher import FetchedVersion, Fetcher, GoFetcher, VersionInfo, encode_info
from ._gocmd import GoResult, GoRunner, classify_go_error
from ._lister import GoLister, Lister, PooledLister, UpstreamVersions

__all__ = [
    "FetchedVersion",
    "Fetcher",
    "GoFetcher",
    "GoLister",
    "GoResult",
    "GoRunner",
    "Lister",
    "PooledLister",
    "UpstreamVersions",
    "VersionInfo",
    "classify_go_error",
    "encode_info",
    "private_home",
]
