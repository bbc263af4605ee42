"""Offline bundles: export a warmed graph, import it on a second, empty server and build
there with the VCS gone; the bundle unpacked is a GOPROXY=file:// tree; every zip and
go.mod verified (recorded hash, checksum database) before it is stored; a stored
version is never replaced."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from athens_trio import Config, DiskStorage, open_pipeline
from athens_trio._cli import main
from athens_trio._module import escape_path
from athens_trio.ops import (
    STORED,
    BundleStatistics,
    Need,
    Warm,
    export_bundle,
    import_bundle,
    open_sum_check,
)
from athens_trio.sumdb import GoSumLines, SumDBUnreachableError
from athens_trio.upstream import SumCheck

from .conftest import make_config
from .gofixtures import GoFixtures, build_go_fixtures
from .helpers import client_env, run_go, served
from .opsfixtures import clean_athens_env, stored_parts, write_toml
from .sumdbfixtures import fake_record, run_sumdb_server


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_athens_env(monkeypatch)


async def _warm(config: Config, module: str, version: str) -> None:
    async with open_pipeline(config) as pipeline:
        stats = await Warm(pipeline.protocol, pipeline.storage).run(modules=[(module, version)])
    assert stats.failed == 0, stats.failures


async def _install(
    go_binary: str, fx: GoFixtures, tmp_path: Path, gocache: Path, goproxy: str, name: str
) -> str:
    env = client_env(tmp_path, fx, gocache, goproxy, name=name)
    env["GOBIN"] = str(tmp_path / f"{name}-bin")
    await run_go(go_binary, ["install", f"{fx.consumer_cmd}@v0.1.0"], cwd=tmp_path, env=env)
    ran = await trio.run_process([f"{env['GOBIN']}/consumer"], capture_stdout=True)
    return ran.stdout.decode()


async def _install_through(
    config: Config, go_binary: str, fx: GoFixtures, tmp_path: Path, gocache: Path
) -> str:
    async with served(config) as server:
        return await _install(go_binary, fx, tmp_path, gocache, server.url, "served")


def test_export_import_on_an_empty_server_then_build_offline(
    tmp_path: Path, go_binary: str, go_build_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx = build_go_fixtures(tmp_path / "repos")  # a private set: this test moves it away
    first = make_config(tmp_path / "first", go_binary, fx)
    trio.run(_warm, first, fx.consumer, "v0.1.0")
    bundle = tmp_path / "bundle.tar"
    first_toml = write_toml(first, tmp_path / "first.toml")
    assert main(["export", "--config", str(first_toml), "-o", str(bundle)]) == 0
    assert "exported 2 of 2 versions" in capsys.readouterr().out
    expected = f"consumer says: {fx.hello_texts['v1.1.0']}\n"

    # Unpacked, it is a GOPROXY tree go reads itself.
    unpacked = tmp_path / "unpacked"
    with tarfile.open(bundle) as tar:
        tar.extractall(unpacked, filter="data")
    hello_dir = unpacked / escape_path(fx.hello) / "@v"
    assert (hello_dir / "list").read_text() == "v1.1.0\n"
    assert (hello_dir / "v1.1.0.ziphash").read_text().startswith("h1:")
    goproxy = unpacked.as_uri()
    assert trio.run(_install, go_binary, fx, tmp_path, go_build_cache, goproxy, "file") == expected

    fx.repos_root.rename(tmp_path / "repos-gone")
    second = make_config(tmp_path / "second", go_binary, fx)
    second_toml = write_toml(second, tmp_path / "second.toml")
    assert main(["import", "--config", str(second_toml), str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "imported 2 of 2 versions, 0 already stored, 0 refused" in out
    assert trio.run(stored_parts, second, fx.hello, "v1.1.0") == (True, True)
    # Its staging (a claimed run directory, swept at the next start if it is killed)
    # is gone once it is done.
    assert not [p.name for p in second.go_get_root.iterdir() if p.name.startswith("athens")]
    installed = trio.run(_install_through, second, go_binary, fx, tmp_path, go_build_cache)
    assert installed == expected

    # Again: nothing new, nothing replaced.
    assert main(["import", "--config", str(second_toml), str(bundle)]) == 0
    assert "imported 0 of 2 versions, 2 already stored" in capsys.readouterr().out


def _changed_zip(body: bytes) -> bytes:
    """The zip with one byte more in its first file: the same structure, another hash."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(body)) as source, zipfile.ZipFile(out, "w") as target:
        for index, name in enumerate(source.namelist()):
            data = source.read(name)
            target.writestr(name, data + b" " if index == 0 else data)
    return out.getvalue()


def _rewrite(bundle: Path, out: Path, name_ends: str, change: Callable[[bytes], bytes]) -> None:
    """``bundle`` copied to ``out``, the member whose name ends with ``name_ends`` changed."""
    with tarfile.open(bundle) as source, tarfile.open(out, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member)
            assert data is not None
            body = data.read()
            if member.name.endswith(name_ends):
                body = change(body)
                member.size = len(body)
            target.addfile(member, io.BytesIO(body))


async def test_tampered_or_conflicting_versions_are_refused_and_nothing_is_replaced(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    first = make_config(tmp_path / "first", go_binary, go_fixtures)
    await _warm(first, go_fixtures.consumer, "v0.1.0")
    bundle = tmp_path / "bundle.tar"
    stats = BundleStatistics()
    storage = DiskStorage(first.disk_root)
    needs = [
        Need(go_fixtures.consumer, "v0.1.0", STORED),
        Need(go_fixtures.hello, "v1.1.0", "zip"),
        Need(go_fixtures.hello, "v1.0.0", "mod"),  # not stored
    ]
    await export_bundle(storage, needs, bundle, stats)
    assert stats.written == 2
    assert stats.problems == [f"{go_fixtures.hello}@v1.0.0: it is not stored"]

    tampered = {
        go_fixtures.hello: ("zip", "hello/@v/v1.1.0.zip", _changed_zip),
        go_fixtures.consumer: ("go.mod", "consumer/@v/v0.1.0.mod", lambda b: b + b"// x\n"),
    }
    for module, (what, member, change) in tampered.items():
        changed = tmp_path / f"{what}.tar"
        _rewrite(bundle, changed, member, change)
        target = DiskStorage(tmp_path / f"second-{what}")
        result = await import_bundle(target, changed, SumCheck(None), BundleStatistics())
        assert len(result.problems) == 1
        assert result.problems[0].startswith(f"{module}@")
        assert f"its {what} hashes to" in result.problems[0]
        assert result.written == 1  # the other version
        assert await target.list_versions(module) == []  # refused whole: nothing stored

    # A stored version with another go.mod is kept as it is.
    third = DiskStorage(tmp_path / "third")
    await third.save_mod(go_fixtures.hello, "v1.1.0", info=b'{"Version":"v1.1.0"}', mod=b"x\n")
    result = await import_bundle(third, bundle, SumCheck(None), BundleStatistics())
    assert result.problems == [
        f"{go_fixtures.hello}@v1.1.0: storage holds another go.mod for it (kept; nothing imported)"
    ]
    assert await third.go_mod(go_fixtures.hello, "v1.1.0") == b"x\n"


class _FakeDatabase(SumCheck):
    """A checksum database that answers from a table, or is unreachable."""

    def __init__(self, answers: dict[str, GoSumLines] | None) -> None:
        super().__init__(None)
        self.answers = answers
        self.asked = 0

    async def lines(self, module: str, version: str) -> GoSumLines | None:
        self.asked += 1
        if self.answers is None:
            raise SumDBUnreachableError("sum.example: connection refused")
        return self.answers.get(module)


async def test_the_checksum_database_is_asked_when_it_answers(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    first = make_config(tmp_path / "first", go_binary, go_fixtures)
    await _warm(first, go_fixtures.hello, "v1.1.0")
    bundle = tmp_path / "bundle.tar"
    source = DiskStorage(first.disk_root)
    await export_bundle(
        source, [Need(go_fixtures.hello, "v1.1.0", STORED)], bundle, BundleStatistics()
    )
    zip_hash = await source.zip_sum(go_fixtures.hello, "v1.1.0")
    mod_hash = await source.mod_sum(go_fixtures.hello, "v1.1.0")
    assert zip_hash
    assert mod_hash

    unreachable = _FakeDatabase(None)
    result = await import_bundle(
        DiskStorage(tmp_path / "a"), bundle, unreachable, BundleStatistics()
    )
    assert (result.written, result.problems, result.sumdb_unreachable) == (1, [], True)
    assert unreachable.asked == 1  # not asked again once it did not answer

    lying = _FakeDatabase(
        {go_fixtures.hello: GoSumLines(go_fixtures.hello, "v1.1.0", "h1:other=", mod_hash)}
    )
    result = await import_bundle(DiskStorage(tmp_path / "b"), bundle, lying, BundleStatistics())
    assert result.written == 0
    assert "the checksum database says h1:other=" in result.problems[0]
    assert await DiskStorage(tmp_path / "b").list_versions(go_fixtures.hello) == []

    honest = _FakeDatabase(
        {go_fixtures.hello: GoSumLines(go_fixtures.hello, "v1.1.0", zip_hash, mod_hash)}
    )
    result = await import_bundle(DiskStorage(tmp_path / "c"), bundle, honest, BundleStatistics())
    assert (result.written, result.sumdb_checked, result.problems) == (1, 1, [])


async def test_import_checks_a_real_checksum_database(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures, sumdb_binary: Path
) -> None:
    first = make_config(tmp_path / "first", go_binary, go_fixtures)
    await _warm(first, go_fixtures.hello, "v1.1.0")
    source = DiskStorage(first.disk_root)
    bundle = tmp_path / "bundle.tar"
    await export_bundle(
        source, [Need(go_fixtures.hello, "v1.1.0", STORED)], bundle, BundleStatistics()
    )
    zip_hash = await source.zip_sum(go_fixtures.hello, "v1.1.0")
    mod_hash = await source.mod_sum(go_fixtures.hello, "v1.1.0")
    assert zip_hash
    assert mod_hash
    honest = fake_record(go_fixtures.hello, "v1.1.0", zip_hash, mod_hash)
    lying = fake_record(go_fixtures.hello, "v1.1.0", mod_hash=mod_hash)  # another zip hash

    async def imported(gosumdb: str, name: str) -> BundleStatistics:
        env = [f"{k}={v}" for k, v in {**go_fixtures.go_env, "GOSUMDB": gosumdb}.items()]
        config = make_config(tmp_path / name, go_binary, go_fixtures, go_binary_env_vars=env)
        storage = DiskStorage(config.disk_root)
        await storage.ready()
        async with open_sum_check(config, storage) as sums:
            return await import_bundle(storage, bundle, sums, BundleStatistics())

    async with run_sumdb_server(sumdb_binary, tmp_path, [honest], name="honest") as db:
        result = await imported(db.gosumdb, "honest")
        assert (result.written, result.sumdb_checked, result.problems) == (1, 1, [])
    (tmp_path / "key").unlink()  # another database, with its own key
    async with run_sumdb_server(sumdb_binary, tmp_path, [lying], name="lying") as db:
        result = await imported(db.gosumdb, "lying")
        assert result.written == 0
        assert "the checksum database says" in result.problems[0]
        gone = db.gosumdb
    # The same database, no longer answering: recorded hashes only, and said so.
    result = await imported(gone, "unreachable")
    assert (result.written, result.sumdb_unreachable, result.problems) == (1, True, [])
