"""The latest verified tree of a database, kept on disk across restarts.

One file per database, ``<state dir>/<quoted name>.latest``, holding the signed note of
the newest tree the client verified, replaced atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from pathlib import Path

__all__ = ["read_latest", "write_latest"]

_MAX_NOTE = 64 * 1024


def _state_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"{urllib.parse.quote(name, safe='')}.latest"


def read_latest(state_dir: Path, name: str) -> bytes | None:
    """The stored signed note, or None when nothing was stored yet (blocking)."""
    try:
        with _state_file(state_dir, name).open("rb") as f:
            return f.read(_MAX_NOTE + 1)
    except FileNotFoundError:
        return None


def write_latest(state_dir: Path, name: str, note: bytes) -> None:
    """Replace the stored signed note atomically (blocking)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    target = _state_file(state_dir, name)
    fd, temp = tempfile.mkstemp(dir=state_dir, prefix=".latest-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(note)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
