"""Scenario ``athens``: athens-trio against Athens itself, where a built binary is given.

Athens' disk storage has its own layout (``<root>/<module>/<version>/go.mod``,
``source.zip`` and ``<version>.info``), so the same stored files are hard-linked into
it: both servers serve the very same bytes.  The cached load (``.info``/``.mod`` and a
1 MiB zip) and the graph (cold, then warm) run on both; ratios are athens-trio / Athens.
Without ``--athens-binary`` the scenario is recorded as skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from athens_trio import DiskStorage

from ._cached import clients_label, size_label
from ._context import Context, version_paths
from ._fixtures import OWNER, store_version, write_consumer
from ._gocli import go_mod_download
from ._graph import build_graph
from ._results import ATHENS_TRIO, Row, ScenarioResult, ratio
from ._server import run_athens_go
from ._sizes import KIB, MIB

__all__ = ["athens_layout", "run_athens"]

ATHENS = "athens"


def athens_layout(goproxy_root: Path, athens_root: Path) -> int:
    """Hard-link every stored version of a GOPROXY tree into Athens' disk layout;
    return how many versions.  (Bench modules are lower-case: no path escaping.)"""
    count = 0
    for parent, _dirs, files in os.walk(goproxy_root):
        here = Path(parent)
        if here.name != "@v":
            continue
        module = here.parent.relative_to(goproxy_root)
        for name in files:
            if not name.endswith(".info") or name.startswith("."):
                continue
            version = name.removesuffix(".info")
            target = athens_root / module / version
            target.mkdir(parents=True, exist_ok=True)
            os.link(here / name, target / f"{version}.info")
            os.link(here / f"{version}.mod", target / "go.mod")
            os.link(here / f"{version}.zip", target / "source.zip")
            count += 1
    return count


async def run_athens(ctx: Context, result: ScenarioResult) -> None:
    if not ctx.athens_binary:
        result.status = "skipped: no --athens-binary"
        result.reference = "Athens (Go), not given"
        return
    binary = ctx.athens_binary
    sizes = ctx.sizes
    directory = ctx.scenario_dir("athens")
    result.reference = f"Athens at {binary} on the same stored files; load: {ctx.load_label}"
    result.params.update({"concurrency": list(sizes.cached_concurrency)})

    # Cached: the same stored files in both layouts.
    root = directory / "storage"
    athens_root = directory / "athens-storage"
    athens_root.mkdir(parents=True, exist_ok=True)
    scratch = directory / "scratch"
    scratch.mkdir(exist_ok=True)
    storage = DiskStorage(root)
    small = [
        await store_version(
            storage, f"github.com/{OWNER}/athens-small", f"v1.0.{i}", 2 * KIB, scratch
        )
        for i in range(sizes.cached_versions)
    ]
    big = await store_version(storage, f"github.com/{OWNER}/athens-zip", "v1.0.0", MIB, scratch)
    await trio.to_thread.run_sync(athens_layout, root, athens_root)
    mixes = [
        (".info+.mod", "req/s", [p for v in small for p in version_paths(v, ("info", "mod"))]),
        (f"zip {size_label(MIB)}", "MiB/s", version_paths(big, ("zip",))),
    ]
    go_binary = ctx.tools.go
    async with (
        ctx.athens_trio(directory / "trio", root) as trio_server,
        run_athens_go(
            binary, directory / "go", athens_root, ctx.go_env, go_binary, sizes
        ) as athens_server,
    ):
        servers = [trio_server, athens_server]
        for server in servers:
            await ctx.load(server, mixes[0][2], concurrency=1, workdir=directory, max_requests=50)
        flip = False
        for label, metric, paths in mixes:
            for concurrency in sizes.cached_concurrency:
                values: dict[str, float | None] = {}
                details = {}
                for server in reversed(servers) if flip else servers:
                    run = await ctx.load(server, paths, concurrency=concurrency, workdir=directory)
                    values[server.name] = (
                        run.requests_per_second if metric == "req/s" else run.megabytes_per_second
                    )
                    details[server.name] = run.details()
                flip = not flip
                result.add(
                    Row(
                        case=f"{label}, {clients_label(concurrency)}",
                        metric=metric,
                        values={ATHENS_TRIO: values[ATHENS_TRIO], ATHENS: values[ATHENS]},
                        ratio_name=f"{ATHENS_TRIO} / {ATHENS}",
                        ratio=ratio(values[ATHENS_TRIO], values[ATHENS]),
                        better="higher",
                        details=details,
                    )
                )

    # Graph: cold (each on empty storage) then warm, through each proxy.
    requires = await trio.to_thread.run_sync(
        build_graph, ctx, "athens-graph", sizes.graph_dependencies
    )
    consumer = write_consumer(directory / "consumer", requires)
    clients = directory / "clients"
    timings: dict[str, dict[str, float | None]] = {"cold": {}, "warm": {}}
    graph_trio = directory / "graph-trio"
    graph_athens = directory / "graph-athens"
    graph_athens.mkdir()
    async with ctx.athens_trio(directory / "graph-trio-server", graph_trio) as server:
        for phase in ("cold", "warm"):
            download = await go_mod_download(
                go_binary, ctx.go_env, server.url, workdir=clients, module=consumer
            )
            timings[phase][ATHENS_TRIO] = download.seconds
    async with run_athens_go(
        binary, directory / "graph-go", graph_athens, ctx.go_env, go_binary, sizes
    ) as server:
        for phase in ("cold", "warm"):
            download = await go_mod_download(
                go_binary, ctx.go_env, server.url, workdir=clients, module=consumer
            )
            timings[phase][ATHENS] = download.seconds
    for phase, values in timings.items():
        result.add(
            Row(
                case=f"graph {phase}, {len(requires)} dependencies",
                metric="s",
                values=values,
                ratio_name=f"{ATHENS_TRIO} / {ATHENS}",
                ratio=ratio(values.get(ATHENS_TRIO), values.get(ATHENS)),
                better="lower",
            )
        )
