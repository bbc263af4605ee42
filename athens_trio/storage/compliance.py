"""The storage compliance suite: what every backend must do, as async checks.

As Athens' pkg/storage/compliance, it ships with the package so that a backend's own
tests are a few lines: each check in :data:`CHECKS` takes a factory that makes a fresh,
empty backend and a scratch directory for the zip files it hands to ``save``, and raises
:class:`ComplianceFailure` (an AssertionError) where the backend falls short::

    @pytest.mark.parametrize("check", compliance.CHECKS.values(), ids=list(compliance.CHECKS))
    async def test_s3_storage(check: compliance.Check, tmp_path: Path) -> None:
        await check(lambda: S3Storage(...), tmp_path)

Nothing here imports a test framework.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from .._exceptions import NotFoundError
from ._backend import CHUNK_SIZE, Backend

__all__ = ["CHECKS", "BackendFactory", "Check", "ComplianceFailure", "run_all"]

#: Makes a fresh, empty backend (not yet ready()).
BackendFactory = Callable[[], Backend]
#: One check: ``await check(new_backend, scratch_directory)``.
Check = Callable[[BackendFactory, Path], Awaitable[None]]

MODULE = "github.com/example/Mixed"
INFO = b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}'
MOD = b"module github.com/example/Mixed\n"


class ComplianceFailure(AssertionError):
    """A backend does not do what every backend must."""


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise ComplianceFailure(what)


async def _expect_not_found(read: Awaitable[object], what: str) -> None:
    try:
        await read
    except NotFoundError:
        return
    raise ComplianceFailure(f"{what}: expected NotFoundError")


@contextlib.asynccontextmanager
async def _opened(new_backend: BackendFactory) -> AsyncIterator[Backend]:
    backend = new_backend()
    await backend.ready()
    try:
        yield backend
    finally:
        with trio.CancelScope(shield=True):
            await backend.aclose()


class _Zips:
    """Zip files in the scratch directory, each a new one: ``save`` takes them over."""

    def __init__(self, scratch: Path) -> None:
        self._scratch = scratch
        self._names = itertools.count()

    def __call__(self, data: bytes) -> Path:
        path = self._scratch / f"compliance-{os.getpid()}-{next(self._names)}.zip"
        path.write_bytes(data)
        return path


async def _read_zip(backend: Backend, module: str, version: str, **span: int) -> bytes:
    stored = await backend.zip(module, version)
    return b"".join([chunk async for chunk in stored.chunks(**span)])


async def missing_version_is_not_found(new_backend: BackendFactory, scratch: Path) -> None:
    async with _opened(new_backend) as backend:
        _expect(await backend.list_versions(MODULE) == [], "no versions of an unknown module")
        _expect(not await backend.exists(MODULE, "v1.0.0"), "exists() of a missing version")
        for name in ("info", "go_mod", "zip", "zip_sum", "mod_sum", "delete"):
            await _expect_not_found(getattr(backend, name)(MODULE, "v1.0.0"), name)


async def save_then_read_everything(new_backend: BackendFactory, scratch: Path) -> None:
    zip_bytes = os.urandom(3 * CHUNK_SIZE + 17)
    async with _opened(new_backend) as backend:
        saved = await backend.save(
            MODULE,
            "v1.0.0",
            info=INFO,
            mod=MOD,
            zip_file=_Zips(scratch)(zip_bytes),
            zip_sum="h1:zip-sum=",
            mod_sum="h1:mod-sum=",
        )
        _expect(saved is True, "the first save of a version returns True")
        _expect(await backend.exists(MODULE, "v1.0.0"), "a saved version exists")
        _expect(await backend.info(MODULE, "v1.0.0") == INFO, "info as saved")
        _expect(await backend.go_mod(MODULE, "v1.0.0") == MOD, "go.mod as saved")
        _expect(await backend.zip_sum(MODULE, "v1.0.0") == "h1:zip-sum=", "zip hash as saved")
        _expect(await backend.mod_sum(MODULE, "v1.0.0") == "h1:mod-sum=", "go.mod hash as saved")
        stored = await backend.zip(MODULE, "v1.0.0")
        _expect(stored.size == len(zip_bytes), "the zip's size")
        chunks = [chunk async for chunk in stored.chunks()]
        _expect(all(len(c) <= CHUNK_SIZE for c in chunks), "zip chunks of at most CHUNK_SIZE")
        _expect(b"".join(chunks) == zip_bytes, "the zip's bytes as saved")
        _expect(await backend.list_versions(MODULE) == ["v1.0.0"], "the saved version listed")


async def hashes_are_optional(new_backend: BackendFactory, scratch: Path) -> None:
    async with _opened(new_backend) as backend:
        await backend.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=_Zips(scratch)(b"z"))
        _expect(await backend.zip_sum(MODULE, "v1.0.0") is None, "no zip hash recorded")
        _expect(await backend.mod_sum(MODULE, "v1.0.0") is None, "no go.mod hash recorded")


async def zip_ranges(new_backend: BackendFactory, scratch: Path) -> None:
    zip_bytes = os.urandom(CHUNK_SIZE + 100)
    async with _opened(new_backend) as backend:
        zip_file = _Zips(scratch)(zip_bytes)
        await backend.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=zip_file)
        middle = await _read_zip(backend, MODULE, "v1.0.0", start=10, stop=20)
        _expect(middle == zip_bytes[10:20], "bytes [10, 20)")
        tail = await _read_zip(backend, MODULE, "v1.0.0", start=CHUNK_SIZE - 5)
        _expect(tail == zip_bytes[CHUNK_SIZE - 5 :], "a tail across a chunk boundary")
        empty = await _read_zip(backend, MODULE, "v1.0.0", start=5, stop=5)
        _expect(empty == b"", "an empty range")


async def second_save_is_a_no_op(new_backend: BackendFactory, scratch: Path) -> None:
    zips = _Zips(scratch)
    async with _opened(new_backend) as backend:
        await backend.save(
            MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=zips(b"first"), zip_sum="h1:first="
        )
        again = await backend.save(
            MODULE,
            "v1.0.0",
            info=b"{}",
            mod=b"other",
            zip_file=zips(b"second"),
            zip_sum="h1:second=",
            mod_sum="h1:second=",
        )
        _expect(again is False, "a second save of a stored version returns False")
        await _expect_stored(backend, MODULE, "v1.0.0", _Bytes(INFO, MOD, b"first", "h1:first="))


async def concurrent_saves_of_one_version_agree(new_backend: BackendFactory, scratch: Path) -> None:
    zips = _Zips(scratch)
    results: list[bool] = []
    async with _opened(new_backend) as backend:

        async def save() -> None:
            zip_file = zips(b"same bytes")
            results.append(
                await backend.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=zip_file)
            )

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(save)
        _expect(sorted(results) == [False] * 7 + [True], f"exactly one save stored: {results}")
        _expect(await _read_zip(backend, MODULE, "v1.0.0") == b"same bytes", "the zip stored")


@dataclass(frozen=True)
class _Bytes:
    """Everything one save hands over (and a reader sees of a stored version)."""

    info: bytes
    mod: bytes
    zip: bytes
    zip_sum: str | None = None
    mod_sum: str | None = None


async def _stored(backend: Backend, module: str, version: str) -> _Bytes:
    return _Bytes(
        await backend.info(module, version),
        await backend.go_mod(module, version),
        await _read_zip(backend, module, version),
        await backend.zip_sum(module, version),
        await backend.mod_sum(module, version),
    )


async def _expect_stored(backend: Backend, module: str, version: str, expected: _Bytes) -> None:
    _expect(await _stored(backend, module, version) == expected, f"{module}@{version} as saved")


async def concurrent_saves_with_other_bytes_keep_the_first(
    new_backend: BackendFactory, scratch: Path
) -> None:
    """Two saves of one version with different bytes at once: one stores it, every file
    of it, and the other changes nothing; a reader meanwhile sees one save's bytes or
    nothing, never a mix."""
    zips = _Zips(scratch)
    versions = [f"v1.0.{n}" for n in range(12)]

    def saved_by(writer: str, version: str) -> _Bytes:
        # Sizes differ too, so that a mixed zip could not pass for either.
        return _Bytes(
            info=f'{{"Version":"{version}","By":"{writer}"}}'.encode(),
            mod=f"module {MODULE} // {writer}\n".encode(),
            zip=writer.encode() * (CHUNK_SIZE // 4 + len(writer)),
            zip_sum=f"h1:{writer}-zip=",
            mod_sum=f"h1:{writer}-mod=",
        )

    writers = ("first", "second-writer")
    results: dict[str, list[str]] = {v: [] for v in versions}
    seen: list[_Bytes] = []
    async with _opened(new_backend) as backend:

        async def save(writer: str, version: str) -> None:
            parts = saved_by(writer, version)
            if await backend.save(
                MODULE,
                version,
                info=parts.info,
                mod=parts.mod,
                zip_file=zips(parts.zip),
                zip_sum=parts.zip_sum,
                mod_sum=parts.mod_sum,
            ):
                results[version].append(writer)

        async def read_all_the_while(done: trio.Event) -> None:
            while not done.is_set():
                for version in versions:
                    with contextlib.suppress(NotFoundError):
                        seen.append(await _stored(backend, MODULE, version))
                await trio.lowlevel.checkpoint()

        done = trio.Event()
        async with trio.open_nursery() as reading:
            reading.start_soon(read_all_the_while, done)
            async with trio.open_nursery() as saving:
                for version in versions:
                    for writer in writers:
                        saving.start_soon(save, writer, version)
            done.set()

        for version in versions:
            _expect(len(results[version]) == 1, f"{version}: one save stored it: {results}")
            await _expect_stored(backend, MODULE, version, saved_by(results[version][0], version))
    whole = {saved_by(w, v) for w in writers for v in versions}
    mixed = [s for s in seen if s not in whole]
    _expect(not mixed, f"a reader saw a mix of two saves: {mixed[:1]}")


async def versions_are_per_module_and_deletable(new_backend: BackendFactory, scratch: Path) -> None:
    zips = _Zips(scratch)
    versions = ["v1.0.0", "v1.1.0-RC1", "v2.0.0+incompatible", "v0.0.0-20240102030405-abcdefabcdef"]
    lower = MODULE.lower()  # another module: paths differ by case
    async with _opened(new_backend) as backend:

        async def save(module: str, version: str, data: bytes = b"z") -> None:
            await backend.save(module, version, info=INFO, mod=MOD, zip_file=zips(data))

        async with trio.open_nursery() as nursery:
            for version in versions:
                nursery.start_soon(save, MODULE, version)
        await save(lower, "v9.0.0")
        _expect(sorted(await backend.list_versions(MODULE)) == sorted(versions), "all listed")
        await backend.delete(MODULE, "v1.0.0")
        _expect(not await backend.exists(MODULE, "v1.0.0"), "a deleted version is gone")
        await _expect_not_found(backend.zip(MODULE, "v1.0.0"), "zip of a deleted version")
        listed = sorted(await backend.list_versions(MODULE))
        _expect(listed == sorted(versions[1:]), "a deleted version is not listed")
        _expect(await backend.list_versions(lower) == ["v9.0.0"], "modules differing by case")
        # Deleted (an operator's repair): the next save stores it afresh.
        await save(MODULE, "v1.0.0", b"again")
        _expect(await _read_zip(backend, MODULE, "v1.0.0") == b"again", "saved after delete")


async def catalog_lists_every_stored_version(new_backend: BackendFactory, scratch: Path) -> None:
    zips = _Zips(scratch)
    expected = set()
    async with _opened(new_backend) as backend:
        for module in ("example.com/a", "example.com/B/c", "example.com/a/v2"):
            for version in ("v1.0.0", "v2.0.0-RC1"):
                await backend.save(module, version, info=INFO, mod=b"m", zip_file=zips(b"z"))
                expected.add((module, version))
        found = [entry async for entry in backend.catalog()]
        _expect(sorted(found) == sorted(expected), f"the catalog: {found}")


async def sweep_keeps_stored_versions(new_backend: BackendFactory, scratch: Path) -> None:
    async with _opened(new_backend) as backend:
        await backend.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=_Zips(scratch)(b"z"))
        _expect(await backend.sweep(older_than=0) == 0, "nothing for sweep after whole saves")
        await _expect_stored(backend, MODULE, "v1.0.0", _Bytes(INFO, MOD, b"z"))


async def go_mod_only_then_zip(new_backend: BackendFactory, scratch: Path) -> None:
    """A version saved without its zip is stored (listed, its info and go.mod served)
    but not whole; its zip, saved later, completes it; neither part is ever replaced."""
    zips = _Zips(scratch)
    async with _opened(new_backend) as backend:
        await _expect_not_found(
            backend.save_zip(MODULE, "v1.0.0", zip_file=zips(b"z")), "a zip before its go.mod"
        )
        saved = await backend.save_mod(MODULE, "v1.0.0", info=INFO, mod=MOD, mod_sum="h1:m=")
        _expect(saved is True, "the first save_mod returns True")
        _expect(not await backend.exists(MODULE, "v1.0.0"), "a zip-less version is not whole")
        _expect(await backend.info(MODULE, "v1.0.0") == INFO, "info of a zip-less version")
        _expect(await backend.go_mod(MODULE, "v1.0.0") == MOD, "go.mod of a zip-less version")
        _expect(await backend.mod_sum(MODULE, "v1.0.0") == "h1:m=", "its go.mod hash")
        await _expect_not_found(backend.zip(MODULE, "v1.0.0"), "zip of a zip-less version")
        await _expect_not_found(backend.zip_sum(MODULE, "v1.0.0"), "zip hash, zip-less")
        _expect(await backend.list_versions(MODULE) == ["v1.0.0"], "a zip-less version listed")
        catalog = [entry async for entry in backend.catalog()]
        _expect(catalog == [(MODULE, "v1.0.0")], "a zip-less version in the catalog")
        again = await backend.save_mod(MODULE, "v1.0.0", info=b"{}", mod=b"other")
        _expect(again is False, "a second save_mod returns False")
        saved = await backend.save_zip(MODULE, "v1.0.0", zip_file=zips(b"zip"), zip_sum="h1:z=")
        _expect(saved is True, "the first save_zip returns True")
        again = await backend.save_zip(MODULE, "v1.0.0", zip_file=zips(b"other"))
        _expect(again is False, "a second save_zip returns False")
        await _expect_stored(backend, MODULE, "v1.0.0", _Bytes(INFO, MOD, b"zip", "h1:z=", "h1:m="))
        _expect(await backend.exists(MODULE, "v1.0.0"), "whole once its zip is saved")


async def zip_beside_a_go_mod_part_with_other_info(
    new_backend: BackendFactory, scratch: Path
) -> None:
    """A whole save meeting a stored go.mod part with the same go.mod but other .info
    bytes (another tool's: go's module cache writes an Origin, an import keeps it)
    stores its zip beside the stored part, which stays as it was: a zip goes with its
    go.mod (go's hashes tie the two), not with .info's spelling."""
    cached_info = b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z","Origin":{"VCS":"git"}}'
    async with _opened(new_backend) as backend:
        await backend.save_mod(MODULE, "v1.0.0", info=cached_info, mod=MOD)
        saved = await backend.save(
            MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=_Zips(scratch)(b"zip")
        )
        _expect(saved is True, "the zip is stored beside the same go.mod")
        await _expect_stored(backend, MODULE, "v1.0.0", _Bytes(cached_info, MOD, b"zip"))


async def a_zip_read_after_a_resave_is_the_first_or_nothing(
    new_backend: BackendFactory, scratch: Path
) -> None:
    """A zip looked up (its size promised to a client) and read after its version was
    deleted and saved again with other bytes (a repair; an operator's delete, then a
    fetch) yields the first zip's bytes or NotFoundError, never the second's under the
    first's length.  (The second is longer, as a good copy after a truncated one: a
    backend may tell files apart by size and times, as the disk does.)"""
    zips = _Zips(scratch)
    first, second = b"1" * (CHUNK_SIZE + 7), b"2" * (CHUNK_SIZE + 8)
    async with _opened(new_backend) as backend:
        await backend.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=zips(first))
        whole = await backend.zip(MODULE, "v1.0.0")
        tail = await backend.zip(MODULE, "v1.0.0")
        await backend.delete(MODULE, "v1.0.0")
        await backend.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=zips(second))
        for stored, span, want in ((whole, {}, first), (tail, {"start": 5, "stop": 9}, first[5:9])):
            try:
                read = b"".join([chunk async for chunk in stored.chunks(**span)])
            except NotFoundError:
                continue
            _expect(read == want, f"a zip read after a re-save ({span or 'whole'}) is the first")


async def concurrent_go_mod_and_zip_saves(new_backend: BackendFactory, scratch: Path) -> None:
    """save_mod and whole saves of the same versions at once (a ``.mod`` and a ``.zip``
    of one version asked together): each part stored, and a reader meanwhile sees
    info and go.mod together or neither, and the zip whole or not at all."""
    zips = _Zips(scratch)
    versions = [f"v1.0.{n}" for n in range(10)]
    zip_bytes = b"zip" * (CHUNK_SIZE // 2)
    problems: list[str] = []
    async with _opened(new_backend) as backend:

        async def save_mod(version: str) -> None:
            await backend.save_mod(MODULE, version, info=INFO, mod=MOD)

        async def save(version: str) -> None:
            await backend.save(MODULE, version, info=INFO, mod=MOD, zip_file=zips(zip_bytes))

        async def read_all_the_while(done: trio.Event) -> None:
            while not done.is_set():
                for version in versions:
                    try:
                        info = await backend.info(MODULE, version)
                    except NotFoundError:
                        continue
                    if info != INFO or await backend.go_mod(MODULE, version) != MOD:
                        problems.append(f"{version}: info without its go.mod")
                    with contextlib.suppress(NotFoundError):
                        if await _read_zip(backend, MODULE, version) != zip_bytes:
                            problems.append(f"{version}: part of a zip")
                await trio.lowlevel.checkpoint()

        done = trio.Event()
        async with trio.open_nursery() as reading:
            reading.start_soon(read_all_the_while, done)
            async with trio.open_nursery() as saving:
                for version in versions:
                    for _ in range(2):
                        saving.start_soon(save_mod, version)
                        saving.start_soon(save, version)
            done.set()
        for version in versions:
            _expect(await backend.exists(MODULE, version), f"{version} whole in the end")
            _expect(await _read_zip(backend, MODULE, version) == zip_bytes, f"{version}'s zip")
    _expect(not problems, f"a reader saw half a part: {problems[:3]}")


#: Every check, by name.
CHECKS: dict[str, Check] = {
    check.__name__: check
    for check in (
        missing_version_is_not_found,
        save_then_read_everything,
        hashes_are_optional,
        zip_ranges,
        second_save_is_a_no_op,
        concurrent_saves_of_one_version_agree,
        concurrent_saves_with_other_bytes_keep_the_first,
        versions_are_per_module_and_deletable,
        catalog_lists_every_stored_version,
        sweep_keeps_stored_versions,
        go_mod_only_then_zip,
        zip_beside_a_go_mod_part_with_other_info,
        a_zip_read_after_a_resave_is_the_first_or_nothing,
        concurrent_go_mod_and_zip_saves,
    )
}


async def run_all(new_backend: BackendFactory, scratch: Path) -> None:
    """Every check in turn (a test that wants them one by one parametrizes on CHECKS)."""
    for check in CHECKS.values():
        await check(new_backend, scratch)
