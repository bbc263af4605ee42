"""Stash: fetch a version from its VCS and save it into storage, once.

``new(fetcher, storage, with_pool(n), with_singleflight(nursery))`` builds the stasher
the pipeline uses: the plain fetch-then-save, bounded by the pool, shared by the
single-flight (outermost, so callers that join an in-flight stash take no pool slot).
"""

from __future__ import annotations

from ._pool import with_pool
from ._singleflight import with_singleflight
from ._stasher import Stasher, Wrapper, new
from ._validator import with_validator

__all__ = [
    "Stasher",
    "Wrapper",
    "new",
    "with_pool",
    "with_singleflight",
    "with_validator",
]
