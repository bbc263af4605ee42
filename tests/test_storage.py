"""One compliance suite that every storage backend passes."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from athens_trio import Backend, DiskStorage, MemoryStorage, NotFoundError
from athens_trio.storage import CHUNK_SIZE

MODULE = "github.com/example/Mixed"
INFO = b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}'
MOD = b"module github.com/example/Mixed\n"


@pytest.fixture(params=["memory", "disk"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    backend: Backend = (
        MemoryStorage() if request.param == "memory" else DiskStorage(tmp_path / "root")
    )
    await backend.ready()
    yield backend
    await backend.aclose()


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[[bytes], Path]:
    counter = iter(range(1_000_000))

    def make(data: bytes) -> Path:
        path = tmp_path / f"fetched-{next(counter)}.zip"
        path.write_bytes(data)
        return path

    return make


async def read_zip(backend: Backend, module: str, version: str, **span: int) -> bytes:
    stored = await backend.zip(module, version)
    return b"".join([chunk async for chunk in stored.chunks(**span)])


async def test_missing_version_is_not_found(storage: Backend) -> None:
    assert await storage.list_versions(MODULE) == []
    assert not await storage.exists(MODULE, "v1.0.0")
    for read in (storage.info, storage.go_mod, storage.zip):
        with pytest.raises(NotFoundError):
            await read(MODULE, "v1.0.0")
    with pytest.raises(NotFoundError):
        await storage.delete(MODULE, "v1.0.0")


async def test_save_then_read_everything(
    storage: Backend, make_zip: Callable[[bytes], Path]
) -> None:
    zip_bytes = os.urandom(3 * CHUNK_SIZE + 17)
    assert await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(zip_bytes))
    assert await storage.exists(MODULE, "v1.0.0")
    assert await storage.info(MODULE, "v1.0.0") == INFO
    assert await storage.go_mod(MODULE, "v1.0.0") == MOD
    stored = await storage.zip(MODULE, "v1.0.0")
    assert stored.size == len(zip_bytes)
    chunks = [chunk async for chunk in stored.chunks()]
    assert all(len(c) <= CHUNK_SIZE for c in chunks)
    assert b"".join(chunks) == zip_bytes
    assert await storage.list_versions(MODULE) == ["v1.0.0"]


async def test_zip_ranges(storage: Backend, make_zip: Callable[[bytes], Path]) -> None:
    zip_bytes = os.urandom(CHUNK_SIZE + 100)
    await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(zip_bytes))
    assert await read_zip(storage, MODULE, "v1.0.0", start=10, stop=20) == zip_bytes[10:20]
    tail = await read_zip(storage, MODULE, "v1.0.0", start=CHUNK_SIZE - 5)
    assert tail == zip_bytes[CHUNK_SIZE - 5 :]
    assert await read_zip(storage, MODULE, "v1.0.0", start=5, stop=5) == b""


async def test_second_save_is_a_no_op(storage: Backend, make_zip: Callable[[bytes], Path]) -> None:
    assert await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"first"))
    again = await storage.save(
        MODULE, "v1.0.0", info=b"{}", mod=b"other", zip_file=make_zip(b"second")
    )
    assert again is False
    assert await storage.go_mod(MODULE, "v1.0.0") == MOD
    assert await read_zip(storage, MODULE, "v1.0.0") == b"first"


async def test_concurrent_saves_of_one_version_agree(
    storage: Backend, make_zip: Callable[[bytes], Path]
) -> None:
    results: list[bool] = []

    async def save() -> None:
        zip_file = make_zip(b"same bytes")
        results.append(await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=zip_file))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(save)
    assert sorted(results) == [False] * 7 + [True]
    assert await read_zip(storage, MODULE, "v1.0.0") == b"same bytes"


async def test_versions_are_per_module_and_deletable(
    storage: Backend, make_zip: Callable[[bytes], Path]
) -> None:
    versions = ["v1.0.0", "v1.1.0-RC1", "v2.0.0+incompatible", "v0.0.0-20240102030405-abcdefabcdef"]

    async def save(version: str) -> None:
        await storage.save(MODULE, version, info=INFO, mod=MOD, zip_file=make_zip(b"z"))

    async with trio.open_nursery() as nursery:
        for version in versions:
            nursery.start_soon(save, version)
    await save_other(storage, make_zip)
    assert sorted(await storage.list_versions(MODULE)) == sorted(versions)
    await storage.delete(MODULE, "v1.0.0")
    assert not await storage.exists(MODULE, "v1.0.0")
    assert sorted(await storage.list_versions(MODULE)) == sorted(versions[1:])
    assert await storage.list_versions("github.com/example/other") == ["v9.0.0"]


async def save_other(storage: Backend, make_zip: Callable[[bytes], Path]) -> None:
    other = "github.com/example/other"
    await storage.save(other, "v9.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"o"))


# --- disk only: the layout is a GOPROXY tree, and half a save is never a version ------


async def test_disk_layout_is_a_goproxy_tree(
    tmp_path: Path, make_zip: Callable[[bytes], Path]
) -> None:
    root = tmp_path / "root"
    storage = DiskStorage(root)
    for version in ("v1.1.0", "v1.0.0", "v1.0.0-RC1"):
        await storage.save(MODULE, version, info=INFO, mod=MOD, zip_file=make_zip(b"zip"))
    version_dir = root / "github.com" / "example" / "!mixed" / "@v"
    expected = [
        f"{v}.{s}" for v in ("v1.0.0", "v1.1.0", "v1.0.0-!r!c1") for s in ("info", "mod", "zip")
    ]
    assert sorted(p.name for p in version_dir.iterdir()) == sorted([*expected, "list"])
    # The list holds the versions themselves, in semver order.
    assert (version_dir / "list").read_text() == "v1.0.0-RC1\nv1.0.0\nv1.1.0\n"


async def test_disk_half_written_version_is_not_there(
    tmp_path: Path, make_zip: Callable[[bytes], Path]
) -> None:
    root = tmp_path / "root"
    version_dir = root / "github.com" / "example" / "!mixed" / "@v"
    version_dir.mkdir(parents=True)
    # What a crash between the .zip and the .info renames leaves behind.
    (version_dir / "v1.0.0.mod").write_bytes(b"stale")
    (version_dir / "v1.0.0.zip").write_bytes(b"stale")
    (version_dir / ".tmp-123456-v1.0.0.info").write_bytes(b"partial")
    storage = DiskStorage(root)
    assert not await storage.exists(MODULE, "v1.0.0")
    assert await storage.list_versions(MODULE) == []
    with pytest.raises(NotFoundError):
        await storage.go_mod(MODULE, "v1.0.0")
    with pytest.raises(NotFoundError):
        await storage.zip(MODULE, "v1.0.0")
    # A real save then takes the version over whole.
    assert await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"new"))
    assert await storage.go_mod(MODULE, "v1.0.0") == MOD
    assert await read_zip(storage, MODULE, "v1.0.0") == b"new"


async def test_disk_save_failure_leaves_nothing(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path / "root")
    with pytest.raises(Exception, match="No such file"):
        await storage.save(
            MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=tmp_path / "does-not-exist.zip"
        )
    assert not await storage.exists(MODULE, "v1.0.0")
    version_dir = tmp_path / "root" / "github.com" / "example" / "!mixed" / "@v"
    assert list(version_dir.iterdir()) == []


async def test_disk_tree_serves_go_with_goproxy_file(
    tmp_path: Path, go_binary: str, make_zip: Callable[[bytes], Path]
) -> None:
    """GOPROXY=file://<root> reads what DiskStorage wrote, with no athens-trio running."""
    import io
    import zipfile

    module, version = "example.com/tiny", "v1.2.3"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(f"{module}@{version}/go.mod", f"module {module}\n")
        zf.writestr(f"{module}@{version}/tiny.go", "package tiny\n")
    storage = DiskStorage(tmp_path / "root")
    await storage.save(
        module,
        version,
        info=b'{"Version":"v1.2.3","Time":"2024-01-02T03:04:05Z"}',
        mod=f"module {module}\n".encode(),
        zip_file=make_zip(buffer.getvalue()),
    )
    gopath = tmp_path / "gopath"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GOPATH": str(gopath),
        "GOCACHE": str(gopath / "cache"),
        "GOPROXY": (tmp_path / "root").as_uri(),
        "GOSUMDB": "off",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-modcacherw",
    }
    work = tmp_path / "work"
    work.mkdir()
    done = await trio.run_process(
        [go_binary, "mod", "download", "-json", f"{module}@latest"],
        cwd=work,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert b'"Version": "v1.2.3"' in done.stdout


async def test_disk_save_copies_across_filesystems(
    tmp_path: Path, make_zip: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the fetcher's temp dir is on another filesystem, rename fails with EXDEV and
    the zip is copied in chunks instead."""
    import errno

    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", cross_device)
    zip_bytes = os.urandom(2 * CHUNK_SIZE + 1)
    source = make_zip(zip_bytes)
    storage = DiskStorage(tmp_path / "root")
    assert await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=source)
    assert await read_zip(storage, MODULE, "v1.0.0") == zip_bytes


async def test_disk_sweep_removes_only_old_leftovers(
    tmp_path: Path, go_binary: str, make_zip: Callable[[bytes], Path]
) -> None:
    """A killed save leaves .tmp-* files; they go, but only once surely abandoned."""
    from athens_trio import Config, open_pipeline
    from athens_trio._config import DiskStorageConfig, StorageConfig

    storage = DiskStorage(tmp_path / "root")
    await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"z"))
    version_dir = tmp_path / "root" / "github.com" / "example" / "!mixed" / "@v"
    old = version_dir / ".tmp-0123456789ab-v1.1.0.zip"
    fresh = version_dir / ".tmp-ba9876543210-v1.2.0.zip"
    for leftover in (old, fresh):
        leftover.write_bytes(b"half a zip")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))

    config = Config(
        go_binary=go_binary,
        storage=StorageConfig(disk=DiskStorageConfig(root_path=str(tmp_path / "root"))),
    )
    async with open_pipeline(config):
        with trio.fail_after(10):
            while old.exists():
                await trio.sleep(0.01)
    assert fresh.exists()
    assert await storage.exists(MODULE, "v1.0.0")
    assert await MemoryStorage().sweep() == 0
