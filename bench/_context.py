"""What every scenario is handed: sizes, tools, a scratch directory and the git fixtures."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ._fixtures import GoEnv, StoredVersion
from ._load import LoadResult, load
from ._results import ATHENS_TRIO
from ._server import Server, run_athens_trio, run_reference
from ._sizes import Sizes
from ._tools import Tools

__all__ = ["Context", "version_paths"]


def version_paths(version: StoredVersion, suffixes: tuple[str, ...]) -> list[str]:
    """URL paths of a stored version's files (bench modules need no case escaping)."""
    return [f"/{version.module}/@v/{version.version}.{suffix}" for suffix in suffixes]


@dataclass
class Context:
    sizes: Sizes
    quick: bool
    tools: Tools
    workdir: Path
    go_env: GoEnv
    athens_binary: str | None = None

    def scenario_dir(self, name: str) -> Path:
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    @property
    def reference_name(self) -> str:
        """The static server's target name: ``nginx``, or ``http.server`` standing in."""
        return "nginx" if self.tools.nginx else "http.server"

    @property
    def reference_label(self) -> str:
        if self.tools.nginx:
            return "nginx (1 worker, sendfile, no access log) on the same directory"
        return "Python http.server on the same directory (STAND-IN: nginx missing)"

    @property
    def load_label(self) -> str:
        if self.tools.wrk:
            return "wrk (1 thread)"
        return "trio + httpx generator (STAND-IN: wrk missing)"

    def athens_trio(
        self,
        workdir: Path,
        storage: Path,
        go_binary: str | None = None,
        goproxy: str = "direct",
        env: Mapping[str, str] | None = None,
        name: str = ATHENS_TRIO,
    ) -> contextlib.AbstractAsyncContextManager[Server]:
        return run_athens_trio(
            workdir,
            storage,
            self.go_env,
            go_binary or self.tools.go,
            self.sizes,
            goproxy,
            env,
            name,
        )

    def reference(
        self, workdir: Path, root: Path
    ) -> contextlib.AbstractAsyncContextManager[Server]:
        return run_reference(self.tools.nginx, workdir, root)

    async def load(
        self,
        server: Server,
        paths: list[str],
        *,
        concurrency: int,
        workdir: Path,
        max_requests: int | None = None,
    ) -> LoadResult:
        return await load(
            server.url,
            paths,
            concurrency=concurrency,
            max_requests=max_requests or self.sizes.load_requests,
            max_seconds=self.sizes.load_seconds,
            wrk=self.tools.wrk,
            workdir=workdir,
        )
