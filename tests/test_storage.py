"""Every backend passes the compliance suite; the disk backend's own guarantees besides."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from athens_trio import Backend, DiskStorage, MemoryStorage, NotFoundError, StorageError
from athens_trio.storage import CHUNK_SIZE, compliance

MODULE = "github.com/example/Mixed"
INFO = b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}'
MOD = b"module github.com/example/Mixed\n"
VERSION_DIR = Path("github.com", "example", "!mixed", "@v")


def new_backends(tmp_path: Path) -> dict[str, compliance.BackendFactory]:
    """Each backend's factory; each call a fresh, empty backend."""
    roots = (tmp_path / f"root-{n}" for n in itertools.count())
    return {"memory": MemoryStorage, "disk": lambda: DiskStorage(next(roots))}


@pytest.mark.parametrize("backend", ["memory", "disk"])
@pytest.mark.parametrize("check", compliance.CHECKS.values(), ids=list(compliance.CHECKS))
async def test_compliance(backend: str, check: compliance.Check, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    await check(new_backends(tmp_path)[backend], scratch)


async def test_a_failing_backend_fails_compliance(tmp_path: Path) -> None:
    """The suite has teeth: a backend whose second save overwrites the first fails it."""

    class Overwriting(MemoryStorage):
        async def save(
            self,
            module: str,
            version: str,
            *,
            info: bytes,
            mod: bytes,
            zip_file: Path,
            zip_sum: str | None = None,
            mod_sum: str | None = None,
        ) -> bool:
            self._versions.pop((module, version), None)
            return await super().save(
                module, version, info=info, mod=mod, zip_file=zip_file, zip_sum=zip_sum
            )

    with pytest.raises(compliance.ComplianceFailure, match="second save"):
        await compliance.second_save_is_a_no_op(Overwriting, tmp_path)


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[[bytes], Path]:
    counter = iter(range(1_000_000))

    def make(data: bytes) -> Path:
        path = tmp_path / f"fetched-{next(counter)}.zip"
        path.write_bytes(data)
        return path

    return make


async def read_zip(backend: Backend, module: str, version: str) -> bytes:
    stored = await backend.zip(module, version)
    return b"".join([chunk async for chunk in stored.chunks()])


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
    version_dir = root / VERSION_DIR
    version_dir.mkdir(parents=True)
    # What a crash between the .zip and the .info links leaves behind.
    (version_dir / "v1.0.0.mod").write_bytes(MOD)
    (version_dir / "v1.0.0.zip").write_bytes(b"zip")
    (version_dir / ".tmp-123456-v1.0.0.info").write_bytes(b"partial")
    kept = {name: (version_dir / f"v1.0.0.{name}").stat().st_ino for name in ("mod", "zip")}
    storage = DiskStorage(root)
    assert not await storage.exists(MODULE, "v1.0.0")
    assert await storage.list_versions(MODULE) == []
    with pytest.raises(NotFoundError):
        await storage.go_mod(MODULE, "v1.0.0")
    with pytest.raises(NotFoundError):
        await storage.zip(MODULE, "v1.0.0")
    # A save of the same bytes completes the version, keeping the go.mod it found; a
    # zip without its .info is no save in progress (zips are linked after the .info)
    # and is replaced by the save's own.
    assert await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"new"))
    assert await storage.go_mod(MODULE, "v1.0.0") == MOD
    assert await read_zip(storage, MODULE, "v1.0.0") == b"new"
    assert (version_dir / "v1.0.0.mod").stat().st_ino == kept["mod"]


async def test_disk_leftovers_with_other_bytes_stop_a_save_until_abandoned(
    tmp_path: Path, make_zip: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another save's files without their .info are never replaced while that save may
    still be running; once an hour old they are abandoned, and the next save removes them."""
    from athens_trio.storage import _disk

    monkeypatch.setattr(_disk, "_WINNER_WAIT", 0.05)
    version_dir = tmp_path / "root" / VERSION_DIR
    version_dir.mkdir(parents=True)
    # (A .mod: the go.mod part is linked before the .info; a zip part never is.)
    stale = version_dir / "v1.0.0.mod"
    stale.write_bytes(b"another save's go.mod")
    storage = DiskStorage(tmp_path / "root")
    with pytest.raises(StorageError, match="other bytes"):
        await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"new"))
    assert not await storage.exists(MODULE, "v1.0.0")
    assert stale.read_bytes() == b"another save's go.mod"
    assert not [name for name in os.listdir(version_dir) if name.startswith(".")]

    two_hours_ago = time.time() - 7200
    for leftover in version_dir.iterdir():
        os.utime(leftover, (two_hours_ago, two_hours_ago))
    assert await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"new"))
    assert await read_zip(storage, MODULE, "v1.0.0") == b"new"
    assert await storage.go_mod(MODULE, "v1.0.0") == MOD


async def test_disk_two_processes_saving_other_bytes_never_mix(
    tmp_path: Path, make_zip: Callable[[bytes], Path]
) -> None:
    """Two DiskStorage on one root (as two server processes): for each version one save
    stores every file, the other none, and no stored file is replaced afterwards."""
    root = tmp_path / "root"
    one, two = DiskStorage(root), DiskStorage(root)
    versions = [f"v1.0.{n}" for n in range(30)]
    winners: dict[str, list[bytes]] = {v: [] for v in versions}

    async def save(storage: DiskStorage, tag: bytes, version: str) -> None:
        zip_bytes = tag * (CHUNK_SIZE // 8 + len(tag))
        if await storage.save(
            MODULE,
            version,
            info=INFO + tag,
            mod=MOD + tag,
            zip_file=make_zip(zip_bytes),
            zip_sum=f"h1:{tag.decode()}",
            mod_sum=f"h1:{tag.decode()}-mod",
        ):
            winners[version].append(tag)

    async with trio.open_nursery() as nursery:
        for version in versions:
            nursery.start_soon(save, one, b"one", version)
            nursery.start_soon(save, two, b"two!", version)
    version_dir = root / VERSION_DIR
    for version in versions:
        assert len(winners[version]) == 1, winners
        tag = winners[version][0]
        assert (version_dir / f"{version}.info").read_bytes() == INFO + tag
        assert (version_dir / f"{version}.mod").read_bytes() == MOD + tag
        assert (version_dir / f"{version}.zip").read_bytes() == tag * (CHUNK_SIZE // 8 + len(tag))
        assert (version_dir / f"{version}.ziphash").read_text() == f"h1:{tag.decode()}"
        assert (version_dir / f"{version}.modhash").read_text() == f"h1:{tag.decode()}-mod"
    assert not [name for name in os.listdir(version_dir) if name.startswith(".")]


async def test_disk_a_lost_zip_is_restored_and_nothing_else_replaced(
    tmp_path: Path, make_zip: Callable[[bytes], Path]
) -> None:
    storage = DiskStorage(tmp_path / "root")
    await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"zip"))
    version_dir = tmp_path / "root" / VERSION_DIR
    kept = {n: (version_dir / f"v1.0.0.{n}").stat().st_ino for n in ("info", "mod")}
    (version_dir / "v1.0.0.zip").unlink()  # a hand, a failing disk
    assert not await storage.exists(MODULE, "v1.0.0")
    assert await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"zip"))
    assert await read_zip(storage, MODULE, "v1.0.0") == b"zip"
    assert {n: (version_dir / f"v1.0.0.{n}").stat().st_ino for n in kept} == kept


async def test_disk_save_failure_leaves_nothing_of_the_failed_part(tmp_path: Path) -> None:
    """The go.mod part and the zip part are saved one after the other: a failing zip
    leaves a go.mod-only version and no trace of the zip."""
    storage = DiskStorage(tmp_path / "root")
    with pytest.raises(Exception, match="No such file"):
        await storage.save(
            MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=tmp_path / "does-not-exist.zip"
        )
    assert not await storage.exists(MODULE, "v1.0.0")
    assert await storage.go_mod(MODULE, "v1.0.0") == MOD
    version_dir = tmp_path / "root" / "github.com" / "example" / "!mixed" / "@v"
    assert sorted(p.name for p in version_dir.iterdir()) == ["list", "v1.0.0.info", "v1.0.0.mod"]


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

    # A go.mod-only version: go reads its go.mod; its zip is a 404 (athens-trio fetches
    # it on demand; a file:// tree cannot).
    await storage.save_mod(
        module,
        "v1.3.0",
        info=b'{"Version":"v1.3.0","Time":"2024-02-02T03:04:05Z"}',
        mod=f"module {module}\n".encode(),
    )
    assert (tmp_path / "root" / module / "@v" / "list").read_text() == "v1.2.3\nv1.3.0\n"

    async def go(*args: str) -> tuple[int, bytes]:
        ran = await trio.run_process(
            [go_binary, *args],
            cwd=work,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        return ran.returncode, ran.stdout + ran.stderr

    listed = await go("list", "-m", "-json", f"{module}@v1.3.0")
    assert listed[0] == 0, listed
    assert b'"Version": "v1.3.0"' in listed[1]
    downloaded = await go("mod", "download", "-json", f"{module}@v1.3.0")
    assert downloaded[0] != 0
    assert b"v1.3.0.zip" in downloaded[1], downloaded


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
    old_orphan = version_dir / "v1.3.0.mod"  # a killed save's, linked without its .info
    fresh_orphan = version_dir / "v1.4.0.zip"  # maybe a save going on right now
    for leftover in (old, fresh, old_orphan, fresh_orphan):
        leftover.write_bytes(b"half a zip")
    two_hours_ago = time.time() - 7200
    for stale in (old, old_orphan, version_dir / "v1.0.0.mod"):
        os.utime(stale, (two_hours_ago, two_hours_ago))

    config = Config(
        go_binary=go_binary,
        storage=StorageConfig(disk=DiskStorageConfig(root_path=str(tmp_path / "root"))),
    )
    async with open_pipeline(config):
        with trio.fail_after(10):
            while old.exists() or old_orphan.exists():
                await trio.sleep(0.01)
    assert fresh.exists()
    assert fresh_orphan.exists()
    assert await storage.exists(MODULE, "v1.0.0")
    assert await MemoryStorage().sweep() == 0


@pytest.mark.parametrize("cross_device", [False, True])
async def test_disk_every_file_is_flushed_before_it_gets_its_name(
    tmp_path: Path,
    make_zip: Callable[[bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
    cross_device: bool,
) -> None:
    """A part's files are flushed together (in threads of their own), but each before
    the link or rename that makes it visible, and the directory after."""
    import errno
    import threading

    flushed: set[tuple[int, int]] = set()
    lock = threading.Lock()
    real_fsync, real_link, real_replace, real_rename = os.fsync, os.link, os.replace, os.rename

    def fsync(fd: int) -> None:
        real_fsync(fd)
        info = os.fstat(fd)
        with lock:
            flushed.add((info.st_dev, info.st_ino))

    def must_be_flushed(src: str | Path) -> None:
        info = os.stat(src)
        with lock:
            assert (info.st_dev, info.st_ino) in flushed, f"{src} linked before it was flushed"

    def link(src: str | Path, dst: str | Path) -> None:
        # A temporary file takes its locked name (an empty file) by a link too.
        if not Path(dst).name.startswith(".tmp-"):
            must_be_flushed(src)
        real_link(src, dst)

    def replace(src: str | Path, dst: str | Path) -> None:
        must_be_flushed(src)
        real_replace(src, dst)

    def rename(src: str | Path, dst: str | Path) -> None:
        if cross_device:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    storage = DiskStorage(tmp_path / "root")
    await storage.save_mod(MODULE, "v1.1.0", info=INFO, mod=MOD, mod_sum="h1:mod")
    await storage.save(
        MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"zip"), zip_sum="h1:zip"
    )
    version_dir = tmp_path / "root" / VERSION_DIR
    for name in ("v1.0.0.info", "v1.0.0.mod", "v1.1.0.modhash", "v1.0.0.zip", "v1.0.0.ziphash"):
        info = (version_dir / name).stat()
        assert (info.st_dev, info.st_ino) in flushed, name
    assert (version_dir / "list").read_text() == "v1.0.0\nv1.1.0\n"


async def test_disk_an_up_to_date_list_is_not_written_again(
    tmp_path: Path, make_zip: Callable[[bytes], Path]
) -> None:
    from athens_trio.storage._disk import _write_list_sync

    storage = DiskStorage(tmp_path / "root")
    await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"zip"))
    listed = tmp_path / "root" / VERSION_DIR / "list"
    before = listed.stat().st_ino
    await trio.to_thread.run_sync(_write_list_sync, listed.parent)
    assert listed.stat().st_ino == before
    listed.write_text("v0.1.0\n")  # out of date (by a hand): written again
    await trio.to_thread.run_sync(_write_list_sync, listed.parent)
    assert listed.read_text() == "v1.0.0\n"


async def test_a_go_mod_part_save_never_removes_the_zip_of_a_save_that_won(
    tmp_path: Path, make_zip: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A go.mod-part save reads the directory while another save (another worker's)
    links the whole version, .info first: the listing, no snapshot, may show the zip
    but not the .info.  The zip is that save's, not a killed delete's: it stays."""
    other = DiskStorage(tmp_path / "other")
    await other.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(b"the zip"))
    version_dir = tmp_path / "root" / VERSION_DIR
    version_dir.mkdir(parents=True)
    real_listdir = os.listdir

    def racing_listdir(path: str | os.PathLike[str]) -> list[str]:
        # The winner links its files now; the listing caught only its zip part.
        for name in real_listdir(tmp_path / "other" / VERSION_DIR):
            if name.startswith("v1.0.0."):
                os.link(tmp_path / "other" / VERSION_DIR / name, version_dir / name)
        return [n for n in real_listdir(path) if n.endswith((".zip", ".ziphash"))]

    monkeypatch.setattr(os, "listdir", racing_listdir)
    storage = DiskStorage(tmp_path / "root")
    assert not await storage.save_mod(MODULE, "v1.0.0", info=INFO, mod=MOD, mod_sum=None)
    monkeypatch.setattr(os, "listdir", real_listdir)
    assert await storage.exists(MODULE, "v1.0.0")
    assert await read_zip(storage, MODULE, "v1.0.0") == b"the zip"


async def test_disk_a_version_deleted_while_its_zip_is_saved_leaves_no_zip(
    tmp_path: Path, make_zip: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete (gc, an operator) between a zip save's check for the go.mod part and
    its link: the save fails as "not stored" and leaves no zip without a version."""
    from athens_trio.storage import _disk

    storage = DiskStorage(tmp_path / "root")
    await storage.save_mod(MODULE, "v1.0.0", info=INFO, mod=MOD)
    flush = _disk._TempFiles.flush

    def flush_then_delete(self: _disk._TempFiles) -> None:
        flush(self)
        if "zip" in self.written:
            trio.from_thread.run(DiskStorage(tmp_path / "root").delete, MODULE, "v1.0.0")

    monkeypatch.setattr(_disk._TempFiles, "flush", flush_then_delete)
    with pytest.raises(NotFoundError):
        await storage.save_zip(MODULE, "v1.0.0", zip_file=make_zip(b"zip"), zip_sum="h1:z=")
    left = sorted(p.name for p in (tmp_path / "root" / VERSION_DIR).iterdir())
    assert not [name for name in left if name.startswith("v1.0.0")], left


async def test_disk_a_zip_looked_up_reads_whole_after_its_links_change(
    tmp_path: Path, make_zip: Callable[[bytes], Path]
) -> None:
    """A stored zip whose link count changes after it was looked up (a save removing
    its temporary name, a backup's hard link) is the same file: read whole, not
    refused as removed."""
    storage = DiskStorage(tmp_path / "root")
    data = b"z" * (CHUNK_SIZE + 3)
    await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=make_zip(data))
    stored = await storage.zip(MODULE, "v1.0.0")
    path = tmp_path / "root" / VERSION_DIR / "v1.0.0.zip"
    os.link(path, tmp_path / "backup.zip")  # its ctime changes; its bytes do not
    assert b"".join([chunk async for chunk in stored.chunks()]) == data
