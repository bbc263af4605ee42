"""A Go toolchain module laid out as a GOPROXY tree, for the toolchain-switching tests.

The tests serve a module needing go :data:`TOOLCHAIN_GO` (newer than the installed go)
and must obtain that toolchain from somewhere hermetic.  This install step downloads
``golang.org/toolchain@v0.0.1-go<TOOLCHAIN_GO>.<GOOS>-<GOARCH>`` once from the Go module
proxy (checked against the checksum database as go always does) into a cache directory,
as the .info/.mod/.zip files of a GOPROXY tree::

    python -m tests.toolchainfixtures build

The ``toolchain_proxy`` fixture returns that tree's directory (a ``file://`` GOPROXY);
where it is missing the fixture builds it itself, which needs the module proxy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import platformdirs
import pytest

from .gofixtures import find_go_binary

__all__ = [
    "TOOLCHAIN_GO",
    "build_toolchain_proxy",
    "toolchain_module_version",
    "toolchain_proxy",
    "toolchain_proxy_dir",
]

#: The go version the fixture toolchain is: newer than the installed go 1.26.
TOOLCHAIN_GO = "1.27.0"
_MODULE = "golang.org/toolchain"


def _cache_dir() -> Path:
    return Path(
        os.environ.get("ATHENS_TRIO_TEST_CACHE") or platformdirs.user_cache_dir("athens-trio-tests")
    )


def _go_env(go: str, *names: str) -> list[str]:
    out = subprocess.run(
        [go, "env", *names], check=True, capture_output=True, text=True, cwd="/", timeout=60
    ).stdout
    return out.split()


def toolchain_module_version(go: str | None = None) -> str:
    """The toolchain module's version for this host, e.g. v0.0.1-go1.27.0.linux-amd64."""
    goos, goarch = _go_env(go or find_go_binary(), "GOHOSTOS", "GOHOSTARCH")
    return f"v0.0.1-go{TOOLCHAIN_GO}.{goos}-{goarch}"


def toolchain_proxy_dir(go: str | None = None) -> Path:
    """The GOPROXY tree's root (present or not)."""
    return _cache_dir() / f"toolchain-proxy-{toolchain_module_version(go)}"


def build_toolchain_proxy(go: str | None = None) -> Path:
    """Download the toolchain module unless it is there already; return the tree's root."""
    go = go or find_go_binary()
    root = toolchain_proxy_dir(go)
    if root.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    version = toolchain_module_version(go)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".toolchain-") as temp:
        env = dict(
            os.environ,
            GOMODCACHE=str(Path(temp) / "mod"),
            GOFLAGS="-modcacherw",
            GOPROXY=os.environ.get("ATHENS_TRIO_TEST_GOPROXY", "https://proxy.golang.org"),
            GOTOOLCHAIN="local",
            GOWORK="off",
        )
        subprocess.run(
            [go, "mod", "download", "-x", f"{_MODULE}@{version}"],
            cwd=temp,
            env=env,
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=1800,
        )
        tree = Path(temp) / "tree"
        source = Path(temp) / "mod" / "cache" / "download" / _MODULE / "@v"
        target = tree / _MODULE / "@v"
        target.mkdir(parents=True)
        for suffix in (".info", ".mod", ".zip"):
            shutil.copyfile(source / f"{version}{suffix}", target / f"{version}{suffix}")
        (target / "list").write_text(version + "\n")
        try:
            os.rename(tree, root)  # concurrent builders: the first rename wins
        except OSError:
            if not root.exists():
                raise
    return root


@pytest.fixture(scope="session")
def toolchain_proxy() -> Path:
    """The toolchain GOPROXY tree (downloaded here if missing: needs the module proxy)."""
    return build_toolchain_proxy()


def _main(argv: Sequence[str]) -> int:
    if list(argv) != ["build"]:
        print("usage: python -m tests.toolchainfixtures build", file=sys.stderr)
        return 2
    print(build_toolchain_proxy())
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
