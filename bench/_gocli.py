"""The go client side: time one ``go mod download`` with a fresh module cache."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from ._fixtures import GoEnv

__all__ = ["GoDownload", "go_mod_download", "scratch_home"]


@dataclass
class GoDownload:
    seconds: float
    mods: int
    """``.mod`` files in the client's download cache: module versions go resolved."""
    zips: int
    """``.zip`` files: module versions go downloaded whole."""


def _count(home: Path) -> tuple[int, int]:
    mods = zips = 0
    for _parent, _dirs, files in os.walk(home / "gopath" / "pkg" / "mod" / "cache" / "download"):
        mods += sum(name.endswith(".mod") for name in files)
        zips += sum(name.endswith(".zip") for name in files)
    return mods, zips


def _remove(home: Path) -> None:
    for parent, _dirs, _files in os.walk(home):
        os.chmod(parent, stat.S_IRWXU)
    shutil.rmtree(home, ignore_errors=True)


def scratch_home(workdir: Path) -> Path:
    """A fresh directory for one client run's GOPATH, module cache and build cache."""
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="goclient-", dir=workdir))


async def go_mod_download(
    go: str,
    go_env: GoEnv,
    proxy: str,
    *,
    workdir: Path,
    targets: Sequence[str] = (),
    module: Path | None = None,
) -> GoDownload:
    """Time ``go mod download [targets]`` with ``GOPROXY=proxy`` and an empty cache.

    With ``module`` (a main module's directory), go runs in a fresh copy of it, so
    without ``targets`` it downloads that module's dependencies.
    Raises RuntimeError, with go's output, if go fails.
    """
    home = scratch_home(workdir)
    try:
        env = go_env.client(proxy, home)
        directory = home
        if module is not None:
            directory = home / "main"
            await trio.to_thread.run_sync(shutil.copytree, module, directory)
        started = trio.current_time()
        done = await trio.run_process(
            [go, "mod", "download", *targets],
            cwd=directory,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        seconds = trio.current_time() - started
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(
                f"go mod download (GOPROXY={proxy}) exited with {done.returncode}:\n"
                f"{output[-3000:]}"
            )
        mods, zips = await trio.to_thread.run_sync(_count, home)
        return GoDownload(seconds=seconds, mods=mods, zips=zips)
    finally:
        await trio.to_thread.run_sync(_remove, home)
