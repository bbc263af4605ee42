"""Integrity of stored zips: nothing corrupt is ever served as good.

Two checks, one cheap and one thorough:

- :func:`zip_is_whole` reads only the zip's tail: the end-of-central-directory record
  must be where the central directory says it ends, and the file must end right after
  it.  A truncated zip (a crash, a full disk, a partial copy) or one with bytes
  appended fails it.  The download protocol runs it before serving a zip.
- :func:`verify_version` recomputes go's ``h1:`` hash of the whole zip (and of the
  go.mod) and compares it with the one recorded when the version was stashed: any
  changed byte fails it.  (A go.mod is small: storage checks its hash on every read.)
  The ``verify`` command runs it over storage.
"""

from __future__ import annotations

import enum
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import trio

from ._exceptions import DamagedVersionError
from ._ziphash import zip_h1
from .storage import Backend, StoredZip

__all__ = ["Verdict", "VerifyResult", "verify_version", "zip_is_whole"]

_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"


async def zip_is_whole(stored: StoredZip) -> bool:
    """Whether the zip's structure reaches exactly to its end.

    Reads the last 22 bytes, where a zip without a comment (every zip go makes) keeps
    its end record; only a zip with a comment costs a read of up to 64 KiB more.
    """
    if stored.size < _EOCD_SIZE:
        return False
    for start in (stored.size - _EOCD_SIZE, max(0, stored.size - _EOCD_SIZE - _MAX_COMMENT)):
        tail = b"".join([chunk async for chunk in stored.chunks(start, stored.size)])
        if _end_record_fits(tail, start, stored.size):
            return True
    return False


def _end_record_fits(tail: bytes, start: int, size: int) -> bool:
    """Whether an end-of-central-directory record in ``tail`` (bytes ``start``..``size``
    of the zip) ends the file and follows right after the central directory it names."""
    position = tail.rfind(_EOCD_SIGNATURE)
    while position >= 0:
        record = tail[position : position + _EOCD_SIZE]
        if len(record) == _EOCD_SIZE:
            cd_size, cd_offset, comment_length = struct.unpack("<IIH", record[12:22])
            eocd_at = start + position
            if eocd_at + _EOCD_SIZE + comment_length == size:
                if 0xFFFFFFFF in (cd_size, cd_offset):
                    # Zip64: the real offsets are in the zip64 record, whose locator
                    # sits right before this one.  Deeper checks are verify's job.
                    locator = tail[max(0, position - 20) : position]
                    return locator.startswith(_ZIP64_LOCATOR_SIGNATURE)
                if cd_offset + cd_size == eocd_at:
                    return True
        position = tail.rfind(_EOCD_SIGNATURE, 0, position)
    return False


# What reading a damaged zip raises: a bad structure, a bad deflate stream, a CRC
# mismatch or a cut-off member (EOFError), an unsupported method (RuntimeError).
_UNREADABLE_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, ValueError)


class Verdict(enum.Enum):
    OK = "ok"
    CORRUPT = "corrupt"  # the zip's hash differs from the recorded one, or it is no zip
    UNRECORDED = "unrecorded"  # no hash was recorded; the computed one is reported


@dataclass(frozen=True)
class VerifyResult:
    module: str
    version: str
    verdict: Verdict
    recorded: str | None
    computed: str | None
    detail: str = ""


async def verify_version(storage: Backend, module: str, version: str) -> VerifyResult:
    """Recompute the stored zip's ``h1:`` hash and compare it with the recorded one."""
    recorded = await storage.zip_sum(module, version)
    try:
        await storage.go_mod(module, version)  # checked against its recorded hash on read
    except DamagedVersionError as exc:
        return VerifyResult(module, version, Verdict.CORRUPT, recorded, None, str(exc))
    stored = await storage.zip(module, version)
    try:
        if stored.path is not None:
            computed = await trio.to_thread.run_sync(zip_h1, stored.path)
        else:
            computed = await _hash_streamed(stored)
    except _UNREADABLE_ZIP as exc:
        return VerifyResult(module, version, Verdict.CORRUPT, recorded, None, repr(exc))
    if recorded is None:
        return VerifyResult(module, version, Verdict.UNRECORDED, None, computed)
    verdict = Verdict.OK if computed == recorded else Verdict.CORRUPT
    return VerifyResult(module, version, verdict, recorded, computed)


async def _hash_streamed(stored: StoredZip) -> str:
    """Spool a streamed zip to a temporary file (zip needs random access), hash it."""
    fd, name = await trio.to_thread.run_sync(tempfile.mkstemp, ".zip")
    path = Path(name)
    try:
        async with trio.wrap_file(os.fdopen(fd, "wb")) as spool:
            async for chunk in stored.chunks():
                await spool.write(chunk)
        return await trio.to_thread.run_sync(zip_h1, path)
    finally:
        await trio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
