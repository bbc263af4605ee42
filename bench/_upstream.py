"""Scenario ``upstream``: a dependency graph cold through athens-trio in front of a GOPROXY.

The graph scenario's modules (K dependencies, each at v1.0.0 and v1.1.0), downloaded
once by go itself; its download cache is a GOPROXY tree, served by the static reference
server (nginx, or http.server standing in) as the upstream.  Then ``go mod download`` in
the consumer: straight from that upstream, and cold through athens-trio (empty storage)
whose GOPROXY is that upstream (upstream-proxy mode, GOSUMDB=off: no checksum lookups).
Each repeat starts from an empty client cache and, for athens-trio, an empty storage;
the order alternates between repeats.  Also counted: the zips athens-trio stored against
the zips the client fetched (athens-trio stores a whole version for a ``.mod`` too).
"""

from __future__ import annotations

import os
import shutil
import stat
import statistics
from pathlib import Path

import trio

from ._context import Context
from ._fixtures import write_consumer
from ._gocli import go_mod_download, scratch_home
from ._graph import build_graph
from ._results import ATHENS_TRIO, Row, ScenarioResult, ratio

__all__ = ["run_upstream"]

UPSTREAM = "upstream"


def _count_zips(root: Path) -> int:
    return sum(
        name.endswith(".zip") and not name.startswith(".")
        for _parent, _dirs, files in os.walk(root)
        for name in files
    )


async def _fill_upstream(ctx: Context, consumer: Path, directory: Path) -> Path:
    """Let go download the consumer's graph from git; return its download cache, a
    GOPROXY tree, moved to ``directory/upstream``."""
    home = scratch_home(directory / "seed")
    env = ctx.go_env.client("direct", home)
    done = await trio.run_process(
        [ctx.tools.go, "mod", "download", "all"],
        cwd=consumer,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"seeding the upstream failed:\n{done.stderr.decode()[-3000:]}")
    root = directory / "upstream"

    def move() -> None:
        download = home / "gopath" / "pkg" / "mod" / "cache" / "download"
        for parent, _dirs, files in os.walk(home):
            os.chmod(
                parent, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
            )
            for name in files:
                if name.endswith(".lock"):
                    os.unlink(os.path.join(parent, name))
        shutil.move(download, root)
        shutil.rmtree(home, ignore_errors=True)

    await trio.to_thread.run_sync(move)
    return root


async def run_upstream(ctx: Context, result: ScenarioResult) -> None:
    directory = ctx.scenario_dir("upstream")
    requires = await trio.to_thread.run_sync(
        build_graph, ctx, "upstream", ctx.sizes.graph_dependencies
    )
    consumer = write_consumer(directory / "consumer", requires)
    root = await _fill_upstream(ctx, consumer, directory)
    repeats = ctx.sizes.cold_repeats
    result.reference = f"go mod download straight from the upstream GOPROXY ({ctx.reference_label})"
    result.params.update(
        {"dependencies": len(requires), "upstream_zips": _count_zips(root), "repeats": repeats}
    )
    clients = directory / "clients"
    seconds: dict[str, list[float]] = {UPSTREAM: [], ATHENS_TRIO: []}
    stored: list[int] = []
    fetched: list[int] = []

    async with ctx.reference(directory, root) as upstream:

        async def straight() -> None:
            run = await go_mod_download(
                ctx.tools.go, ctx.go_env, upstream.url, workdir=clients, module=consumer
            )
            seconds[UPSTREAM].append(run.seconds)

        async def through(repeat: int) -> None:
            storage = directory / f"storage-{repeat}"
            server_dir = directory / f"server-{repeat}"
            server_dir.mkdir(parents=True, exist_ok=True)
            async with ctx.athens_trio(
                server_dir, storage, goproxy=f"{upstream.url},direct"
            ) as server:
                run = await go_mod_download(
                    ctx.tools.go, ctx.go_env, server.url, workdir=clients, module=consumer
                )
            seconds[ATHENS_TRIO].append(run.seconds)
            fetched.append(run.zips)
            stored.append(await trio.to_thread.run_sync(_count_zips, storage))
            await trio.to_thread.run_sync(shutil.rmtree, storage)

        for repeat in range(repeats):
            if repeat % 2:
                await through(repeat)
                await straight()
            else:
                await straight()
                await through(repeat)

    medians: dict[str, float | None] = {k: statistics.median(v) for k, v in seconds.items()}
    result.add(
        Row(
            case=f"cold graph ({len(requires)} dependencies, {fetched[0]} zips)",
            metric="s",
            values=medians,
            ratio_name=f"{ATHENS_TRIO} / {UPSTREAM}",
            ratio=ratio(medians[ATHENS_TRIO], medians[UPSTREAM]),
            better="lower",
            details={"runs_s": seconds, "statistic": "median"},
        )
    )
    result.add(
        Row(
            case="zips stored vs zips the client fetched",
            metric="zips",
            values={"stored": statistics.median(stored), "client": statistics.median(fetched)},
            ratio_name="stored / client",
            ratio=ratio(statistics.median(stored), statistics.median(fetched)),
            better="lower",
            details={"stored": stored, "client": fetched},
        )
    )
