"""Damage is caught: a go.mod by its hash and a zip by its tail when read through the
integrity wrapper, a zip by its h1 hash when verified; a repair takes one version's lock."""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from athens_trio import Backend, Config, DiskStorage, MemoryStorage, open_pipeline
from athens_trio._exceptions import DamagedVersionError
from athens_trio._integrity import Verdict, verify_version
from athens_trio._ziphash import mod_h1, zip_h1
from athens_trio.download._repair import Repair
from athens_trio.stash import Part, Stasher
from athens_trio.storage import StoredZip, with_integrity, zip_is_whole

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import counting_go, direct_download, go_downloads

MODULE = "example.com/tiny"
INFO = b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}'


def make_zip(comment: bytes = b"", size: int = 5000) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{MODULE}@v1.0.0/go.mod", f"module {MODULE}\n")
        archive.writestr(f"{MODULE}@v1.0.0/data.bin", os.urandom(size))
        archive.comment = comment
    return buffer.getvalue()


@pytest.fixture(params=["memory", "disk"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return MemoryStorage() if request.param == "memory" else DiskStorage(tmp_path / "root")


async def save(storage: Backend, tmp_path: Path, data: bytes, *, recorded: bool = True) -> None:
    source = tmp_path / "source.zip"
    source.write_bytes(data)
    zip_sum = zip_h1(source) if recorded else None  # only for an undamaged zip
    await storage.save(MODULE, "v1.0.0", info=INFO, mod=b"m", zip_file=source, zip_sum=zip_sum)


@pytest.mark.parametrize(
    ("damage", "whole"),
    [
        (lambda z: z, True),
        (lambda z: z[:-1], False),
        (lambda z: z[: len(z) // 2], False),
        (lambda z: z + b"garbage", False),
        (lambda z: b"", False),
        (lambda z: b"not a zip at all, just text" * 10, False),
    ],
)
async def test_zip_is_whole(storage: Backend, tmp_path: Path, damage: object, whole: bool) -> None:
    assert callable(damage)
    await save(storage, tmp_path, damage(make_zip()), recorded=False)
    assert await zip_is_whole(await storage.zip(MODULE, "v1.0.0")) is whole


async def test_zip_with_a_comment_is_whole(storage: Backend, tmp_path: Path) -> None:
    await save(storage, tmp_path, make_zip(comment=b"made by a tool that leaves a comment"))
    assert await zip_is_whole(await storage.zip(MODULE, "v1.0.0"))


async def test_verify_ok_unrecorded_and_corrupt(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path / "root")
    data = make_zip()
    await save(storage, tmp_path, data)
    result = await verify_version(storage, MODULE, "v1.0.0")
    assert result.verdict is Verdict.OK
    assert result.recorded == result.computed

    # One flipped byte in the middle of a member: the structure is intact, the hash not.
    stored = await storage.zip(MODULE, "v1.0.0")
    assert stored.path is not None
    damaged = bytearray(stored.path.read_bytes())
    damaged[len(damaged) // 3] ^= 0xFF
    stored.path.write_bytes(bytes(damaged))
    assert await zip_is_whole(await storage.zip(MODULE, "v1.0.0"))
    assert (await verify_version(storage, MODULE, "v1.0.0")).verdict is Verdict.CORRUPT

    other = MemoryStorage()
    await save(other, tmp_path, data, recorded=False)
    result = await verify_version(other, MODULE, "v1.0.0")
    assert result.verdict is Verdict.UNRECORDED
    assert result.computed == zip_h1(tmp_path / "source.zip")


async def save_checked(storage: Backend, tmp_path: Path, version: str, data: bytes) -> None:
    source = tmp_path / f"{version}.zip"
    source.write_bytes(data)
    await storage.save(
        MODULE,
        version,
        info=INFO,
        mod=b"m",
        zip_file=source,
        zip_sum=zip_h1(source),
        mod_sum=mod_h1(b"m"),
    )


async def test_the_wrapper_raises_for_a_damaged_go_mod_or_zip(tmp_path: Path) -> None:
    disk = DiskStorage(tmp_path / "root")
    checked = with_integrity(disk)
    assert with_integrity(checked) is checked
    assert checked.description == disk.description
    await save_checked(checked, tmp_path, "v1.0.0", make_zip())
    assert await checked.go_mod(MODULE, "v1.0.0") == b"m"
    version_dir = disk.root / MODULE / "@v"
    (version_dir / "v1.0.0.mod").write_bytes(b"n")
    with pytest.raises(DamagedVersionError, match=r"go\.mod does not match"):
        await checked.go_mod(MODULE, "v1.0.0")
    assert await disk.go_mod(MODULE, "v1.0.0") == b"n"  # the plain backend does not check
    assert (await verify_version(disk, MODULE, "v1.0.0")).verdict is Verdict.CORRUPT

    assert (await checked.zip(MODULE, "v1.0.0")).size > 0
    zip_path = version_dir / "v1.0.0.zip"
    os.truncate(zip_path, zip_path.stat().st_size - 1)
    with pytest.raises(DamagedVersionError, match="zip is damaged"):
        await checked.zip(MODULE, "v1.0.0")


@pytest.mark.parametrize("kind", ["memory", "disk"])
async def test_a_save_beside_a_damaged_go_mod_is_a_damaged_version(
    tmp_path: Path, kind: str
) -> None:
    """The zip's save finds the stored go.mod part damaged: a repair's business (as a
    checked read says), not another save's version."""
    inner = MemoryStorage() if kind == "memory" else DiskStorage(tmp_path / "root")
    checked = with_integrity(inner)
    assert await checked.save_mod(MODULE, "v1.0.0", info=INFO, mod=b"m", mod_sum=mod_h1(b"m"))
    if isinstance(inner, DiskStorage):
        (inner.root / MODULE / "@v" / "v1.0.0.mod").write_bytes(b"n")
    else:
        key = (MODULE, "v1.0.0")
        inner._versions[key] = dataclasses.replace(inner._versions[key], mod=b"n")
    with pytest.raises(DamagedVersionError, match=r"go\.mod does not match"):
        await save_checked(checked, tmp_path, "v1.0.0", make_zip())
    assert not await inner.exists(MODULE, "v1.0.0")


async def test_disk_through_the_wrapper_takes_one_thread_hop_a_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold version's storage calls each cost one worker-thread hop on disk: the
    go.mod part's save, a checked go.mod read, the whole save beside a stored go.mod
    part (compared, zip linked, list written), and a zip's open is two (its size,
    then its tail)."""
    hops: list[object] = []
    real = trio.to_thread.run_sync

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    checked = with_integrity(DiskStorage(tmp_path / "root"))

    async def count(call: Awaitable[object]) -> int:
        hops.clear()
        await call
        return len(hops)

    mod_part = checked.save_mod(MODULE, "v1.0.0", info=INFO, mod=b"m", mod_sum=mod_h1(b"m"))
    assert await count(mod_part) == 1
    assert await count(checked.go_mod(MODULE, "v1.0.0")) == 1
    assert await count(save_checked(checked, tmp_path, "v1.0.0", make_zip())) == 1
    assert await count(checked.zip(MODULE, "v1.0.0")) == 2
    assert (tmp_path / "root" / MODULE / "@v" / "list").read_text() == "v1.0.0\n"


async def test_the_wrapper_checks_a_zip_tail_once(tmp_path: Path) -> None:
    """The tail is read when a zip is first opened, not on every open after."""
    reads: list[int] = []

    class CountingZip(StoredZip):
        def __init__(self, inner: StoredZip) -> None:
            self._inner = inner
            self.size = inner.size

        def chunks(self, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
            reads.append(start)
            return self._inner.chunks(start, stop)

    class Counting(MemoryStorage):
        async def zip(self, module: str, version: str) -> StoredZip:
            return CountingZip(await super().zip(module, version))

    checked = with_integrity(Counting())
    await save_checked(checked, tmp_path, "v1.0.0", make_zip())
    for _ in range(3):
        await checked.zip(MODULE, "v1.0.0")
    assert len(reads) == 1


async def test_repairs_of_different_versions_do_not_wait_for_each_other(
    tmp_path: Path,
) -> None:
    """Each repair holds its version's lock only: v1's repair (its fetch stuck until v2
    is repaired) does not hold up v2's, which a global lock would deadlock."""
    storage = MemoryStorage()
    for version in ("v1.0.0", "v2.0.0"):
        await save_checked(storage, tmp_path, version, make_zip())
    damaged = {"v1.0.0", "v2.0.0"}
    v2_repaired = trio.Event()

    async def read(module: str, version: str) -> str:
        await trio.lowlevel.checkpoint()
        if version in damaged:
            raise DamagedVersionError(f"{module}@{version} is damaged")
        return version

    class Refetch(Stasher):
        async def stash(self, module: str, version: str, part: Part) -> None:
            if version == "v1.0.0":
                await v2_repaired.wait()
            damaged.discard(version)

    repair = Repair(storage, Refetch())
    damage = DamagedVersionError("damaged")

    async def repair_v2() -> None:
        assert await repair(read, MODULE, "v2.0.0", "zip", damage) == "v2.0.0"
        v2_repaired.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(repair, read, MODULE, "v1.0.0", "zip", damage)
            await trio.testing.wait_all_tasks_blocked()
            assert repair.versions_in_repair() == 1
            nursery.start_soon(repair_v2)
    assert repair.versions_in_repair() == 0
    assert not damaged
    assert not await storage.exists(MODULE, "v1.0.0")  # removed for the fetch to store again


async def test_truncated_zip_is_fetched_again_not_served(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    script, count = counting_go(tmp_path, go_binary)
    config: Config = make_config(tmp_path, str(script), go_fixtures)
    direct = direct_download(go_fixtures, go_binary, tmp_path, f"{go_fixtures.hello}@v1.0.0")
    async with open_pipeline(config) as pipeline:
        stored = await pipeline.protocol.zip(go_fixtures.hello, "v1.0.0")
        assert stored.path is not None
        assert (await verify_version(pipeline.storage, go_fixtures.hello, "v1.0.0")).verdict is (
            Verdict.OK
        )
        # A crash or a full disk after the fact: the zip loses its tail.
        stored.path.write_bytes(stored.path.read_bytes()[:-100])
        served = await pipeline.protocol.zip(go_fixtures.hello, "v1.0.0")
        assert served.path is not None
        assert zip_h1(served.path) == direct["Sum"]
    assert go_downloads(count) == 2
