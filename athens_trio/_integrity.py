"""The thorough integrity check, ``athens-trio verify``'s: nothing corrupt stays unnoticed.

:func:`verify_version` recomputes go's ``h1:`` hash of the whole zip (and of the go.mod)
and compares it with the one recorded when the version was stashed: any changed byte
fails it.  The cheap checks that run on every read (the go.mod's hash, the zip's tail)
are the storage wrapper's, :func:`athens_trio.storage.with_integrity`.
"""

from __future__ import annotations

import enum
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import trio

from ._exceptions import DamagedVersionError, NotFoundError
from ._ziphash import zip_h1
from .storage import Reader, StoredZip, check_go_mod

__all__ = ["Verdict", "VerifyResult", "verify_version"]


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


async def verify_version(storage: Reader, module: str, version: str) -> VerifyResult:
    """Recompute the stored zip's ``h1:`` hash and compare it with the recorded one
    (a go.mod that does not match its recorded hash makes the version corrupt too).  A
    version stored without its zip (a client asked only for its go.mod) is OK when its
    go.mod is; NotFoundError if the version is not stored at all."""
    try:
        mod = await storage.go_mod(module, version)
        check_go_mod(module, version, mod, await storage.mod_sum(module, version))
    except DamagedVersionError as exc:
        return VerifyResult(module, version, Verdict.CORRUPT, None, None, str(exc))
    try:
        recorded = await storage.zip_sum(module, version)
        stored = await storage.zip(module, version)  # a checked storage checks its tail
    except NotFoundError:
        await storage.info(module, version)  # still stored: then it has no zip
        return VerifyResult(module, version, Verdict.OK, None, None, "go.mod only, no zip")
    except DamagedVersionError as exc:
        recorded = await storage.zip_sum(module, version)
        return VerifyResult(module, version, Verdict.CORRUPT, recorded, None, str(exc))
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
