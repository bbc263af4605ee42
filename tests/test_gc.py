"""Retention: last-served recorded in memory and flushed per module (never a write per
request), ``gc --unused-for`` with a fake clock and pins, ``DELETE /admin/modules/...``
behind auth, and a deletion never leaving half a version visible."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import trio

from athens_trio import DiskStorage, NotFoundError, open_pipeline
from athens_trio._cli import main
from athens_trio._module import escape_path
from athens_trio.ops import (
    LAST_SERVED_DIR,
    Activity,
    GcStatistics,
    LastServed,
    Pins,
    collect,
    parse_duration,
)

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import served, store_version
from .opsfixtures import clean_athens_env, write_toml

DAY = 86400.0
M1, M2, PINNED = "example.com/one", "example.com/two", "corp.example/lib"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_durations_and_pins() -> None:
    assert parse_duration("90d") == 90 * DAY
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("2w") == 14 * DAY
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    pins = Pins.parse("# kept\ncorp.example/*\nexample.com/one@v1.0.0  # this one\n")
    assert pins.keeps("corp.example/lib/sub", "v9.0.0")
    assert pins.keeps(M1, "v1.0.0")
    assert not pins.keeps(M1, "v1.1.0")
    with pytest.raises(ValueError, match="line 1"):
        Pins.parse("example.com/one@latest\n")


async def test_last_served_is_marked_in_memory_and_flushed_per_module(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    record = LastServed(tmp_path / LAST_SERVED_DIR, clock)
    record.mark(M1, "v1.0.0")
    clock.now = 2000.0
    record.mark(M1, "v1.0.0")
    record.mark(M2, "v0.1.0")
    assert not (tmp_path / LAST_SERVED_DIR).exists()  # nothing written per request
    assert await record.flush() == 2
    path = tmp_path / LAST_SERVED_DIR / f"{escape_path(M1)}.json"
    assert json.loads(path.read_text()) == {"v1.0.0": 2000.0}
    assert await record.flush() == 0  # nothing new, nothing written
    fresh = LastServed(tmp_path / LAST_SERVED_DIR, clock)  # a restart reads it back
    assert await fresh.served(M1) == {"v1.0.0": 2000.0}
    await fresh.forget(M1, ["v1.0.0"])
    assert not path.exists()


async def test_serving_marks_versions_and_the_pipeline_flushes_at_its_end(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures)
    storage = DiskStorage(config.disk_root)
    await storage.ready()
    await store_version(storage, tmp_path, M1, "v1.0.0", 100)
    clock = FakeClock(5000.0)
    activity = Activity(LastServed(config.disk_root / LAST_SERVED_DIR, clock))
    async with open_pipeline(config, activity=activity) as pipeline:
        for _ in range(100):
            await pipeline.protocol.go_mod(M1, "v1.0.0")
        with pytest.raises(NotFoundError):
            await pipeline.protocol.go_mod(M1, "v9.9.9")  # a 404 serves nothing
        assert not (config.disk_root / LAST_SERVED_DIR).exists()
    assert await LastServed(config.disk_root / LAST_SERVED_DIR).served(M1) == {"v1.0.0": 5000.0}
    assert activity.failures() == []  # "does not exist" is no failure


async def _stored(storage: DiskStorage) -> list[str]:
    return sorted([f"{m}@{v}" async for m, v in storage.catalog()])


async def test_gc_removes_what_no_one_fetched_for_the_period_keeping_pins(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path / "storage")
    await storage.ready()
    for module, version in ((M1, "v1.0.0"), (M1, "v1.1.0"), (M2, "v0.1.0"), (PINNED, "v1.0.0")):
        await store_version(storage, tmp_path, module, version, 1000)
    stored_at = os.stat(storage.root / escape_path(M1) / "@v" / "v1.0.0.info").st_mtime
    clock = FakeClock(stored_at + 80 * DAY)
    record = LastServed(storage.root / LAST_SERVED_DIR, clock)
    record.mark(M1, "v1.1.0")  # served 80 days after it was stored
    await record.flush()
    pins = Pins(patterns=("corp.example",))

    async def gc(now: float, *, dry_run: bool) -> GcStatistics:
        return await collect(
            storage,
            storage.root,
            record,
            unused_for=90 * DAY,
            now=now,
            pins=pins,
            dry_run=dry_run,
            stats=GcStatistics(),
        )

    everything = await _stored(storage)
    early = await gc(stored_at + 89 * DAY, dry_run=False)
    assert (early.removed, early.kept, early.pinned) == ([], 4, 1)
    dry = await gc(stored_at + 91 * DAY, dry_run=True)
    assert sorted(dry.removed) == [f"{M1}@v1.0.0", f"{M2}@v0.1.0"]
    assert dry.removed_bytes > 2000
    assert await _stored(storage) == everything  # a dry run removes nothing
    real = await gc(stored_at + 91 * DAY, dry_run=False)
    assert real.removed == dry.removed
    assert await _stored(storage) == [f"{PINNED}@v1.0.0", f"{M1}@v1.1.0"]
    assert not list((storage.root / escape_path(M2) / "@v").glob("v0.1.0.*"))
    later = await gc(stored_at + 171 * DAY, dry_run=False)  # v1.1.0's 90 days are up too
    assert later.removed == [f"{M1}@v1.1.0"]
    assert await record.served(M1) == {}  # the record forgets what was removed


async def test_a_version_served_while_gc_runs_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc reads the last-served record when it starts; a server marking a version
    served after that (a long run) keeps it: read again before each removal."""
    from athens_trio.ops import _retention

    storage = DiskStorage(tmp_path / "storage")
    await storage.ready()
    await store_version(storage, tmp_path, M2, "v0.1.0", 1000)
    stored_at = os.stat(storage.root / escape_path(M2) / "@v" / "v0.1.0.info").st_mtime
    now = stored_at + 91 * DAY
    server = LastServed(storage.root / LAST_SERVED_DIR, FakeClock(now))
    facts = _retention.version_facts

    def facts_then_served(root: Path | None, module: str, version: str) -> _retention.VersionFacts:
        server.mark(M2, "v0.1.0")  # a server serves it while gc looks at the tree
        trio.from_thread.run(server.flush)
        return facts(root, module, version)

    monkeypatch.setattr(_retention, "version_facts", facts_then_served)
    stats = await collect(
        storage,
        storage.root,
        LastServed(storage.root / LAST_SERVED_DIR),
        unused_for=90 * DAY,
        now=now,
        pins=Pins(),
        dry_run=False,
        stats=GcStatistics(),
    )
    assert (stats.removed, stats.kept) == ([], 1)
    assert await _stored(storage) == [f"{M2}@v0.1.0"]


async def test_a_deletion_killed_half_way_leaves_no_half_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = DiskStorage(tmp_path / "storage")
    await storage.ready()
    await store_version(storage, tmp_path, M1, "v1.0.0", 1000)
    real_unlink = Path.unlink

    def unlink_info_only(self: Path, missing_ok: bool = False) -> None:
        if not self.name.endswith(".info"):
            raise OSError("killed")
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink_info_only)
    with pytest.raises(OSError, match="killed"):
        await storage.delete(M1, "v1.0.0")
    monkeypatch.undo()
    assert await storage.list_versions(M1) == []
    for read in (storage.info, storage.go_mod, storage.zip):
        with pytest.raises(NotFoundError):
            await read(M1, "v1.0.0")


async def test_admin_delete_of_a_version_or_a_module_needs_auth(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    config = make_config(
        tmp_path,
        go_binary,
        go_fixtures,
        basic_auth_user="ops",
        basic_auth_pass="s3cret",
        download_mode="none",  # a deleted version is not fetched again (and no network)
    )
    storage = DiskStorage(config.disk_root)
    await storage.ready()
    for version in ("v1.0.0", "v1.1.0", "v1.2.0"):
        await store_version(storage, tmp_path, M1, version, 100)
    async with served(config) as server:
        async with httpx.AsyncClient(base_url=server.url) as anonymous:
            response = await anonymous.delete(f"/admin/modules/{M1}/@v/v1.0.0")
            assert response.status_code == 401
        async with httpx.AsyncClient(base_url=server.url, auth=("ops", "s3cret")) as http:
            one = await http.delete(f"/admin/modules/{M1}/@v/v1.0.0")
            assert one.status_code == 200, one.text
            assert one.json() == {"module": M1, "deleted": ["v1.0.0"]}
            assert (await http.get(f"/{M1}/@v/v1.0.0.info")).status_code == 404
            again = await http.delete(f"/admin/modules/{M1}/@v/v1.0.0")
            assert again.status_code == 404
            bad = await http.delete(f"/admin/modules/{M1}/@v/not-a-version")
            assert bad.status_code == 400
            whole = await http.delete(f"/admin/modules/{M1}")
            assert whole.json()["deleted"] == ["v1.1.0", "v1.2.0"]
    assert await storage.list_versions(M1) == []

    open_config = make_config(tmp_path / "open", go_binary, go_fixtures)
    async with served(open_config) as server, httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.delete(f"/admin/modules/{M1}")).status_code == 403


def test_gc_command_dry_run(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean_athens_env(monkeypatch)
    config = make_config(tmp_path, go_binary, go_fixtures)
    storage = DiskStorage(config.disk_root)
    trio.run(storage.ready)
    trio.run(store_version, storage, tmp_path, M1, "v1.0.0", 100)
    toml = write_toml(config, tmp_path / "athens.toml")
    pin = tmp_path / "pins"
    pin.write_text(f"{M1}@v1.0.0\n")
    args = ["gc", "--config", str(toml), "--unused-for", "0s"]
    assert main([*args, "--dry-run", "--pin", str(pin)]) == 0
    assert "would remove 0 of 1 versions unused for 0s" in capsys.readouterr().out
    assert main([*args, "--dry-run"]) == 0
    assert f"would remove {M1}@v1.0.0\n" in capsys.readouterr().out
    assert trio.run(storage.list_versions, M1) == ["v1.0.0"]
    assert main([*args]) == 0
    assert trio.run(storage.list_versions, M1) == []
    assert main(["gc", "--config", str(toml), "--unused-for", "later"]) == 2


async def test_a_takedown_is_not_served_from_any_servers_memory(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    """Two servers on one tree (as workers are) keep .info/.mod in memory: a DELETE
    through one is answered 404 by it at once and by the other within a second."""
    config = make_config(
        tmp_path,
        go_binary,
        go_fixtures,
        basic_auth_user="ops",
        basic_auth_pass="s3cret",
        download_mode="none",
    )
    storage = DiskStorage(config.disk_root)
    await storage.ready()
    await store_version(storage, tmp_path, M1, "v1.0.0", 100)
    files = [f"/{M1}/@v/v1.0.0.{suffix}" for suffix in ("info", "mod")]
    async with served(config) as deleting, served(config) as other:
        clients = [
            httpx.AsyncClient(base_url=server.url, auth=("ops", "s3cret"))
            for server in (deleting, other)
        ]
        async with clients[0] as here, clients[1] as there:
            for http in (here, there):  # now in both servers' memory
                for path in files:
                    assert (await http.get(path)).status_code == 200
            deleted = await here.delete(f"/admin/modules/{M1}")
            assert deleted.json()["deleted"] == ["v1.0.0"]
            for path in files:
                assert (await here.get(path)).status_code == 404

            async def gone_there() -> bool:
                return all([(await there.get(path)).status_code == 404 for path in files])

            with trio.fail_after(10):
                while not await gone_there():
                    await trio.sleep(0.05)


def test_gc_refuses_storage_it_cannot_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored-at and last-served are kept beside a disk tree only: on other storage gc
    would remove nothing and say nothing, so it refuses, naming the key."""
    clean_athens_env(monkeypatch)
    toml = tmp_path / "athens.toml"
    toml.write_text('StorageType = "memory"\n')
    assert main(["gc", "--config", str(toml), "--unused-for", "1d"]) == 1
    assert "StorageType: gc needs disk storage" in capsys.readouterr().err
