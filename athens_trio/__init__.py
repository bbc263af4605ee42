"""athens-trio: a Go module proxy in the shape of Athens, on Trio.

The pieces, as in Athens' "From VCS to the User"::

    DownloadProtocol (download/) ── storage hit? serve : stash, then serve
      ├── Storage (storage/)           where modules live; once there, always there
      ├── Stasher (stash/)             Fetcher + Storage, wrapped by Pool and SingleFlight
      │     └── Fetcher (upstream/)    go mod download -json in a temporary GOPATH
      └── Lister (upstream/)           upstream versions and latest

``open_pipeline(config)`` wires them inside a nursery; ``serve(config)`` puts the
GOPROXY HTTP routes (server/) on top, with hypercorn.
"""

from __future__ import annotations

from ._config import Config, load_config
from ._exceptions import (
    AthensTrioError,
    ConfigError,
    FetchStoppedError,
    FetchTimeoutError,
    FetchTooLargeError,
    ForbiddenError,
    GoBinaryError,
    InvalidPathError,
    InvalidRequestError,
    InvalidVersionError,
    NewerGoRequiredError,
    NotFoundError,
    OverloadedError,
    Redirected,
    StorageError,
    UpstreamError,
    ValidatorError,
)
from ._pipeline import Pipeline, open_pipeline
from ._version import __version__ as __version__
from .download import DownloadProtocol
from .server import Server, serve
from .stash import Stasher
from .storage import Backend, DiskStorage, MemoryStorage, StoredZip
from .upstream import (
    FetchedVersion,
    Fetcher,
    GoFetcher,
    GoLister,
    Lister,
    UpstreamVersions,
    VersionInfo,
)

__all__ = [
    "AthensTrioError",
    "Backend",
    "Config",
    "ConfigError",
    "DiskStorage",
    "DownloadProtocol",
    "FetchStoppedError",
    "FetchTimeoutError",
    "FetchTooLargeError",
    "ForbiddenError",
    "FetchedVersion",
    "Fetcher",
    "GoBinaryError",
    "GoFetcher",
    "GoLister",
    "InvalidPathError",
    "InvalidRequestError",
    "InvalidVersionError",
    "Lister",
    "MemoryStorage",
    "NotFoundError",
    "OverloadedError",
    "Pipeline",
    "Redirected",
    "Server",
    "Stasher",
    "StorageError",
    "StoredZip",
    "NewerGoRequiredError",
    "UpstreamError",
    "UpstreamVersions",
    "ValidatorError",
    "VersionInfo",
    "load_config",
    "open_pipeline",
    "serve",
]
