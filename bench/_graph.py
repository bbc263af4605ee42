"""Scenario ``graph``: a consumer module's whole dependency graph through the proxy.

K dependency modules, each tagged v1.0.0 and v1.1.0, where ``dep<i>@v1.1.0`` requires
``dep<i+1>@v1.0.0``; the consumer requires every ``dep<i>@v1.1.0``.  ``go mod download``
in the consumer runs: cold through athens-trio (empty storage: every version fetched
from git), warm through athens-trio (a fresh client cache on the now full storage), and
through ``GOPROXY=file://`` on that same storage, the limit of any proxy.
Bare ``GOPROXY=direct`` is timed too, for scale.
"""

from __future__ import annotations

import statistics

import trio

from ._context import Context
from ._fixtures import Tag, make_repo, write_consumer
from ._gocli import GoDownload, go_mod_download
from ._results import ATHENS_TRIO, Row, ScenarioResult, ratio

__all__ = ["build_graph", "run_graph"]

FILE = "file://"
DIRECT = "go direct"


def build_graph(ctx: Context, prefix: str, count: int) -> list[str]:
    """Make the dependency repositories; return the consumer's require lines."""
    names = [f"{prefix}-dep{i:03d}" for i in range(count)]
    modules = [f"github.com/athens-bench/{name}" for name in names]
    for i, name in enumerate(names):
        after = (f"{modules[i + 1]} v1.0.0",) if i + 1 < count else ()
        make_repo(
            ctx.go_env,
            name,
            [Tag("v1.0.0", padding=4_000), Tag("v1.1.0", requires=after, padding=4_000)],
        )
    return [f"{m} v1.1.0" for m in modules]


async def run_graph(ctx: Context, result: ScenarioResult) -> None:
    directory = ctx.scenario_dir("graph")
    requires = await trio.to_thread.run_sync(
        build_graph, ctx, "graph", ctx.sizes.graph_dependencies
    )
    consumer = write_consumer(directory / "consumer", requires)
    storage = directory / "storage"
    repeats = ctx.sizes.cold_repeats
    result.reference = "GOPROXY=file:// on the very storage athens-trio filled (the limit)"
    result.params.update({"dependencies": len(requires), "warm_repeats": repeats})
    clients = directory / "clients"

    async def download(proxy: str) -> GoDownload:
        return await go_mod_download(
            ctx.tools.go, ctx.go_env, proxy, workdir=clients, module=consumer
        )

    warm: list[GoDownload] = []
    files: list[GoDownload] = []
    static: list[GoDownload] = []
    async with ctx.athens_trio(directory, storage) as server:
        cold = await download(server.url)
        # The static server on the same tree: the floor of any proxy go talks HTTP to.
        async with ctx.reference(directory / "static", storage) as reference:
            for repeat in range(repeats):
                order = [
                    (warm, server.url),
                    (files, storage.resolve().as_uri()),
                    (static, reference.url),
                ]
                shift = repeat % len(order)
                for runs, proxy in order[shift:] + order[:shift]:
                    runs.append(await download(proxy))
            static_label = reference.name
    direct = await download("direct")

    warm_s = statistics.median(run.seconds for run in warm)
    file_s = statistics.median(run.seconds for run in files)
    static_s = statistics.median(run.seconds for run in static)
    counts = {"mods": cold.mods, "zips": cold.zips}
    result.params["versions_resolved"] = counts
    result.add(
        Row(
            case=f"cold ({cold.mods} versions, {cold.zips} zips)",
            metric="s",
            values={ATHENS_TRIO: cold.seconds, FILE: file_s, DIRECT: direct.seconds},
            ratio_name=f"{ATHENS_TRIO} cold / {FILE}",
            ratio=ratio(cold.seconds, file_s),
            better="lower",
        )
    )
    result.add(
        Row(
            case="warm",
            metric="s",
            values={ATHENS_TRIO: warm_s, FILE: file_s},
            ratio_name=f"{ATHENS_TRIO} warm / {FILE}",
            ratio=ratio(warm_s, file_s),
            better="lower",
            details={
                "warm_runs_s": [run.seconds for run in warm],
                "file_runs_s": [run.seconds for run in files],
                "statistic": "median",
            },
        )
    )
    result.add(
        Row(
            case=f"warm, {static_label} on the same tree",
            metric="s",
            values={static_label: static_s, FILE: file_s},
            ratio_name=f"{static_label} / {FILE}",
            ratio=ratio(static_s, file_s),
            better="lower",
            details={
                "meaning": "the HTTP floor: a static server answering go from the same files",
                "runs_s": [run.seconds for run in static],
            },
        )
    )
    result.add(
        Row(
            case="cold vs bare go",
            metric="s",
            values={ATHENS_TRIO: cold.seconds, DIRECT: direct.seconds},
            ratio_name=f"{ATHENS_TRIO} cold / {DIRECT}",
            ratio=ratio(cold.seconds, direct.seconds),
            better="lower",
        )
    )
    if warm and (warm[0].zips, files[0].zips) != (cold.zips, cold.zips):
        result.notes.append(
            f"zips downloaded differ: cold {cold.zips}, warm {warm[0].zips}, file {files[0].zips}"
        )
