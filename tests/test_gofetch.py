"""The go side of the fetch path: go.mod without the zip, resolving without -versions,
retracted versions listed, modules for a newer go, status by cause (never by the
request's spelling), no server path in a message, and a dummy main module."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from athens_trio import Config, GoFetcher, GoLister, NotFoundError, UpstreamError
from athens_trio._ziphash import mod_h1
from athens_trio.upstream import GoProcessRunner, GoResult, classify_go_error
from athens_trio.upstream._gocmd import PATH_PLACEHOLDER, scrub_paths

from .conftest import make_config
from .gofixtures import FetchFixtures, GoFixtures, build_fetch_fixtures
from .helpers import ScriptedGo, direct_download, leftover


@pytest.fixture(scope="session")
def fetch_fixtures(go_fixtures: GoFixtures) -> FetchFixtures:
    return build_fetch_fixtures(go_fixtures)


class InspectingRunner(GoProcessRunner):
    """The real runner, recording each run's argv and every file its GOPATH held."""

    def __init__(self, config: Config) -> None:
        super().__init__(
            config.go_binary, env=config.go_env_overrides(), temp_root=config.go_get_dir
        )
        self.runs: list[list[str]] = []
        self.files: list[str] = []

    @contextlib.asynccontextmanager
    async def run(
        self,
        args: Sequence[str],
        *,
        timeout: float,  # noqa: ASYNC109
        what: str,
    ) -> AsyncIterator[GoResult]:
        self.runs.append(list(args))
        async with self.workspace() as workspace:
            result = await self._run_in(args, workspace=workspace, timeout=timeout, what=what)
            self.files += [p.name for p in workspace.rglob("*")]
            yield result


# --- 1. fetch_mod without the zip; resolve without -versions; list with -retracted ----


@pytest.mark.parametrize(
    ("fixture", "version"),
    [
        ("hello", "v1.0.0"),
        ("hello", "hello_main_pseudo"),
        ("major_v2", "major_v2_version"),
        ("incompatible", "v2.0.0+incompatible"),
    ],
)
async def test_fetch_mod_matches_a_direct_download_without_any_zip(
    config: Config,
    go_fixtures: GoFixtures,
    go_binary: str,
    tmp_path: Path,
    fixture: str,
    version: str,
) -> None:
    module = getattr(go_fixtures, fixture)
    version = getattr(go_fixtures, version, version)
    direct = direct_download(go_fixtures, go_binary, tmp_path, f"{module}@{version}")
    runner = InspectingRunner(config)
    fetched = await GoFetcher(runner, timeout=60).fetch_mod(module, version)
    assert (fetched.module, fetched.version) == (module, version)
    assert fetched.mod == Path(direct["GoMod"]).read_bytes()
    assert fetched.mod_sum == direct["GoModSum"] == mod_h1(fetched.mod)
    direct_info = json.loads(Path(direct["Info"]).read_bytes())
    assert json.loads(fetched.info) == {"Version": version, "Time": direct_info["Time"]}
    assert runner.runs == [["list", "-m", "-json", f"{module}@{version}"]]
    assert f"{version}.mod" in runner.files  # the GOPATH was inspected...
    assert not [name for name in runner.files if name.endswith(".zip")]  # ...no zip in it
    assert leftover(config) == []


async def test_fetch_mod_not_found(config: Config, go_fixtures: GoFixtures) -> None:
    fetcher = GoFetcher(InspectingRunner(config), timeout=60)
    with pytest.raises(NotFoundError):
        await fetcher.fetch_mod(go_fixtures.hello, "v9.9.9")
    with pytest.raises(NotFoundError):
        await fetcher.fetch_mod(go_fixtures.missing, "v1.0.0")


async def test_resolve_asks_go_list_without_versions(
    config: Config, go_fixtures: GoFixtures
) -> None:
    runner = InspectingRunner(config)
    lister = GoLister(runner, timeout=60)
    main = await lister.resolve(go_fixtures.hello, "main")
    assert main.Version == go_fixtures.hello_main_pseudo
    assert (await lister.resolve(go_fixtures.hello, "v1.0")).Version == "v1.0.0"
    assert (await lister.resolve(go_fixtures.hello, "latest")).Version == "v1.1.0"
    assert runner.runs == [
        ["list", "-m", "-json", f"{go_fixtures.hello}@{query}"]
        for query in ("main", "v1.0", "latest")
    ]


async def test_list_includes_retracted_versions_but_latest_does_not(
    config: Config, fetch_fixtures: FetchFixtures
) -> None:
    lister = GoLister(InspectingRunner(config), timeout=60)
    listed = await lister.list(fetch_fixtures.retracting)
    assert listed.versions == list(fetch_fixtures.retracting_versions)
    assert listed.latest is not None
    assert listed.latest.Version == "v1.2.0"
    # A retracted version still resolves and fetches (a client pinned to it needs it).
    fetched = await GoFetcher(InspectingRunner(config), timeout=60).fetch_mod(
        fetch_fixtures.retracting, "v1.0.0"
    )
    assert fetched.version == "v1.0.0"


def _retracted_latest(args: Sequence[str]) -> GoResult:
    """A go whose @latest with -retracted is a retracted v1.3.0; without, v1.2.0."""
    if "-retracted" in args:
        listed = {
            "Path": "example.com/r",
            "Version": "v1.3.0",
            "Versions": ["v1.2.0", "v1.3.0"],
            "Retracted": ["oops"],
            "Time": "2024-01-02T00:00:00Z",
        }
    else:
        listed = {"Path": "example.com/r", "Version": "v1.2.0", "Time": "2024-01-01T00:00:00Z"}
    return GoResult(0, json.dumps(listed).encode(), b"")


async def test_list_never_answers_a_retracted_latest() -> None:
    go = ScriptedGo(_retracted_latest)
    listed = await GoLister(go, timeout=5).list("example.com/r")
    assert listed.versions == ["v1.2.0", "v1.3.0"]
    assert listed.latest is not None
    assert listed.latest.Version == "v1.2.0"
    assert [args for args, _ in go.runs] == [
        ["list", "-m", "-versions", "-retracted", "-json", "example.com/r@latest"],
        ["list", "-m", "-json", "example.com/r@latest"],
    ]


# --- 2. a module for a newer go ---------------------------------------------------------


async def test_a_module_for_a_newer_go_is_listed_resolved_and_its_go_mod_fetched(
    config: Config, fetch_fixtures: FetchFixtures
) -> None:
    module = fetch_fixtures.future
    lister = GoLister(InspectingRunner(config), timeout=60)
    listed = await lister.list(module)
    assert listed.versions == list(fetch_fixtures.future_versions)
    assert listed.latest is not None
    assert listed.latest.Version == "v1.1.0"
    main = await lister.resolve(module, "main")
    assert main.Version == fetch_fixtures.future_main_pseudo
    fetched = await GoFetcher(InspectingRunner(config), timeout=60).fetch_mod(module, "v1.0.0")
    assert b"\ngo 1.99\n" in fetched.mod
    assert fetched.mod_sum == mod_h1(fetched.mod)


async def test_a_newer_go_zip_is_a_fault_never_a_404_and_names_no_server_path(
    config: Config, fetch_fixtures: FetchFixtures
) -> None:
    """cmd/go's codeRepo.Zip refuses to build the zip of a module whose go line is newer
    than its own version (gover.Local() is the binary's runtime.Version(), which no
    setting changes), so the zip needs a newer go binary: an UpstreamError, not a 404."""
    with pytest.raises(UpstreamError, match=r"requires go >= 1\.99") as caught:
        async with GoFetcher(InspectingRunner(config), timeout=60).fetch(
            fetch_fixtures.future, "v1.0.0"
        ):
            pass
    assert not isinstance(caught.value, NotFoundError)
    assert config.go_get_dir not in str(caught.value)


# --- 3. status by cause -----------------------------------------------------------------

_VCS = "/srv/goget/athens-trio-x1y2/gopath/pkg/mod/cache/vcs/b9a137ba5fc5116a9c7dcb96b7f6"
_HINT = (
    "\nConfirm the import path was entered correctly.\nIf this is a private repository, see "
    "https://golang.org/doc/faq#git_https for additional information."
)


def _ls_remote(subject: str, git_says: str) -> str:
    """go's message when git ls-remote failed (as go 1.26 prints it)."""
    return (
        f"{subject}git ls-remote -q --end-of-options origin in {_VCS}: exit status 128:\n"
        f"\tfatal: {git_says}"
    )


_REFUSALS = {
    "401": "could not read Username for 'https://git.corp.example': terminal prompts disabled",
    "403": "unable to access 'https://git.corp.example/x/': The requested URL returned error: 403",
    "429": "unable to access 'https://git.corp.example/x/': The requested URL returned error: 429",
}


@pytest.mark.parametrize("refusal", sorted(_REFUSALS))
@pytest.mark.parametrize(
    "subject",
    [
        "github.com/auth/private@v1.0.0: invalid version: ",  # a canonical version
        "github.com/auth/private@main: invalid version: ",  # a query
        "module github.com/auth/private: ",  # @latest, list
    ],
)
def test_a_refusal_is_the_same_fault_whatever_the_request(subject: str, refusal: str) -> None:
    message = _ls_remote(subject, _REFUSALS[refusal]) + (_HINT if refusal == "401" else "")
    query = subject.split("@")[1].split(":")[0] if "@" in subject else "latest"
    error = classify_go_error(
        message,
        module="github.com/auth/private",
        query=query,
        private_paths=["/srv/goget"],
    )
    assert type(error) is UpstreamError
    assert "/srv/goget" not in str(error)
    assert f"in {PATH_PLACEHOLDER}: exit status 128" in str(error)


@pytest.mark.parametrize(
    ("message", "scrubbed"),
    [
        ("in /srv/goget/athens-trio-1/gopath/x: exit 1", "in $WORK: exit 1"),
        ("open /root/.netrc: permission denied", "open $WORK: permission denied"),
        ("HOME is /home/athens, not /home", "HOME is $WORK, not /home"),
        ("reading 'https://h.example/a/b' (\"/v2\") i/o timeout", None),
        (
            "'/repos/x/y' does not appear to be a git repository",
            "'$WORK' does not appear to be a git repository",
        ),
    ],
)
def test_scrub_paths(message: str, scrubbed: str | None) -> None:
    assert scrub_paths(message, ["/home/athens"]) == (scrubbed or message)


@pytest.mark.parametrize(
    ("module", "query", "message"),
    [
        (
            "github.com/x/timeout",
            "v1.0.0",
            _ls_remote(
                "github.com/x/timeout@v1.0.0: invalid version: ",
                "'https://github.com/x/timeout' does not appear to be a git repository",
            ),
        ),
        (
            "example.com/hello",
            "v1.0.500",
            "example.com/hello@v1.0.500: invalid version: unknown revision v1.0.500",
        ),
        (
            "example.com/hello",
            "connection-refused",
            "example.com/hello@connection-refused: invalid version: unknown revision "
            "connection-refused",
        ),
        (
            "example.com/eof/sub",
            "latest",
            "module example.com/eof/sub: git ls-remote -q origin in /tmp/athens-trio-q: exit "
            "status 128:\n\tfatal: repository 'https://example.com/eof/' not found",
        ),
        (
            "example.com/m",
            "v1.0",
            'example.com/m@v1.0: no matching versions for query "v1.0"',
        ),
    ],
)
def test_the_request_spelling_never_decides(module: str, query: str, message: str) -> None:
    error = classify_go_error(message, module=module, query=query)
    assert type(error) is NotFoundError
    assert "athens-trio-" not in str(error)


@pytest.mark.parametrize(
    ("module", "version"), [("github.com/athens-fixtures/timeout", "v1.0.0"), ("hello", "v1.0.500")]
)
async def test_the_request_spelling_never_decides_with_the_real_go(
    config: Config, go_fixtures: GoFixtures, module: str, version: str
) -> None:
    module = getattr(go_fixtures, module, module)
    fetcher = GoFetcher(InspectingRunner(config), timeout=60)
    with pytest.raises(NotFoundError) as caught:
        await fetcher.fetch_mod(module, version)
    assert config.go_get_dir not in str(caught.value)
    with pytest.raises(NotFoundError) as caught:
        async with fetcher.fetch(module, version):
            pass
    assert config.go_get_dir not in str(caught.value)
    with pytest.raises(NotFoundError):
        await GoLister(InspectingRunner(config), timeout=60).resolve(module, version)


# --- 4. a dummy main module -------------------------------------------------------------


@pytest.mark.parametrize(
    "parent_go_mod",
    [
        "module parent.example/p\n\ngo 1.99\n",
        "module parent.example/p\n\ngo 1.21\n\nexclude github.com/athens-fixtures/hello v1.0.0\n",
        "module parent.example/p\n\ngo 1.21\n\nreplace github.com/athens-fixtures/hello => ./x\n",
    ],
)
async def test_a_go_mod_above_go_get_dir_never_steers_the_fetch(
    tmp_path: Path, go_fixtures: GoFixtures, go_binary: str, parent_go_mod: str
) -> None:
    config = make_config(tmp_path, go_binary, go_fixtures)
    assert Path(config.go_get_dir).parent == tmp_path
    (tmp_path / "go.mod").write_text(parent_go_mod)
    hello = go_fixtures.hello
    fetcher = GoFetcher(InspectingRunner(config), timeout=60)
    async with fetcher.fetch(hello, "v1.0.0") as fetched:
        assert fetched.version == "v1.0.0"
        assert fetched.zip_file.stat().st_size > 0
    assert (await fetcher.fetch_mod(hello, "v1.0.0")).version == "v1.0.0"
    lister = GoLister(InspectingRunner(config), timeout=60)
    assert (await lister.list(hello)).versions == list(go_fixtures.hello_versions)
    assert (await lister.resolve(hello, "v1.0")).Version == "v1.0.0"
    assert leftover(config) == []
