"""Storage: where modules live.  Once there, always there.

The roles a component may ask for (:class:`Reader`, :class:`Saver`, :class:`Deleter`,
:class:`Cataloger`, :class:`Lifecycle`) and :class:`Backend`, all of them, which each
backend implements in one module and proves with :mod:`.compliance`:

- :class:`MemoryStorage`, a dict; gone with the process.
- :class:`DiskStorage`, a GOPROXY tree under a root directory.

:func:`with_integrity` wraps any backend so that a damaged go.mod or zip is never
handed out as good (it raises :class:`~athens_trio.DamagedVersionError`).
"""

from __future__ import annotations

from ._backend import (
    CHUNK_SIZE,
    Backend,
    Cataloger,
    Deleter,
    Lifecycle,
    Reader,
    Saver,
    StoredBytes,
    StoredZip,
)
from ._disk import TAKEDOWN_MARKER, DiskStorage, mark_takedown
from ._integrity import check_go_mod, with_integrity, zip_is_whole
from ._memory import MemoryStorage

__all__ = [
    "CHUNK_SIZE",
    "TAKEDOWN_MARKER",
    "Backend",
    "Cataloger",
    "Deleter",
    "DiskStorage",
    "Lifecycle",
    "MemoryStorage",
    "Reader",
    "mark_takedown",
    "Saver",
    "StoredBytes",
    "StoredZip",
    "check_go_mod",
    "with_integrity",
    "zip_is_whole",
]
