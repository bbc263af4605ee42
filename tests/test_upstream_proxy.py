"""athens-trio in front of upstream GOPROXYs, every download proven by a checksum database.

The upstream is a static GOPROXY tree (:mod:`tests.staticproxy`) holding what go itself
downloaded from the fixture repositories; the checksum database is golang.org/x/mod's
real server (:mod:`tests.sumdbfixtures`) logging those versions' go.sum lines.  Both on
127.0.0.1; go, where the walk goes ``direct``, reaches only the fixture repositories.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from athens_trio import Config
from athens_trio._exceptions import NotFoundError, UpstreamError
from athens_trio._module import escape_path, escape_version
from athens_trio._pipeline import open_pipeline
from athens_trio._ziphash import mod_h1, zip_h1
from athens_trio.download import NetworkMode
from athens_trio.sumdb import settings_from_env
from athens_trio.upstream import ProxyFetcher, ProxyLister, UpstreamInfo
from athens_trio.upstream._proxy import _Call, _in_order, _ModPart, _RecentParts

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import client_env, direct_downloads, run_go, served
from .staticproxy import StaticProxy, static_proxy
from .sumdbfixtures import SumDBServer, run_sumdb_server

# ---------------------------------------------------------------------------------------
# The upstream: a GOPROXY tree of what go downloaded, and a sumdb vouching for it
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    root: Path  # the GOPROXY tree (this test's copy)
    versions: tuple[tuple[str, str], ...]  # (module, version) in the tree

    def file(self, module: str, version: str, ext: str) -> Path:
        return self.root / escape_path(module) / "@v" / f"{escape_version(version)}.{ext}"

    def records(self) -> list[str]:
        """The go.sum lines of every version, as the checksum database logs them."""
        return [
            f"{m} {v} {zip_h1(self.file(m, v, 'zip'))}\n"
            f"{m} {v}/go.mod {mod_h1(self.file(m, v, 'mod').read_bytes())}\n"
            for m, v in self.versions
        ]


def _specs(fx: GoFixtures) -> list[str]:
    return [
        *(f"{fx.hello}@{v}" for v in fx.hello_versions),
        f"{fx.consumer}@{fx.consumer_version}",
        f"{fx.upper}@{fx.upper_version}",
    ]


@pytest.fixture(scope="session")
def upstream_tree(
    go_fixtures: GoFixtures, go_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, tuple[tuple[str, str], ...]]:
    """go's download cache of the fixture versions: a GOPROXY tree (with .info files
    reduced to Version and Time, as a proxy serves them)."""
    work = tmp_path_factory.mktemp("upstream")
    found = direct_downloads(go_fixtures, go_binary, work, _specs(go_fixtures))
    root = work / "gopath" / "pkg" / "mod" / "cache" / "download"
    for info in root.rglob("*.info"):
        data = json.loads(info.read_text())
        info.write_text(
            json.dumps({"Version": data["Version"], "Time": data["Time"]}, separators=(",", ":"))
        )
    for lock in root.rglob("*.lock"):
        lock.unlink()
    shutil.rmtree(root / "cache" / "vcs", ignore_errors=True)
    return root, tuple(sorted(found))


@pytest.fixture
def upstream(upstream_tree: tuple[Path, tuple[tuple[str, str], ...]], tmp_path: Path) -> Upstream:
    root, versions = upstream_tree
    copy = tmp_path / "upstream"
    shutil.copytree(root, copy)
    for path in copy.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return Upstream(copy, versions)


@asynccontextmanager
async def upstream_servers(
    upstream: Upstream, sumdb_binary: Path, tmp_path: Path, *sumdb_flags: str
) -> AsyncIterator[tuple[StaticProxy, SumDBServer]]:
    """The static GOPROXY and the checksum database, honest unless ``sumdb_flags`` say
    otherwise (records taken before any tampering the test does afterwards)."""
    records = upstream.records()
    async with (
        static_proxy(upstream.root) as proxy,
        run_sumdb_server(sumdb_binary, tmp_path, records, *sumdb_flags) as sumdb,
    ):
        yield proxy, sumdb


def proxy_config(
    tmp_path: Path,
    go_binary: str,
    fx: GoFixtures,
    goproxy: str,
    sumdb: SumDBServer | None,
    **env: str,
) -> Config:
    """athens-trio with GOPROXY=``goproxy`` and GOSUMDB the local database (or off)."""
    go_env = {
        **fx.go_env,
        "GOPROXY": goproxy,
        "GOSUMDB": sumdb.gosumdb if sumdb else "off",
        **env,
    }
    return make_config(
        tmp_path, go_binary, fx, go_binary_env_vars=[f"{k}={v}" for k, v in go_env.items()]
    )


def zips(proxy: StaticProxy) -> list[str]:
    return [p for p in proxy.paths() if p.endswith(".zip")]


def tamper_zip(path: Path) -> None:
    """Rewrite a module zip with one file's content changed: still a valid zip."""
    with zipfile.ZipFile(path) as old:
        entries = [(info.filename, old.read(info)) for info in old.infolist()]
    path.unlink()
    with zipfile.ZipFile(path, "w") as new:
        for index, (name, data) in enumerate(entries):
            new.writestr(name, data + b"\n// tampered\n" if index == len(entries) - 1 else data)


async def get_all(url: str, paths: Sequence[str]) -> dict[str, httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        return {path: await http.get(path) for path in paths}


# ---------------------------------------------------------------------------------------
# Served through athens-trio
# ---------------------------------------------------------------------------------------


async def test_the_pipeline_uses_the_upstream_proxies_only_when_goproxy_names_one(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    fx = go_fixtures
    async with open_pipeline(make_config(tmp_path, go_binary, fx)) as pipeline:
        assert not isinstance(pipeline.fetches._fetcher, ProxyFetcher)
    config = proxy_config(tmp_path, go_binary, fx, "http://127.0.0.1:9,direct", None)
    async with open_pipeline(config) as pipeline:
        assert isinstance(pipeline.fetches._fetcher, ProxyFetcher)
        assert pipeline.fetches._fetcher._client._netrc == {}
    # The .netrc go gets (NETRCPath here) is the upstream proxies' too.
    (tmp_path / "netrc").write_text("machine corp.example login bot password pw\n")
    config.netrc_path = str(tmp_path / "netrc")
    async with open_pipeline(config) as pipeline:
        assert isinstance(pipeline.fetches._fetcher, ProxyFetcher)
        assert pipeline.fetches._fetcher._client._netrc == {"corp.example": ("bot", "pw")}


async def test_info_mod_zip_list_are_the_upstreams_bytes_verified(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
) -> None:
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb)
        async with served(config) as server:
            for module, version in upstream.versions:
                base = f"/{escape_path(module)}/@v/{escape_version(version)}"
                got = await get_all(server.url, [f"{base}.info", f"{base}.mod", f"{base}.zip"])
                for path, response in got.items():
                    assert response.status_code == 200, (path, response.text)
                    ext = path.rpartition(".")[2]
                    assert response.content == upstream.file(module, version, ext).read_bytes()
            listed = await get_all(server.url, [f"/{escape_path(fx.hello)}/@v/list"])
            assert sorted(next(iter(listed.values())).text.split()) == sorted(fx.hello_versions)
    # One zip per version: each fetched once, and verified (sumdb state kept on disk).
    assert len(zips(proxy)) == len(upstream.versions)
    assert list((tmp_path / "storage" / ".sumdb").glob("*.latest"))


async def test_fetch_mod_takes_no_zip_from_the_upstream(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
) -> None:
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb)
        async with open_pipeline(config) as pipeline:
            fetcher = pipeline.fetches._fetcher
            fetched = await fetcher.fetch_mod(fx.hello, "v1.1.0")
        assert fetched.mod == upstream.file(fx.hello, "v1.1.0", "mod").read_bytes()
        assert fetched.mod_sum == mod_h1(fetched.mod)
        assert not zips(proxy)
        assert any(p.endswith("v1.1.0.mod") for p in proxy.paths())


@pytest.mark.parametrize("part", ["zip", "mod"])
async def test_tampered_upstream_is_refused_while_the_sumdb_is_honest(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
    part: str,
) -> None:
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        if part == "zip":
            tamper_zip(upstream.file(fx.hello, "v1.0.0", "zip"))
        else:
            upstream.file(fx.hello, "v1.0.0", "mod").write_text(f"module {fx.hello}\n// evil\n")
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb)
        async with served(config) as server:
            base = f"/{fx.hello}/@v/v1.0.0"
            got = await get_all(server.url, [f"{base}.zip", f"{base}.mod", f"{base}.info"])
    # A tampered go.mod spoils every part; a tampered zip only the zip (.info and .mod
    # are fetched as the go.mod part, which is honest, and may be stored).
    refused = list(got) if part == "mod" else [f"{base}.zip"]
    for path in refused:
        assert got[path].status_code == 502, (path, got[path].text)
    assert f"{fx.hello}@v1.0.0" in got[f"{base}.zip"].text
    assert "checksum mismatch" in got[f"{base}.zip"].text
    stored = tmp_path / "storage" / escape_path(fx.hello)
    assert not [p for p in stored.rglob("*.zip") if p.is_file()]
    if part == "mod":
        assert not [p for p in stored.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("-sign-other-key",), "not signed by key"),
        (("-tamper", "github.com/athens-fixtures/hello@v1.0.0"), "not the one in its signed"),
    ],
)
async def test_what_a_lying_database_says_is_refused(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
    flags: tuple[str, ...],
    message: str,
) -> None:
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path, *flags) as (proxy, sumdb):
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb)
        async with served(config) as server:
            path = f"/{fx.hello}/@v/v1.0.0.zip"
            (response,) = (await get_all(server.url, [path])).values()
    assert response.status_code == 502
    assert f"{fx.hello}@v1.0.0" in response.text
    assert message in response.text
    assert not (tmp_path / "storage" / escape_path(fx.hello)).exists()


def test_goflags_insecure_turns_the_database_off() -> None:
    assert settings_from_env({"GOFLAGS": "-mod=mod -insecure"}).database is None
    assert settings_from_env({"GOFLAGS": "--insecure=true"}).database is None
    assert settings_from_env({"GOFLAGS": "-insecure -insecure=false"}).database is not None
    assert settings_from_env({"GOFLAGS": "-mod=mod"}).database is not None


@pytest.mark.parametrize(
    "setting", [{"GOSUMDB": "off"}, {"GONOSUMDB": "github.com/athens-fixtures/hello"}]
)
async def test_unchecked_modules_are_stored_as_the_upstream_serves_them(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
    setting: dict[str, str],
) -> None:
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        tampered = upstream.file(fx.hello, "v1.0.0", "zip")
        tamper_zip(tampered)
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb, **setting)
        async with served(config) as server:
            got = await get_all(server.url, [f"/{fx.hello}/@v/v1.0.0.zip"])
    (response,) = got.values()
    assert response.status_code == 200, response.text
    assert response.content == tampered.read_bytes()
    # Nothing was looked up (a lookup stores the tree it verified).
    assert not list((tmp_path / "storage" / ".sumdb").glob("*.latest"))


def rename_zip_entries(path: Path, rename: Callable[[str], str]) -> None:
    """Rewrite a module zip with its entries renamed, content unchanged."""
    with zipfile.ZipFile(path) as old:
        entries = [(rename(info.filename), old.read(info)) for info in old.infolist()]
    path.unlink()
    with zipfile.ZipFile(path, "w") as new:
        for name, data in entries:
            new.writestr(name, data)


@pytest.mark.parametrize(
    ("rename", "problem"),
    [
        (lambda name: "other.com/x@v9.0.0/" + name.split("/", 3)[-1], "does not have prefix"),
        (lambda name: name.replace("/go.mod", "/../../evil/go.mod"), "invalid path element"),
    ],
    ids=["other-prefix", "dot-dot"],
)
async def test_an_unchecked_zip_go_could_not_unzip_is_refused_and_not_stored(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
    rename: Callable[[str], str],
    problem: str,
) -> None:
    """With GOSUMDB=off nothing vouches for the zip: its structure must, as go checks it
    before accepting a proxy's zip (storage never replaces it once stored)."""
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, _sumdb):
        rename_zip_entries(upstream.file(fx.hello, "v1.0.0", "zip"), rename)
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", None)
        async with served(config) as server:
            got = await get_all(server.url, [f"/{fx.hello}/@v/v1.0.0.zip"])
    (response,) = got.values()
    assert response.status_code == 502, response.text
    assert f"{fx.hello}@v1.0.0: the upstream's zip is not valid" in response.text
    assert problem in response.text
    assert not list((tmp_path / "storage").rglob("*.zip"))


async def test_fallthrough_to_go_on_not_found_on_error_and_for_gonoproxy(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
) -> None:
    fx = go_fixtures
    major = f"/{fx.major}/@v/{fx.major_v1_version}"
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, _):
        # Not on the upstream (404): ',' goes on to direct, go fetches from the repos.
        config = proxy_config(tmp_path / "a", go_binary, fx, f"{proxy.url},direct", None)
        async with served(config) as server:
            got = await get_all(server.url, [f"{major}.zip", f"/{fx.major}/@v/list"])
        assert [r.status_code for r in got.values()] == [200, 200]
        assert any(fx.major in p for p in proxy.paths())

        # The upstream fails (500): ',' stops there, '|' goes on to direct.
        proxy.faults[f"{escape_path(fx.hello)}/@v/v1.0.0.info"] = 500
        hello = f"/{fx.hello}/@v/v1.0.0.zip"
        config = proxy_config(tmp_path / "b", go_binary, fx, f"{proxy.url},direct", None)
        async with served(config) as server:
            assert (await get_all(server.url, [hello]))[hello].status_code == 502
        config = proxy_config(tmp_path / "c", go_binary, fx, f"{proxy.url}|direct", None)
        async with served(config) as server:
            assert (await get_all(server.url, [hello]))[hello].status_code == 200

        # GONOPROXY: straight to go, the upstream never asked.
        proxy.seen.clear()
        config = proxy_config(
            tmp_path / "d", go_binary, fx, f"{proxy.url},off", None, GONOPROXY=fx.upper
        )
        upper = f"/{escape_path(fx.upper)}/@v/{fx.upper_version}"
        async with served(config) as server:
            got = await get_all(server.url, [f"{upper}.zip", f"{upper}.info"])
        assert [r.status_code for r in got.values()] == [200, 200]
        assert proxy.paths() == []


async def test_lister_lists_and_resolves_from_the_upstream(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
) -> None:
    fx = go_fixtures
    # A version listed but gone (say, retracted and removed), and a pre-release.
    listing = "v1.1.0\nv1.0.0\nv0.9.0\nv1.2.0-rc.1\n"
    (upstream.root / escape_path(fx.hello) / "@v" / "list").write_text(listing)
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb)
        async with open_pipeline(config) as pipeline:
            # Under the protocol's cache and the go pool: the factory's ProxyLister.
            lister: Any = pipeline.lookups._lister
            while not isinstance(lister, ProxyLister) and hasattr(lister, "_inner"):
                lister = lister._inner
            assert isinstance(lister, ProxyLister)
            asked = len(proxy.paths())
            listed = await lister.list(fx.hello)
            # As the upstream lists them (a retracted or vanished one included), in one
            # request: latest is another (the highest's .info), asked only for @latest.
            assert listed.versions == listing.split()
            assert listed.latest is None
            assert proxy.paths()[asked:] == [f"/{escape_path(fx.hello)}/@v/list"]
            assert (await lister.resolve(fx.hello, "v1.0.0")).Version == "v1.0.0"
            assert (await lister.resolve(fx.hello, "latest")).Version == "v1.1.0"
            # Through the protocol: @latest resolves what the list does not say.
            assert json.loads(await pipeline.protocol.latest(fx.hello))["Version"] == "v1.1.0"
            # A list never depends on the .info of its highest version.
            upper = f"/{escape_path(fx.upper)}/@v/{escape_version(fx.upper_version)}"
            proxy.faults[f"{upper}.info"] = 502
            listed_versions = await pipeline.protocol.list(fx.upper)
            assert listed_versions == [fx.upper_version]
    assert not zips(proxy)


@pytest.mark.parametrize("network_mode", ["fallback", "strict"])
async def test_latest_falls_back_on_storage_as_a_failing_list_does(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
    network_mode: NetworkMode,
) -> None:
    # The list says nothing of latest: resolving it is a request of its own, whose
    # failure storage answers as it answers a failing list (NetworkMode fallback).
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb)
        config.network_mode = network_mode
        async with open_pipeline(config) as pipeline:
            await pipeline.protocol.info(fx.hello, "v1.0.0")  # stored
            newest = max(fx.hello_versions, key=lambda v: tuple(map(int, v[1:].split("."))))
            proxy.faults[f"/{escape_path(fx.hello)}/@v/{newest}.info"] = 502
            if network_mode == "strict":
                with pytest.raises(UpstreamError):
                    await pipeline.protocol.latest(fx.hello)
            else:
                latest = json.loads(await pipeline.protocol.latest(fx.hello))
                assert latest["Version"] == "v1.0.0"


# ---------------------------------------------------------------------------------------
# A real go client, verifying go.sum against the same database
# ---------------------------------------------------------------------------------------


def consumer_app(tmp_path: Path, fx: GoFixtures) -> Path:
    """A main module requiring the consumer fixture, printing what it says."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "go.mod").write_text(
        f"module example.com/app\n\ngo 1.21\n\nrequire {fx.consumer} {fx.consumer_version}\n"
    )
    (app / "main.go").write_text(
        f'package main\n\nimport (\n\t"fmt"\n\n\t"{fx.consumer}"\n)\n\n'
        "func main() { fmt.Println(consumer.Greeting()) }\n"
    )
    return app


def assert_go_sum_proven(app: Path, upstream: Upstream, fx: GoFixtures) -> None:
    """The consumer's go.sum lines are the database's records."""
    go_sum = set((app / "go.sum").read_text().splitlines())
    records = {line for record in upstream.records() for line in record.splitlines()}
    assert {line for line in go_sum if fx.consumer in line} <= records
    assert f"{fx.consumer} {fx.consumer_version} " in "\n".join(go_sum)


def key_only_env(env: dict[str, str], sumdb: SumDBServer) -> dict[str, str]:
    """A go client's ``env`` knowing the database by its key alone (its name resolves
    nowhere: only a proxy serving it reaches it)."""
    return {**env, "GOSUMDB": sumdb.vkey, "GONOSUMDB": "", "GOPRIVATE": "", "GOFLAGS": "-mod=mod"}


def serving_the_database(
    directory: Path, go_binary: str, fx: GoFixtures, proxy: StaticProxy, sumdb: SumDBServer
) -> Config:
    """athens-trio serving the upstream's modules and, by a SumDBs mirror entry, the
    database under its own name."""
    directory.mkdir(exist_ok=True)
    config = proxy_config(directory, go_binary, fx, f"{proxy.url},direct", sumdb)
    config.sum_dbs = [f"{sumdb.name} {sumdb.url}"]
    return config


def behind(directory: Path, go_binary: str, fx: GoFixtures, url: str, sumdb: SumDBServer) -> Config:
    """athens-trio whose GOPROXY is ``url`` and which knows the database by its key."""
    directory.mkdir(exist_ok=True)
    return proxy_config(directory, go_binary, fx, f"{url},direct", None, GOSUMDB=sumdb.vkey)


async def test_go_builds_a_consumer_through_an_upstream_backed_proxy(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
    go_build_cache: Path,
) -> None:
    fx = go_fixtures
    app = consumer_app(tmp_path, fx)
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb)
        async with served(config) as server:
            env = client_env(tmp_path, fx, go_build_cache, server.url)
            env.update(GOSUMDB=sumdb.gosumdb, GONOSUMDB="", GOFLAGS="-mod=mod")
            await run_go(go_binary, ["build", "-o", "app", "."], cwd=app, env=env)
    ran = await trio.run_process([str(app / "app")], capture_stdout=True)
    assert ran.stdout.decode() == f"consumer says: {fx.hello_texts['v1.1.0']}\n"
    assert_go_sum_proven(app, upstream, fx)
    assert len(zips(proxy)) >= 1


async def test_a_client_reaching_only_the_proxy_verifies_through_its_mirror_of_the_database(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
    go_build_cache: Path,
) -> None:
    # The database is reached by a mirror's URL only (SumDBs "<name> <url>", as a proxy
    # that reaches sum.golang.org through proxy.golang.org/sumdb/); the client knows the
    # database by its key alone, and its name resolves nowhere: every lookup and tile
    # goes through /sumdb/<name>/, and go checks them with the key.
    fx = go_fixtures
    app = consumer_app(tmp_path, fx)
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        config = serving_the_database(tmp_path, go_binary, fx, proxy, sumdb)
        async with served(config) as server:
            env = key_only_env(client_env(tmp_path, fx, go_build_cache, server.url), sumdb)
            await run_go(go_binary, ["build", "-o", "app", "."], cwd=app, env=env)
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert (await http.get(f"/sumdb/{sumdb.name}/supported")).status_code == 200
                assert (await http.get(f"/sumdb/{sumdb.addr}/supported")).status_code == 404
    assert_go_sum_proven(app, upstream, fx)


async def test_a_fetching_proxy_verifies_through_its_upstreams_checksum_proxy(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
) -> None:
    # athens-trio B serves the modules and, by a SumDBs mirror entry, the database;
    # athens-trio A has B as its GOPROXY and the database by its key alone (its name
    # resolves nowhere): A must find it through B, as go would.
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        b_config = serving_the_database(tmp_path / "b", go_binary, fx, proxy, sumdb)
        async with served(b_config) as b:
            async with open_pipeline(behind(tmp_path / "a", go_binary, fx, b.url, sumdb)) as a:
                zip_file = await a.protocol.zip(fx.hello, "v1.1.0")
                assert zip_file.size == upstream.file(fx.hello, "v1.1.0", "zip").stat().st_size
                assert await a.storage.exists(fx.hello, "v1.1.0")  # verified through B
            # Without B serving the database, A reaches for it directly, and cannot.
            b_config.sum_dbs = []
        async with served(b_config) as b:
            c_config = behind(tmp_path / "c", go_binary, fx, b.url, sumdb)
            async with open_pipeline(c_config) as c:
                with pytest.raises(UpstreamError, match=sumdb.name):
                    await c.protocol.zip(fx.hello, "v1.1.0")
                assert not await c.storage.exists(fx.hello, "v1.1.0")


async def test_clients_verify_through_a_proxy_that_reaches_the_database_only_upstream(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
    go_build_cache: Path,
) -> None:
    # A (the proxy clients use) names the database by its own URL, as Athens' default
    # SumDBs does, and reaches nothing but B, its GOPROXY, which serves the database:
    # A's /sumdb/ forwards through B, as its own checks go.
    fx = go_fixtures
    app = consumer_app(tmp_path, fx)
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        b_config = serving_the_database(tmp_path / "b", go_binary, fx, proxy, sumdb)
        async with served(b_config) as b:
            a_config = behind(tmp_path / "a", go_binary, fx, b.url, sumdb)
            a_config.sum_dbs = [f"https://{sumdb.name}"]
            async with served(a_config) as a:
                env = key_only_env(client_env(tmp_path, fx, go_build_cache, a.url), sumdb)
                await run_go(go_binary, ["build", "-o", "app", "."], cwd=app, env=env)
    assert_go_sum_proven(app, upstream, fx)


# ---------------------------------------------------------------------------------------
# A cold version costs round trips: asked at once, the go.mod part not asked twice
# ---------------------------------------------------------------------------------------


def _hello_paths(proxy: StaticProxy, hello: str, version: str) -> list[str]:
    return sorted(p.rpartition("/")[2] for p in proxy.paths() if f"{hello}/@v/{version}." in p)


async def test_a_zip_after_its_go_mod_asks_the_upstream_and_the_database_once(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
) -> None:
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb)
        async with open_pipeline(config) as pipeline:
            sums = pipeline.fetches._fetcher._sums._client  # type: ignore[attr-defined]
            assert (
                await pipeline.protocol.go_mod(fx.hello, "v1.1.0")
                == upstream.file(fx.hello, "v1.1.0", "mod").read_bytes()
            )
            assert _hello_paths(proxy, fx.hello, "v1.1.0") == ["v1.1.0.info", "v1.1.0.mod"]
            await pipeline.protocol.zip(fx.hello, "v1.1.0")
            # The zip alone; its go.sum lines proven once, with the go.mod.
            assert _hello_paths(proxy, fx.hello, "v1.1.0") == [
                "v1.1.0.info",
                "v1.1.0.mod",
                "v1.1.0.zip",
            ]
            assert sums.statistics().lookups == 1
    stored_zip = tmp_path / "storage" / escape_path(fx.hello) / "@v" / "v1.1.0.zip"
    assert stored_zip.read_bytes() == upstream.file(fx.hello, "v1.1.0", "zip").read_bytes()


async def test_a_tampered_zip_after_its_honest_go_mod_is_refused(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
) -> None:
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        tamper_zip(upstream.file(fx.hello, "v1.0.0", "zip"))
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb)
        async with served(config) as server:
            base = f"/{fx.hello}/@v/v1.0.0"
            got = await get_all(server.url, [f"{base}.mod", f"{base}.zip", f"{base}.zip"])
    assert got[f"{base}.mod"].status_code == 200
    assert got[f"{base}.zip"].status_code == 502
    assert "checksum mismatch" in got[f"{base}.zip"].text
    assert not list((tmp_path / "storage").rglob("*.zip"))


async def test_info_mod_and_lookup_go_out_at_once(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
) -> None:
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, sumdb):
        proxy.hang.add("v1.1.0.info")  # never answers: what else is asked meanwhile?
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},direct", sumdb)
        async with open_pipeline(config) as pipeline:
            fetcher = pipeline.fetches._fetcher
            sums = fetcher._sums._client  # type: ignore[attr-defined]
            with trio.move_on_after(30) as waited:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fetcher.fetch_mod, fx.hello, "v1.1.0")
                    while "v1.1.0.mod" not in _hello_paths(proxy, fx.hello, "v1.1.0") or (
                        sums.statistics().lookups == 0
                    ):
                        await trio.sleep(0.01)
                    nursery.cancel_scope.cancel()
            assert not waited.cancelled_caught


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        # The error asking one after the other would give: the .info's first.
        ({"v1.0.0.info": 404, "v1.0.0.mod": 500}, NotFoundError),
        ({"v1.0.0.info": 500, "v1.0.0.mod": 404}, UpstreamError),
        ({"v1.0.0.mod": 404, "v1.0.0.zip": 500}, NotFoundError),
        ({"v1.0.0.zip": 500}, UpstreamError),
    ],
)
async def test_requests_at_once_fail_as_one_after_the_other_would(
    tmp_path: Path,
    go_binary: str,
    go_fixtures: GoFixtures,
    upstream: Upstream,
    sumdb_binary: Path,
    faults: dict[str, int],
    expected: type[Exception],
) -> None:
    fx = go_fixtures
    async with upstream_servers(upstream, sumdb_binary, tmp_path) as (proxy, _):
        proxy.faults.update(faults)
        # "off" after the proxy: nothing falls through to go.
        config = proxy_config(tmp_path, go_binary, fx, f"{proxy.url},off", None)
        async with open_pipeline(config) as pipeline:
            with pytest.raises(expected) as raised:
                async with pipeline.fetches._fetcher.fetch(fx.hello, "v1.0.0"):
                    pass
    assert type(raised.value) is expected or expected is NotFoundError
    assert not list(tmp_path.glob("goget/athens-upstream-*"))


async def test_in_order_cancels_what_comes_after_a_failure_and_waits_for_what_comes_before() -> (
    None
):
    finished: list[str] = []

    async def slow_ok() -> str:
        await trio.sleep(0.05)
        finished.append("first")
        return "first"

    async def fails() -> str:
        raise UpstreamError("second failed")

    async def never() -> str:
        await trio.sleep_forever()
        raise AssertionError("not reached")

    first, second, third = _Call(slow_ok), _Call(fails), _Call(never)
    with pytest.raises(UpstreamError, match="second failed"):
        await _in_order(first, second, third)
    assert finished == ["first"]
    assert first.value == "first"

    async def late_failure() -> str:
        await trio.sleep(0.05)
        raise NotFoundError("first failed")

    async def early_failure() -> str:
        raise UpstreamError("second failed")

    with pytest.raises(NotFoundError, match="first failed"):
        await _in_order(_Call(late_failure), _Call(early_failure))


def _part(version: str, size: int) -> _ModPart:
    info = UpstreamInfo(version, datetime(2024, 1, 2, tzinfo=UTC))
    return _ModPart(info, b"m" * size, "h1:x", None)


def test_recent_go_mod_parts_are_bounded_in_number_and_bytes() -> None:
    recent = _RecentParts(entries=3, size=1600)
    for n in range(5):
        recent.put("m", _part(f"v1.0.{n}", 10))
    assert len(recent) == 3
    assert recent.take("m", "v1.0.1") is None  # the oldest went first
    assert recent.take("m", "v1.0.4") is not None
    assert recent.take("m", "v1.0.4") is None  # taken once
    recent.put("m", _part("v2.0.0", 101))  # more than a sixteenth of the bytes: not kept
    assert recent.take("m", "v2.0.0") is None
    for n in range(20):
        recent.put("b", _part(f"v1.0.{n}", 100))
    assert len(recent) <= 3
    assert sum(len(p.mod) for p in recent._parts.values()) <= 1600
