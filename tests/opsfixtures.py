"""Helpers of the operators' tools tests (test_warm, test_bundle, test_gc, test_ui)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from athens_trio import Config, DiskStorage
from athens_trio.ops import LAST_SERVED_DIR

from .helpers import tree

__all__ = ["clean_athens_env", "stored_parts", "stored_tree", "write_toml"]


async def stored_parts(config: Config, module: str, version: str) -> tuple[bool, bool]:
    """(go.mod part stored, zip stored) of a version in config's disk storage."""
    storage = DiskStorage(config.disk_root)
    versions = await storage.list_versions(module)
    return version in versions, await storage.exists(module, version)


def write_toml(config: Config, path: Path) -> Path:
    """The athens.toml of ``config``'s go, GoGetDir and disk storage (for the CLI)."""
    env_vars = ", ".join(f'"{entry}"' for entry in config.go_binary_env_vars)
    lines = [
        f'GoBinary = "{config.go_binary}"',
        f"GoBinaryEnvVars = [{env_vars}]",
        f'GoGetDir = "{config.go_get_dir}"',
        "[Storage.Disk]",
        f'RootPath = "{config.disk_root}"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def clean_athens_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ATHENS_* variable from the outside reaches the CLI under test."""
    for name in list(os.environ):
        if name.startswith("ATHENS_"):
            monkeypatch.delenv(name)


def stored_tree(root: Path) -> dict[str, int]:
    """:func:`~tests.helpers.tree` of a disk storage without the record of when each
    version was last served (``.last-served/``: rewritten by design as versions are
    served; not storage)."""
    return {
        name: size
        for name, size in tree(root).items()
        if not name.startswith(LAST_SERVED_DIR + "/")
    }
