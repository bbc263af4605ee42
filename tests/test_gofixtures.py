"""The fixture repositories of tests/gofixtures.py, checked against the real go binary.

Every go run here gets a fresh GOPATH, module cache and build cache, an empty working
directory, and HTTP(S) proxies that lead nowhere, so nothing can quietly use the network:
all a run sees is the local repositories the fixtures built.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .gofixtures import GO_BINARY, GoFixtures, build_go_fixtures

# Any HTTP request go or git tried would fail at once instead of leaving the machine.
_NO_NETWORK = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}


@pytest.fixture(scope="session")
def built_fixtures(tmp_path_factory: pytest.TempPathFactory) -> GoFixtures:
    return build_go_fixtures(tmp_path_factory.mktemp("gofixtures-repos"))


def _go_env(fixtures: GoFixtures, home: Path) -> dict[str, str]:
    gopath = home / "gopath"
    return fixtures.environ(
        GOPATH=str(gopath),
        GOMODCACHE=str(gopath / "pkg" / "mod"),
        GOCACHE=str(home / "gocache"),
        **_NO_NETWORK,
    )


def _go(
    fixtures: GoFixtures, home: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if cwd is None:
        cwd = home / "cwd"
        cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [GO_BINARY, *args],
        cwd=cwd,
        env=_go_env(fixtures, home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _download(fixtures: GoFixtures, home: Path, query: str) -> tuple[int, dict[str, Any]]:
    """``go mod download -json query``: go's exit status and its JSON."""
    result = _go(fixtures, home, "mod", "download", "-json", query)
    try:
        info: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"go printed no JSON for {query}: {result.stdout!r} {result.stderr!r}")
    return result.returncode, info


def _download_ok(fixtures: GoFixtures, home: Path, query: str) -> dict[str, Any]:
    code, info = _download(fixtures, home, query)
    assert code == 0, info
    assert "Error" not in info, info
    assert info["Sum"].startswith("h1:")
    assert info["GoModSum"].startswith("h1:")
    for key in ("Info", "GoMod", "Zip"):
        assert Path(info[key]).is_file(), (key, info)
    assert Path(info["Dir"]).is_dir()
    return info


def _download_error(fixtures: GoFixtures, home: Path, query: str) -> str:
    code, info = _download(fixtures, home, query)
    assert code != 0, info
    error = info["Error"]
    assert isinstance(error, str)
    return error


def test_build_is_deterministic(tmp_path: Path) -> None:
    first = build_go_fixtures(tmp_path / "one")
    second = build_go_fixtures(tmp_path / "two")

    # Same commits wherever and whenever they are built.
    assert first.hello_main_pseudo == second.hello_main_pseudo
    assert first.hello_main_commit == second.hello_main_commit
    assert first.consumer_go_sum == second.consumer_go_sum
    assert first.hello_main_pseudo.startswith("v1.1.1-0.20240103000000-")
    assert first.hello_main_pseudo.endswith("-" + first.hello_main_commit[:12])

    root = first.repos_root
    assert first.git_env["GIT_CONFIG_KEY_0"] == f"url.{root.as_uri()}/.insteadOf"
    assert first.git_env["GIT_CONFIG_VALUE_0"] == "https://github.com/"
    assert first.go_env.items() >= first.git_env.items()
    assert first.go_env["GOPROXY"] == "direct"
    assert first.go_env["GOSUMDB"] == "off"
    env = first.environ(GOFLAGS="-x")
    assert env["GOFLAGS"] == "-x"
    assert env["GOPROXY"] == "direct"
    for name in ("hello", "consumer", "UpperCase", "major", "legacy"):
        assert (root / "athens-fixtures" / name / "HEAD").is_file(), name
    assert not (root / "athens-fixtures" / "does-not-exist").exists()


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1.0.0", "v1.1.0"])
def test_hello_tags(built_fixtures: GoFixtures, tmp_path: Path, version: str) -> None:
    fx = built_fixtures
    assert version in fx.hello_versions
    info = _download_ok(fx, tmp_path, f"{fx.hello}@{version}")
    assert info["Path"] == fx.hello
    assert info["Version"] == version
    assert "Query" not in info
    # go reports the URL it asked for; git's insteadOf rewrite stays invisible to it.
    assert info["Origin"]["URL"] == f"https://{fx.hello}"
    assert info["Origin"]["Ref"] == f"refs/tags/{version}"
    source = (Path(info["Dir"]) / "hello.go").read_text()
    assert f'"{fx.hello_texts[version]}"' in source


@pytest.mark.slow
def test_hello_main_resolves_to_the_pseudo_version(
    built_fixtures: GoFixtures, tmp_path: Path
) -> None:
    fx = built_fixtures
    info = _download_ok(fx, tmp_path, f"{fx.hello}@main")
    assert info["Version"] == fx.hello_main_pseudo
    assert info["Query"] == "main"
    assert info["Origin"]["Hash"] == fx.hello_main_commit
    assert info["Origin"]["Ref"] == "refs/heads/main"
    source = (Path(info["Dir"]) / "hello.go").read_text()
    assert f'"{fx.hello_texts[fx.hello_main_pseudo]}"' in source

    # The pseudo-version itself is a valid query, and @latest is the newest tag.
    again = _download_ok(fx, tmp_path / "again", f"{fx.hello}@{fx.hello_main_pseudo}")
    assert again["Version"] == fx.hello_main_pseudo
    assert again["Sum"] == info["Sum"]
    latest = _download_ok(fx, tmp_path / "latest", f"{fx.hello}@latest")
    assert latest["Version"] == fx.hello_versions[-1]
    assert latest["Query"] == "latest"


@pytest.mark.slow
def test_hello_version_list(built_fixtures: GoFixtures, tmp_path: Path) -> None:
    fx = built_fixtures
    result = _go(fx, tmp_path, "list", "-m", "-json", "-versions", fx.hello)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Versions"] == list(fx.hello_versions)


@pytest.mark.slow
def test_consumer_and_its_go_sum(built_fixtures: GoFixtures, tmp_path: Path) -> None:
    fx = built_fixtures
    info = _download_ok(fx, tmp_path, f"{fx.consumer}@{fx.consumer_version}")
    assert info["Version"] == fx.consumer_version
    module_dir = Path(info["Dir"])
    assert (module_dir / "go.sum").read_text() == fx.consumer_go_sum
    assert (module_dir / "cmd" / "consumer" / "main.go").is_file()

    # The go.sum computed in Python is what go itself computes for hello v1.1.0 ...
    hello = _download_ok(fx, tmp_path, f"{fx.hello}@v1.1.0")
    assert fx.consumer_go_sum == (
        f"{fx.hello} v1.1.0 {hello['Sum']}\n{fx.hello} v1.1.0/go.mod {hello['GoModSum']}\n"
    )

    # ... and go accepts it when it builds the consumer (the library package: the
    # command would compile the runtime into an empty build cache, which takes seconds).
    work = tmp_path / "consumer"
    shutil.copytree(module_dir, work)
    result = _go(fx, tmp_path, "build", "-mod=readonly", ".", cwd=work)
    assert result.returncode == 0, result.stderr
    result = _go(fx, tmp_path, "list", "-mod=readonly", "-deps", fx.consumer_cmd, cwd=work)
    assert result.returncode == 0, result.stderr
    assert fx.hello in result.stdout.split()


@pytest.mark.slow
def test_uppercase_path(built_fixtures: GoFixtures, tmp_path: Path) -> None:
    fx = built_fixtures
    info = _download_ok(fx, tmp_path, f"{fx.upper}@{fx.upper_version}")
    assert info["Path"] == fx.upper
    assert info["Version"] == fx.upper_version
    # The module cache escapes capitals; the repository directory keeps them.
    assert "/athens-fixtures/!upper!case/@v/" in info["Zip"]


@pytest.mark.slow
def test_major_versions(built_fixtures: GoFixtures, tmp_path: Path) -> None:
    fx = built_fixtures
    v2 = _download_ok(fx, tmp_path, f"{fx.major_v2}@{fx.major_v2_version}")
    assert v2["Path"] == fx.major_v2
    assert v2["Version"] == fx.major_v2_version
    assert v2["Origin"]["URL"] == f"https://{fx.major}"
    v1 = _download_ok(fx, tmp_path, f"{fx.major}@{fx.major_v1_version}")
    assert v1["Version"] == fx.major_v1_version


@pytest.mark.slow
def test_incompatible(built_fixtures: GoFixtures, tmp_path: Path) -> None:
    fx = built_fixtures
    for version in fx.incompatible_versions:
        info = _download_ok(fx, tmp_path, f"{fx.incompatible}@{version}")
        assert info["Version"] == version
        # go synthesizes the go.mod of a module that has none.
        assert Path(info["GoMod"]).read_text() == f"module {fx.incompatible}\n"
    # Asking for the bare tag resolves to the +incompatible version.
    info = _download_ok(fx, tmp_path / "query", f"{fx.incompatible}@v2.0.0")
    assert info["Version"] == "v2.0.0+incompatible"
    assert info["Query"] == "v2.0.0"


# The errors below are what the proxy classifies as "not found"; their wording is
# pinned so that a go release that rewords them is noticed here first.


@pytest.mark.slow
def test_missing_repository(built_fixtures: GoFixtures, tmp_path: Path) -> None:
    fx = built_fixtures
    error = _download_error(fx, tmp_path, f"{fx.missing}@v1.0.0")
    assert error.startswith(
        f"{fx.missing}@v1.0.0: invalid version: git ls-remote -q --end-of-options "
        f"https://{fx.missing} in "
    )
    assert "does not appear to be a git repository" in error
    latest = _download_error(fx, tmp_path, f"{fx.missing}@latest")
    assert latest.startswith(f"module {fx.missing}: git ls-remote -q ")
    assert "does not appear to be a git repository" in latest


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v9.9.9", "v2.0.0", "no-such-branch"])
def test_unknown_revision(built_fixtures: GoFixtures, tmp_path: Path, version: str) -> None:
    fx = built_fixtures
    error = _download_error(fx, tmp_path, f"{fx.hello}@{version}")
    assert error == f"{fx.hello}@{version}: invalid version: unknown revision {version}"


@pytest.mark.slow
def test_wrong_major_with_an_existing_tag(built_fixtures: GoFixtures, tmp_path: Path) -> None:
    fx = built_fixtures
    error = _download_error(fx, tmp_path, f"{fx.major}@v2.0.0")
    assert error == (
        f"{fx.major}@v2.0.0: invalid version: "
        f'go.mod has post-v2 module path "{fx.major_v2}" at revision v2.0.0'
    )
