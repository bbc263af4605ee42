"""Upstream: where modules come from.

The Fetcher and the Lister of Athens' diagram, and what they stand on: the upstream
GOPROXYs (with every download checked against the checksum database), the go runner
(a throwaway GOPATH per run, its own process group, a clean death) and the private
home that carries the credentials for private modules.  Nothing here reads the
Config: each piece takes the values it needs, and ``open_pipeline`` (``_pipeline.py``)
turns the config into them.
"""

from __future__ import annotations

from ._credentials import private_home
from ._fetcher import FetchedMod, FetchedVersion, Fetcher, GoFetcher, VersionInfo, encode_info
from ._gocmd import (
    GoProcessRunner,
    GoResult,
    GoRunner,
    claim_run_dir,
    classify_go_error,
    sweep_run_dirs,
)
from ._goproxy import (
    CHUNK_BYTES,
    DEFAULT_GOPROXY,
    EntryKind,
    GoproxyClient,
    PlanEntry,
    ProxyOffError,
    ProxyPlan,
    SizeLimits,
    UpstreamInfo,
    UseDirect,
    parse_goproxy,
    plan_from_env,
    read_netrc,
)
from ._lister import GoLister, Lister, PooledLister, UpstreamVersions
from ._proxy import ProxyFetcher, ProxyLister, SumCheck
from ._sumdb_access import sumdb_locator
from ._toolchain import Toolchains, ToolchainStatistics, required_go

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_GOPROXY",
    "EntryKind",
    "FetchedMod",
    "FetchedVersion",
    "Fetcher",
    "GoFetcher",
    "GoLister",
    "GoProcessRunner",
    "GoResult",
    "GoRunner",
    "GoproxyClient",
    "Lister",
    "PlanEntry",
    "PooledLister",
    "ProxyFetcher",
    "ProxyLister",
    "ProxyOffError",
    "ProxyPlan",
    "SizeLimits",
    "SumCheck",
    "ToolchainStatistics",
    "Toolchains",
    "UpstreamInfo",
    "UpstreamVersions",
    "UseDirect",
    "VersionInfo",
    "classify_go_error",
    "encode_info",
    "parse_goproxy",
    "plan_from_env",
    "private_home",
    "read_netrc",
    "claim_run_dir",
    "sweep_run_dirs",
    "required_go",
    "sumdb_locator",
]
