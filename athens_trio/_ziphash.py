"""Go's ``h1:`` hashes of a module zip and of a go.mod (golang.org/x/mod/sumdb/dirhash).

The hash go records in go.sum: SHA-256 over the lines ``"<sha256 hex>  <name>\\n"`` of
every file in the zip, sorted by name, base64-encoded, prefixed ``h1:``.  Files are
streamed, so a large zip is never held in memory.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile

__all__ = ["mod_h1", "mod_h1_of_digest", "zip_h1"]


def zip_h1(path: str | os.PathLike[str]) -> str:
    """The ``h1:`` hash of the zip at ``path`` (blocking: run it in a thread)."""
    summary = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            if "\n" in name:
                raise ValueError(f"zip entry name with a newline: {name!r}")
            digest = hashlib.sha256()
            with archive.open(name) as member:
                while chunk := member.read(1 << 20):
                    digest.update(chunk)
            summary.update(f"{digest.hexdigest()}  {name}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def mod_h1(mod: bytes) -> str:
    """The ``h1:`` hash go records for a version's go.mod (its ``/go.mod`` go.sum line):
    the same summary over the one file ``go.mod``."""
    return mod_h1_of_digest(hashlib.sha256(mod).hexdigest())


def mod_h1_of_digest(sha256_hex: str) -> str:
    """:func:`mod_h1` of a go.mod whose SHA-256 (hex) is ``sha256_hex``: for one hashed
    as it streams by."""
    line = f"{sha256_hex}  go.mod\n"
    return "h1:" + base64.b64encode(hashlib.sha256(line.encode()).digest()).decode()
