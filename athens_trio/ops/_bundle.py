"""Offline bundles: a tar of a GOPROXY tree, with go's ``h1:`` hashes beside each file.

::

    <escaped module>/@v/list
    <escaped module>/@v/<escaped version>.info
    <escaped module>/@v/<escaped version>.mod
    <escaped module>/@v/<escaped version>.modhash     go's h1: of the go.mod
    <escaped module>/@v/<escaped version>.zip         (absent: a go.mod-only version)
    <escaped module>/@v/<escaped version>.ziphash     go's h1: of the zip

Unpacked, a bundle is a ``GOPROXY=file://`` tree (the hash files are extra files go
ignores), and the layout of disk storage.  :func:`export_bundle` writes one from
storage (a temporary name, renamed when whole: an interrupted export leaves no bundle);
:func:`import_bundle` verifies every go.mod and zip against its recorded hash and the
checksum database (when one is configured and answers) before storing it, and never
replaces a stored version.  Zips are streamed through temporary files, 1 MiB at a
time, never held in memory.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tarfile
import tempfile
import time
import zipfile
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import trio

from .._config import Config
from .._exceptions import AthensTrioError, InvalidRequestError, NotFoundError
from .._module import (
    check_canonical_version,
    check_path,
    escape_path,
    escape_version,
    unescape_path,
    unescape_version,
)
from .._semver import sort_versions
from .._ziphash import mod_h1, zip_h1
from ..storage import CHUNK_SIZE, Backend, DiskStorage
from ..sumdb import GoSumLines, SumDBClient, SumDBUnreachableError, settings_from_env
from ..upstream import GoproxyClient, SumCheck, plan_from_env, read_netrc, sumdb_locator
from ._gomod import Need
from ._progress import Progress

__all__ = ["STORED", "BundleStatistics", "export_bundle", "import_bundle", "open_sum_check"]

log = logging.getLogger("athens_trio.ops")

#: The small files of a version are read whole; these bound what a bundle may make us hold.
_MAX_SMALL = {"info": 64 * 1024, "mod": 16 << 20, "modhash": 1024, "ziphash": 1024}
_SUFFIXES = ("info", "mod", "modhash", "zip", "ziphash")


@dataclass
class BundleStatistics:
    """How an export or an import went, version by version (a running tally)."""

    total: int = 0
    done: int = 0
    #: Export: versions written.  Import: versions (or zips) stored now.
    written: int = 0
    #: Import: versions already stored (kept as they were).
    already_stored: int = 0
    #: Export: asked for but not stored.  Import: refused, with the reason.
    problems: list[str] = field(default_factory=list)
    #: Import: whether the checksum database vouched for what was stored.
    sumdb_checked: int = 0
    sumdb_unreachable: bool = False

    def progress(self) -> Progress:
        return Progress(
            self.done, self.total, f"{self.written} written, {len(self.problems)} problems"
        )


# ---------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    tar.addfile(_member(name, len(data), mtime), io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, opened: IO[bytes], mtime: float) -> None:
    tar.addfile(_member(name, os.fstat(opened.fileno()).st_size, mtime), opened)


async def _spooled_zip(storage: Backend, module: str, version: str, temp_dir: Path) -> Path:
    """The stored zip as a local file: its own where storage has one, else a copy."""
    stored = await storage.zip(module, version)
    if stored.path is not None:
        return stored.path
    target = temp_dir / "zip"
    async with await trio.open_file(target, "wb") as out:
        async for chunk in stored.chunks():
            await out.write(chunk)
    return target


#: A Need's part for export: whatever is stored of the version (its zip if it is).
STORED = "stored"


async def _export_version(
    storage: Backend, tar: tarfile.TarFile, need: Need, temp_dir: Path
) -> bool:
    """Write one version: its go.mod part, and its zip if ``need.part`` is zip or
    :data:`STORED` and it is stored.  False if the version (or the zip asked) is not."""
    module, version = need.module, need.version
    try:
        info = await storage.info(module, version)
        mod = await storage.go_mod(module, version)
        mod_sum = await storage.mod_sum(module, version) or mod_h1(mod)
    except NotFoundError:
        return False
    stem = f"{escape_path(module)}/@v/{escape_version(version)}"
    now = time.time()
    zip_path: Path | None = None
    zip_sum: str | None = None
    if need.part != "mod" and await storage.exists(module, version):
        zip_path = await _spooled_zip(storage, module, version, temp_dir)
        zip_sum = await storage.zip_sum(module, version)
        if zip_sum is None:
            zip_sum = await trio.to_thread.run_sync(zip_h1, zip_path)

    def write() -> None:
        _add_bytes(tar, f"{stem}.info", info, now)
        _add_bytes(tar, f"{stem}.mod", mod, now)
        _add_bytes(tar, f"{stem}.modhash", mod_sum.encode(), now)
        if zip_path is not None and zip_sum is not None:
            _add_bytes(tar, f"{stem}.ziphash", zip_sum.encode(), now)
            with open(zip_path, "rb") as opened:
                _add_file(tar, f"{stem}.zip", opened, now)

    await trio.to_thread.run_sync(write)
    return need.part != "zip" or zip_path is not None


async def export_bundle(
    storage: Backend, needs: Sequence[Need], out: Path, stats: BundleStatistics
) -> BundleStatistics:
    """Write ``needs`` (each version's go.mod part, and its zip where the part is zip)
    from ``storage`` to the tar ``out``; what is not stored is counted as a problem."""
    by_module: dict[str, list[Need]] = defaultdict(list)
    for need in needs:
        by_module[need.module].append(need)
    stats.total = len(needs)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with (
            tempfile.TemporaryDirectory(prefix="athens-export-") as temp,
            tarfile.TarFile(partial, "w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK_SIZE) as tar,
        ):
            for module in sorted(by_module):
                written: list[str] = []
                for need in by_module[module]:
                    try:
                        exported = await _export_version(storage, tar, need, Path(temp))
                    except AthensTrioError as exc:  # damaged: verify --repair, then fetch
                        stats.problems.append(f"{module}@{need.version}: {exc}")
                        exported = False
                    else:
                        if not exported:
                            what = "its zip is" if need.part == "zip" else "it is"
                            stats.problems.append(f"{module}@{need.version}: {what} not stored")
                    if exported:
                        stats.written += 1
                        written.append(need.version)
                    stats.done += 1
                    with contextlib.suppress(FileNotFoundError):
                        (Path(temp) / "zip").unlink()
                if written:
                    listing = "".join(f"{v}\n" for v in sort_versions(written)).encode()
                    name = f"{escape_path(module)}/@v/list"
                    await trio.to_thread.run_sync(_add_bytes, tar, name, listing, time.time())
        partial.rename(out)
    finally:
        partial.unlink(missing_ok=True)
    return stats


# ---------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------


class _Refused(Exception):
    """A version of the bundle that is not stored, and why."""


def _members(tar: tarfile.TarFile) -> dict[tuple[str, str], dict[str, tarfile.TarInfo]]:
    """The bundle's version files by (module, version) and suffix; the rest (``list``,
    directories, anything not a version's file) is ignored."""
    found: dict[tuple[str, str], dict[str, tarfile.TarInfo]] = defaultdict(dict)
    for member in tar.getmembers():
        if not member.isfile():
            continue
        directory, sep, name = member.name.removeprefix("./").rpartition("/@v/")
        stem, dot, suffix = name.rpartition(".")
        if not sep or not dot or suffix not in _SUFFIXES:
            continue
        try:
            module, version = unescape_path(directory), unescape_version(stem)
            check_path(module)
            check_canonical_version(version)
        except (AthensTrioError, ValueError):
            continue
        found[(module, version)][suffix] = member
    return found


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, suffix: str) -> bytes:
    if member.size > _MAX_SMALL[suffix]:
        raise _Refused(f"its .{suffix} is {member.size} bytes, more than any real one")
    extracted = tar.extractfile(member)
    assert extracted is not None, "a regular file"
    with extracted:
        return extracted.read()


def _extract_zip(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> str:
    """Copy the zip out in chunks and return its h1: hash (_Refused if not a zip)."""
    extracted = tar.extractfile(member)
    assert extracted is not None, "a regular file"
    with extracted, open(target, "wb") as out:
        while chunk := extracted.read(CHUNK_SIZE):
            out.write(chunk)
    try:
        return zip_h1(target)
    except (zipfile.BadZipFile, ValueError) as exc:
        raise _Refused(f"its zip is not a valid zip: {exc}") from None


def _check_hash(what: str, actual: str, recorded: str | None, sums: str | None) -> None:
    if recorded is None and sums is None:
        raise _Refused(f"its {what} has no recorded hash and no checksum database vouches for it")
    if recorded is not None and actual != recorded:
        raise _Refused(f"its {what} hashes to {actual}, not to its recorded {recorded}")
    if sums is not None and actual != sums:
        raise _Refused(f"its {what} hashes to {actual}; the checksum database says {sums}")


class _Importer:
    def __init__(
        self, storage: Backend, sums: SumCheck, temp_dir: Path, stats: BundleStatistics
    ) -> None:
        self._storage = storage
        self._sums = sums
        self._temp_dir = temp_dir
        self.stats = stats

    async def _database(self, module: str, version: str) -> GoSumLines | None:
        """What the checksum database says, or None when there is none, it skips the
        module, or it did not answer (from then on it is not asked again)."""
        if self.stats.sumdb_unreachable:
            return None
        try:
            lines = await self._sums.lines(module, version)
        except SumDBUnreachableError as exc:
            log.warning("checksum database unreachable, recorded hashes only: %s", exc)
            self.stats.sumdb_unreachable = True
            return None
        except AthensTrioError as exc:
            raise _Refused(f"the checksum database does not vouch for it: {exc}") from None
        if lines is not None:
            self.stats.sumdb_checked += 1
        return lines

    async def version(
        self, tar: tarfile.TarFile, module: str, version: str, files: dict[str, tarfile.TarInfo]
    ) -> None:
        def small(suffix: str) -> bytes | None:
            return _read_small(tar, files[suffix], suffix) if suffix in files else None

        info, mod, modhash, ziphash = [
            await trio.to_thread.run_sync(small, s) for s in ("info", "mod", "modhash", "ziphash")
        ]
        if info is None or mod is None:
            raise _Refused("it lacks its .info or its .mod")
        try:
            if json.loads(info)["Version"] != version:
                raise _Refused("its .info names another version")
        except (ValueError, KeyError, TypeError):
            raise _Refused("its .info is not a version's JSON") from None
        lines = await self._database(module, version)
        recorded_mod = modhash.decode().strip() if modhash else None
        _check_hash("go.mod", mod_h1(mod), recorded_mod, lines.mod_hash if lines else None)
        zip_file = self._temp_dir / "zip"
        zip_sum: str | None = None
        if "zip" in files:
            zip_sum = await trio.to_thread.run_sync(_extract_zip, tar, files["zip"], zip_file)
            recorded_zip = ziphash.decode().strip() if ziphash else None
            _check_hash("zip", zip_sum, recorded_zip, lines.zip_hash if lines else None)
        # Verified whole: now stored, each part only if absent.
        stored_mod = await self._storage.save_mod(
            module, version, info=info, mod=mod, mod_sum=mod_h1(mod)
        )
        if not stored_mod and await self._storage.go_mod(module, version) != mod:
            raise _Refused("storage holds another go.mod for it (kept; nothing imported)")
        stored_zip = False
        if zip_sum is not None:
            stored_zip = await self._storage.save_zip(
                module, version, zip_file=zip_file, zip_sum=zip_sum
            )
        if stored_mod or stored_zip:
            self.stats.written += 1
        else:
            self.stats.already_stored += 1


async def import_bundle(
    storage: Backend,
    bundle: Path,
    sums: SumCheck,
    stats: BundleStatistics,
    *,
    temp_root: str | None = None,
) -> BundleStatistics:
    """Verify and store every version of the tar ``bundle``; refusals are counted in
    ``stats.problems`` (InvalidRequestError if it is not a tar at all)."""
    try:
        tar = await trio.to_thread.run_sync(tarfile.open, bundle, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidRequestError(f"{bundle}: not a readable tar: {exc}") from None
    with tar, tempfile.TemporaryDirectory(prefix="athens-import-", dir=temp_root) as temp:
        versions = await trio.to_thread.run_sync(_members, tar)
        stats.total = len(versions)
        importer = _Importer(storage, sums, Path(temp), stats)
        for (module, version), files in sorted(versions.items()):
            try:
                await importer.version(tar, module, version, files)
            except _Refused as exc:
                stats.problems.append(f"{module}@{version}: {exc}")
            finally:
                stats.done += 1
                with contextlib.suppress(FileNotFoundError):
                    (Path(temp) / "zip").unlink()
    return stats


@contextlib.asynccontextmanager
async def open_sum_check(config: Config, storage: Backend) -> AsyncIterator[SumCheck]:
    """The checksum database the pipeline's go would ask (GOSUMDB, GONOSUMDB, GOPRIVATE
    in GoBinaryEnvVars; sum.golang.org by default), its verified tree kept where the
    server keeps it; ``SumCheck(None)`` when GOSUMDB is off."""
    # Imported here: the pipeline imports this package (its activity record).
    from .._pipeline import HTTP_TIMEOUT, SUMDB_STATE_DIR, go_env

    settings = settings_from_env(go_env(config))
    if settings.database is None:
        yield SumCheck(None)
        return
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        with contextlib.ExitStack() as stack:
            if isinstance(storage, DiskStorage):
                state = storage.root / SUMDB_STATE_DIR
            else:
                state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            # The logins the server's upstream client has (NETRCPath), for the proxies.
            logins = read_netrc(Path(config.netrc_path)) if config.netrc_path else None
            plan = plan_from_env(go_env(config))
            locate = sumdb_locator(GoproxyClient(plan, http, netrc=logins))
            yield SumCheck(SumDBClient(settings, http, state, timeout=HTTP_TIMEOUT, locate=locate))
