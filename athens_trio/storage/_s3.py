"""Storage in an S3 bucket, laid out exactly as a GOPROXY tree.

::

    <prefix><escaped module path>/@v/list
    <prefix><escaped module path>/@v/<escaped version>.info
    <prefix><escaped module path>/@v/<escaped version>.mod
    <prefix><escaped module path>/@v/<escaped version>.zip
    <prefix><escaped module path>/@v/<escaped version>.ziphash   (go's h1: hashes)
    <prefix><escaped module path>/@v/<escaped version>.modhash

the same tree as disk storage's, so a bucket served as a static site (or behind a CDN)
is itself a GOPROXY.

Atomicity without renames: every object is written create-if-absent (``If-None-Match:
*``, a 412 when the key is taken), in disk storage's order with each part's marker last
(``.mod``, ``.modhash``, then ``.info`` for the go.mod part; ``.ziphash``, then ``.zip``
for the zip part, only once ``.info`` is there).  An object is visible whole or not at
all (S3 has no partial objects; a zip larger than a part goes up as a multipart upload,
completed create-if-absent).  Saves of one version race object by object: a save that
finds a key taken compares the stored bytes with its own; the same bytes (a concurrent
save of the same fetch) and it goes on, other bytes and the part is the other save's,
so it changes nothing more, waits for that save's marker and answers False.  The
``list`` object alone is rewritten (it serves static GOPROXY clients; athens-trio lists
by ListObjectsV2).

Leftovers of killed saves (a part's objects without its marker) are never served and
are removed by :meth:`S3Storage.sweep`, or by a later save that finds them an hour old.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import trio

from .._exceptions import InvalidPathError, InvalidVersionError, NotFoundError, StorageError
from .._module import escape_path, escape_version, unescape_path, unescape_version
from .._redact import redact_url
from .._semver import sort_versions
from ._backend import CHUNK_SIZE, Backend, StoredZip
from ._s3client import (
    Bucket,
    CredentialSource,
    FileRange,
    ObjectHead,
    S3Client,
    S3PreconditionFailed,
)

__all__ = ["DEFAULT_PART_SIZE", "Bucket", "CredentialSource", "S3Storage"]

log = logging.getLogger("athens_trio.storage")

#: Seconds the clean-up of a zip saved without its go.mod part may take, shielded.
_CLEANUP_SECONDS = 30.0
#: Zips larger than this go up as multipart uploads of parts this large (S3's minimum
#: part is 5 MiB).  Memory is bounded either way: bodies are streamed from the file.
DEFAULT_PART_SIZE = 16 << 20
_MIN_PART_SIZE = 5 << 20

#: Each part's objects in the order a save writes them, the part's marker last.
_MOD_PART = ("mod", "modhash", "info")
_ZIP_PART = ("ziphash", "zip")
#: How long a save that lost a race waits for the winner's marker.
_WINNER_WAIT = 10.0
#: Objects of a part without its marker older than this are a killed save's leftovers.
_ABANDONED_AFTER = 3600.0


def _one_byte_file() -> Path:
    fd, name = tempfile.mkstemp(prefix="athens-trio-s3-check-")
    with os.fdopen(fd, "wb") as f:
        f.write(b"1")
    return Path(name)


class _S3Zip(StoredZip):
    """A stored zip, read by ranged GETs of the object whose size was promised (its
    ETag): one removed and saved again in between is another object, not read."""

    def __init__(self, client: S3Client, key: str, head: ObjectHead, redirect_url: str | None):
        self._client = client
        self._key = key
        self.size = head.size
        self._etag = head.etag
        self.redirect_url = redirect_url

    async def chunks(self, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return
        async with self._client.open_range(self._key, start, stop, if_match=self._etag) as response:
            remaining = stop - start
            async for chunk in response.aiter_bytes(CHUNK_SIZE):
                remaining -= len(chunk)
                yield chunk
            if remaining:
                raise StorageError(f"{self._key} is shorter than its recorded size")


class _LostRace(Exception):
    """Another save stored this part with other bytes."""


class S3Storage(Backend):
    """A GOPROXY tree in an S3 bucket under ``prefix``; see the module docstring.

    ``redirect_expiry`` (seconds), if set, gives each stored zip a presigned GET URL valid
    that long (:attr:`StoredZip.redirect_url`), which the server answers with instead of
    the bytes."""

    def __init__(
        self,
        bucket: Bucket,
        credentials: CredentialSource,
        *,
        prefix: str = "",
        redirect_expiry: int | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        timeout: float = 30.0,
    ) -> None:
        if part_size < _MIN_PART_SIZE:
            raise ValueError(f"part_size {part_size} is below S3's minimum of 5 MiB")
        self._client = S3Client(bucket, credentials, timeout=timeout)
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._redirect_expiry = redirect_expiry
        self._part_size = part_size
        where = f"{bucket.bucket}/{self._prefix}" if self._prefix else bucket.bucket
        self.description = f"s3 bucket {where}" + (
            f" at {redact_url(bucket.endpoint)}" if bucket.endpoint else f" in {bucket.region}"
        )
        self._list_locks: dict[str, trio.Lock] = {}
        self._writes_checked = False

    # --- keys -----------------------------------------------------------------------

    def _version_dir(self, module: str) -> str:
        return f"{self._prefix}{escape_path(module)}/@v/"

    def _key(self, module: str, version: str, suffix: str) -> str:
        return f"{self._version_dir(module)}{escape_version(version)}.{suffix}"

    async def _require(self, module: str, version: str, *suffixes: str) -> None:
        """NotFoundError unless each of the version's ``suffixes`` objects is stored
        (asked at once: a round trip each is a request's latency)."""
        missing: list[str] = []

        async def check(suffix: str) -> None:
            if not await self._client.exists(self._key(module, version, suffix)):
                missing.append(suffix)

        async with trio.open_nursery() as nursery:
            for suffix in suffixes:
                nursery.start_soon(check, suffix)
        if missing:
            raise NotFoundError(f"{module}@{version} is not in storage")

    # --- reading --------------------------------------------------------------------

    async def list_versions(self, module: str) -> list[str]:
        directory = self._version_dir(module)
        versions = []
        async for page in self._client.list_keys(directory, delimiter="/"):
            for key, _ in page:
                entry = self._catalog_entry(key)
                if entry is not None:
                    versions.append(entry[1])
        return versions

    async def exists(self, module: str, version: str) -> bool:
        try:
            await self._require(module, version, "info", "mod", "zip")
        except NotFoundError:
            return False
        return True

    async def info(self, module: str, version: str) -> bytes:
        return await self._client.get(self._key(module, version, "info"))

    async def go_mod(self, module: str, version: str) -> bytes:
        # A .mod without its .info is an interrupted save, not a stored version.
        await self._require(module, version, "info")
        return await self._client.get(self._key(module, version, "mod"))

    async def zip(self, module: str, version: str) -> StoredZip:
        await self._require(module, version, "info")
        key = self._key(module, version, "zip")
        head = await self._client.head(key)
        if head is None:
            raise NotFoundError(f"{module}@{version}: its zip is not in storage")
        url = None
        if self._redirect_expiry is not None:
            url = await self._client.presign_get(key, self._redirect_expiry)
        return _S3Zip(self._client, key, head, url)

    async def zip_sum(self, module: str, version: str) -> str | None:
        return await self._recorded(module, version, "ziphash", ("info", "mod", "zip"))

    async def mod_sum(self, module: str, version: str) -> str | None:
        return await self._recorded(module, version, "modhash", ("info", "mod"))

    async def _recorded(
        self, module: str, version: str, suffix: str, part: tuple[str, ...]
    ) -> str | None:
        recorded = await self._client.get_or_none(self._key(module, version, suffix))
        # The hash of a part that is not stored (yet) is no hash of anything.
        await self._require(module, version, *part)
        return (recorded.decode().strip() or None) if recorded else None

    async def catalog(
        self, *, limiter: trio.CapacityLimiter | None = None
    ) -> AsyncIterator[tuple[str, str]]:
        async for page in self._client.list_keys(self._prefix):
            for key, _ in page:
                entry = self._catalog_entry(key)
                if entry is not None:
                    yield entry

    def _catalog_entry(self, key: str) -> tuple[str, str] | None:
        escaped_module, sep, name = key[len(self._prefix) :].rpartition("/@v/")
        if not sep or "/" in name or name.startswith(".") or not name.endswith(".info"):
            return None
        try:
            return unescape_path(escaped_module), unescape_version(name[: -len(".info")])
        except (InvalidPathError, InvalidVersionError):
            return None  # not ours: something else put a key here

    # --- saving ---------------------------------------------------------------------

    async def save_mod(
        self, module: str, version: str, *, info: bytes, mod: bytes, mod_sum: str | None = None
    ) -> bool:
        stored_info = await self._client.exists(self._key(module, version, "info"))
        if stored_info and await self._client.exists(self._key(module, version, "mod")):
            return False
        # A .info whose .mod was lost is no version: this save makes it whole again.
        bodies: dict[str, bytes | FileRange] = {"mod": mod, "info": info}
        if mod_sum:
            bodies["modhash"] = mod_sum.encode()
        try:
            saved = await self._write_part(module, version, _MOD_PART, bodies)
        except _LostRace:
            return await self._wait_for_winner(module, version, "info")
        if saved:
            await self._update_list(module)
        return saved

    async def save_zip(
        self, module: str, version: str, *, zip_file: Path, zip_sum: str | None = None
    ) -> bool:
        if await self._client.exists(self._key(module, version, "zip")):
            return False
        if not await self._client.exists(self._key(module, version, "info")):
            raise NotFoundError(f"{module}@{version}: its go.mod is not stored")
        size = (await trio.Path(zip_file).stat()).st_size
        bodies: dict[str, bytes | FileRange] = {"zip": FileRange(Path(zip_file), 0, size)}
        if zip_sum:
            bodies["ziphash"] = zip_sum.encode()
        try:
            saved = await self._write_part(module, version, _ZIP_PART, bodies)
        except _LostRace:
            return await self._wait_for_winner(module, version, "zip")
        finally:
            with trio.CancelScope(shield=True):  # handed over: ours to remove, cancelled or not
                await trio.Path(zip_file).unlink(missing_ok=True)
        if saved and not await self._info_still_there(module, version):
            # Deleted while the zip went up (gc, an operator, a repair): a zip without
            # its go.mod part is no version, and only a sweep would ever remove it.
            # Marker first, as delete() does; shielded, so the two go together.
            with trio.move_on_after(_CLEANUP_SECONDS, shield=True):
                for suffix in reversed(_ZIP_PART):
                    await self._client.delete(self._key(module, version, suffix))
            raise NotFoundError(f"{module}@{version}: its go.mod is not stored")
        return saved

    async def _info_still_there(self, module: str, version: str) -> bool:
        # A failure to look says nothing against the zip just stored: kept (a sweep
        # takes a zip left without its .info).
        try:
            return await self._client.exists(self._key(module, version, "info"))
        except StorageError:
            return True

    async def _write_part(
        self,
        module: str,
        version: str,
        part: tuple[str, ...],
        bodies: Mapping[str, bytes | FileRange],
    ) -> bool:
        """Write a part's objects create-if-absent, its marker last; whether this save
        wrote the marker.  Raises _LostRace where another save's bytes differ."""
        *files, marker = part
        for suffix in files:
            body = bodies.get(suffix)
            if body is not None:
                await self._create_or_match(self._key(module, version, suffix), body)
        key = self._key(module, version, marker)
        try:
            await self._put(key, bodies[marker])
        except S3PreconditionFailed:
            return False  # stored by a concurrent save (of equal bytes, as checked)
        return True

    async def _put(self, key: str, body: bytes | FileRange) -> None:
        if isinstance(body, FileRange) and body.length > self._part_size:
            await self._client.put_multipart(key, body.path, body.length, self._part_size)
        else:
            await self._client.put(key, body, if_absent=True)

    async def _create_or_match(self, key: str, body: bytes | FileRange) -> None:
        """Create ``key`` with ``body`` unless a concurrent save wrote the same bytes; a
        killed save's leftover an hour old goes first, even of the same bytes (adopted,
        its age would let a sweep take it for a leftover still); other bytes raise
        _LostRace."""
        assert isinstance(body, bytes), "only a part's marker may be a streamed file"
        for _ in range(3):
            try:
                await self._put(key, body)
                return
            except S3PreconditionFailed:
                pass
            head = await self._client.head(key)
            if head is None:
                continue  # removed meanwhile: create it
            if head.last_modified < time.time() - _ABANDONED_AFTER:
                # Only the object looked at: another replica may have replaced it since.
                with contextlib.suppress(S3PreconditionFailed):
                    await self._client.delete(key, if_match=head.etag)
                continue
            if await self._client.get_or_none(key) == body:
                return
            raise _LostRace(key)
        raise _LostRace(key)

    async def _wait_for_winner(self, module: str, version: str, marker: str) -> bool:
        """A concurrent save with other bytes wrote first: the part is its.  Wait for its
        marker, then answer False, as for any part already stored."""
        key = self._key(module, version, marker)
        with trio.move_on_after(_WINNER_WAIT):
            # Another process's write, maybe: only asking the bucket tells.
            while not await self._client.exists(key):  # noqa: ASYNC110
                await trio.sleep(0.05)
            return False
        raise StorageError(
            f"{module}@{version}: another save left other bytes and no .{marker}; "
            "the first save after they are an hour old removes them"
        )

    async def delete(self, module: str, version: str) -> None:
        info = self._key(module, version, "info")
        if not await self._client.exists(info):
            raise NotFoundError(f"{module}@{version} is not in storage")
        # .info first: from that instant on, the version is gone as a whole.  Then the
        # rest, the reverse of the order saves write them.
        await self._client.delete(info)
        for suffix in reversed((*_MOD_PART[:-1], *_ZIP_PART)):
            await self._client.delete(self._key(module, version, suffix))
        await self._update_list(module)

    async def _update_list(self, module: str) -> None:
        """Rewrite ``@v/list`` for static GOPROXY clients; failing fails nothing (the
        next save writes it again).  Another replica may be writing it too: each writer
        lists again after its write, and writes again if the versions changed."""
        lock = self._list_locks.setdefault(module, trio.Lock())
        async with lock:
            try:
                versions = sort_versions(await self.list_versions(module))
                while True:
                    body = "".join(f"{v}\n" for v in versions).encode()
                    await self._client.put(
                        f"{self._version_dir(module)}list", body, if_absent=False
                    )
                    again = sort_versions(await self.list_versions(module))
                    if again == versions:
                        return
                    versions = again
            except StorageError as exc:
                log.warning("cannot update %slist: %s", self._version_dir(module), exc)

    # --- lifecycle ------------------------------------------------------------------

    async def ready(self) -> None:
        await self._client.ready()
        if not self._writes_checked:
            await self._check_conditional_writes()
            self._writes_checked = True

    async def _check_conditional_writes(self) -> None:
        """Refuse a server that ignores ``If-None-Match: *`` (on PutObject or on
        CompleteMultipartUpload): every save's "never replace" rests on it, and such a
        server would replace stored bytes without a word.  Once per process, on a key of
        its own; a failure (but for credentials that may not write) fails ready(), and
        the next ready() checks again."""
        key = f"{self._prefix}.locks/conditional-write-check-{secrets.token_hex(8)}"
        asked = "ignores If-None-Match: * on {}: athens-trio needs conditional writes"
        one_byte = await trio.to_thread.run_sync(_one_byte_file)
        try:
            first = await self._client.send("PUT", key, headers={"If-None-Match": "*"}, body=b"1")
            if first.status_code == 403:
                # Credentials that may not write (an export, a verify) replace nothing.
                log.warning("%s: conditional writes not checked: writing refused", self.description)
                return
            if first.status_code != 200:
                raise await self._client.failure(first, f"PUT {key}")
            with contextlib.suppress(S3PreconditionFailed):
                await self._client.put(key, b"2", if_absent=True)
                raise StorageError(f"{self.description} {asked.format('PutObject')}")
            with contextlib.suppress(S3PreconditionFailed):
                await self._client.put_multipart(key, one_byte, 1, self._part_size)
                raise StorageError(f"{self.description} {asked.format('CompleteMultipartUpload')}")
        finally:
            with trio.CancelScope(shield=True):
                await trio.Path(one_byte).unlink(missing_ok=True)
                with contextlib.suppress(StorageError):
                    await self._client.delete(key)

    async def sweep(self, older_than: float = 3600.0) -> int:
        """Remove what killed saves left: a version's objects without its ``.info``, a
        ``.ziphash`` without its ``.zip``, unfinished multipart uploads, all older than
        ``older_than`` seconds (another replica may be saving now); return how many."""
        removed = 0
        try:
            removed = await self._sweep(time.time() - older_than)
        except StorageError as exc:
            # Housekeeping: a bucket that refuses a listing (a narrow policy) or fails
            # now fails no request; the next start sweeps again.
            log.warning("cannot sweep %s: %s", self.description, exc)
        return removed

    async def _sweep(self, cutoff: float) -> int:
        removed = 0
        stems: dict[str, dict[str, float]] = {}
        async for page in self._client.list_keys(self._prefix):
            for key, modified in page:
                stem, dot, suffix = key.rpartition(".")
                if dot and "/@v/" in stem and suffix in (*_MOD_PART, *_ZIP_PART):
                    stems.setdefault(stem, {})[suffix] = modified
        for stem, present in stems.items():
            for suffix, modified in present.items():
                marker = "zip" if suffix == "ziphash" else "info"
                if ("info" not in present or marker not in present) and modified < cutoff:
                    removed += await self._remove_leftover(stem, suffix, marker, cutoff)
        # A killed multipart upload's parts stay (and are paid for) until aborted.
        async for uploads in self._client.list_uploads(self._prefix):
            for key, upload_id, initiated in uploads:
                if initiated < cutoff:
                    await self._client.abort_upload(key, upload_id)
                    removed += 1
        return removed

    async def _remove_leftover(self, stem: str, suffix: str, marker: str, cutoff: float) -> int:
        """Remove ``stem.suffix`` if it is still a leftover: the listing may be minutes
        old, and a save may have completed its part since (its marker there now) or
        written the object afresh.  Looked at again right before, deleted only as seen."""
        for needed in {"info", marker}:
            if await self._client.head(f"{stem}.{needed}") is None:
                break  # still part of no whole version (or part)
        else:
            return 0  # its version's part completed since the listing
        head = await self._client.head(f"{stem}.{suffix}")
        if head is None or head.last_modified >= cutoff:
            return 0
        try:
            await self._client.delete(f"{stem}.{suffix}", if_match=head.etag)
        except S3PreconditionFailed:
            return 0
        return 1

    async def aclose(self) -> None:
        await self._client.aclose()
