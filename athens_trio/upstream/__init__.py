"""Upstream: where modules come from.

The Fetcher and the Lister of Athens' diagram, and what they stand on: the go runner
(a throwaway GOPATH per run, its own process group, a clean death) and the private
home that carries the credentials for private modules.  Nothing here reads the
Config: each piece takes the values it needs, and ``open_pipeline`` (``_pipeline.py``)
turns the config into them.
"""

from __future__ import annotations

from ._credentials import private_home
from ._fetcher import FetchedMod, FetchedVersion, Fetcher, GoFetcher, VersionInfo, encode_info
from ._gocmd import GoProcessRunner, GoResult, GoRunner, classify_go_error
from ._lister import GoLister, Lister, PooledLister, UpstreamVersions

__all__ = [
    "FetchedMod",
    "FetchedVersion",
    "Fetcher",
    "GoFetcher",
    "GoLister",
    "GoProcessRunner",
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
