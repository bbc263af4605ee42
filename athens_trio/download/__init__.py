"""The download protocol (list, latest, info, mod, zip) and its pool wrapper."""

from __future__ import annotations

from ._pool import with_pool
from ._protocol import DownloadProtocol, NetworkMode, ProtocolWrapper, new

__all__ = ["DownloadProtocol", "NetworkMode", "ProtocolWrapper", "new", "with_pool"]
