"""Damaged zips are caught: by their tail when served, by their h1 hash when verified."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from athens_trio import Backend, Config, DiskStorage, MemoryStorage, open_pipeline
from athens_trio._integrity import Verdict, verify_version, zip_is_whole
from athens_trio._ziphash import zip_h1

from .conftest import make_config
from .gofixtures import GoFixtures
from .test_fetcher import direct_download
from .test_pipeline import counting_go, runs

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


async def test_catalog_lists_every_stored_version(storage: Backend, tmp_path: Path) -> None:
    expected = set()
    for module in ("example.com/a", "example.com/B/c", "example.com/a/v2"):
        for version in ("v1.0.0", "v2.0.0-RC1"):
            source = tmp_path / "z.zip"
            source.write_bytes(b"z")
            await storage.save(module, version, info=INFO, mod=b"m", zip_file=source)
            expected.add((module, version))
    assert {entry async for entry in storage.catalog()} == expected


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
    assert runs(count) == 2
