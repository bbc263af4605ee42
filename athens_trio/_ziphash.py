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

__all__ = ["MemberSizeError", "mod_h1", "mod_h1_of_digest", "zip_h1"]

_CHUNK_BYTES = 1 << 20


class MemberSizeError(ValueError):
    """A zip member's data is not the size its header declares."""


def zip_h1(path: str | os.PathLike[str]) -> str:
    """The ``h1:`` hash of the zip at ``path`` (blocking: run it in a thread).

    Each member is read up to its declared size and one byte more, never further, so
    the declared sizes bound the work (a zip from elsewhere has them checked first:
    :func:`~athens_trio._modzip.check_module_zip`)."""
    summary = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        # By name, the last entry of a name winning, as ZipFile.open(name) picks.
        members = {info.filename: info for info in archive.infolist()}
        for name in sorted(members):
            if "\n" in name:
                raise ValueError(f"zip entry name with a newline: {name!r}")
            digest = _member_sha256(archive, members[name])
            summary.update(f"{digest}  {name}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def _member_sha256(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """The SHA-256 (hex) of one member's data, which must be its declared size."""
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        # zipfile would quietly hash only the declared part of a longer stored member.
        raise MemberSizeError(
            f"zip entry {info.filename!r}: stored with {info.compress_size} bytes of data, "
            f"{info.file_size} declared"
        )
    digest = hashlib.sha256()
    left = info.file_size + 1  # the one byte more that shows a member lying about its size
    with archive.open(info) as member:
        while left > 0 and (chunk := member.read(min(_CHUNK_BYTES, left))):
            digest.update(chunk)
            left -= len(chunk)
    read = info.file_size + 1 - left
    if read > info.file_size:
        raise MemberSizeError(
            f"zip entry {info.filename!r}: more data than its declared {info.file_size} bytes"
        )
    if read < info.file_size:
        raise MemberSizeError(
            f"zip entry {info.filename!r}: {read} bytes of data, {info.file_size} declared"
        )
    return digest.hexdigest()


def mod_h1(mod: bytes) -> str:
    """The ``h1:`` hash go records for a version's go.mod (its ``/go.mod`` go.sum line):
    the same summary over the one file ``go.mod``."""
    return mod_h1_of_digest(hashlib.sha256(mod).hexdigest())


def mod_h1_of_digest(sha256_hex: str) -> str:
    """:func:`mod_h1` of a go.mod whose SHA-256 (hex) is ``sha256_hex``: for one hashed
    as it streams by."""
    line = f"{sha256_hex}  go.mod\n"
    return "h1:" + base64.b64encode(hashlib.sha256(line.encode()).digest()).decode()
