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

__all__ = ["UTF8_NAME_FLAG", "MemberSizeError", "mod_h1", "mod_h1_of_digest", "raw_name", "zip_h1"]

_CHUNK_BYTES = 1 << 20


class MemberSizeError(ValueError):
    """A zip member's data is not the size its header declares."""


#: The general-purpose flag bit saying an entry's name is UTF-8.
UTF8_NAME_FLAG = 0x800


def raw_name(info: zipfile.ZipInfo) -> bytes:
    """An entry's name as stored, the bytes go reads: Python decodes a name without the
    UTF-8 flag as code page 437 (reversibly), and cuts its ``filename`` at a NUL."""
    return info.orig_filename.encode("utf-8" if info.flag_bits & UTF8_NAME_FLAG else "cp437")


def zip_h1(path: str | os.PathLike[str]) -> str:
    """The ``h1:`` hash of the zip at ``path`` (blocking: run it in a thread).

    As go's dirhash.HashZip: a line per entry (a name twice is two lines, both of the
    last entry of that name, as go opens them), names as stored, in byte order.  Each
    member is read up to its declared size and one byte more, never further, so the
    declared sizes bound the work (a zip from elsewhere has them checked first:
    :func:`~athens_trio._modzip.check_module_zip`)."""
    summary = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        names = [raw_name(info) for info in infos]
        last = dict(zip(names, infos, strict=True))
        digests: dict[bytes, str] = {}
        for name in sorted(names):
            if b"\n" in name:
                raise ValueError(f"zip entry name with a newline: {name!r}")
            if name not in digests:
                digests[name] = _member_sha256(archive, last[name])
            summary.update(digests[name].encode() + b"  " + name + b"\n")
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
