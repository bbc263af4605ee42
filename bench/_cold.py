"""Scenario ``cold``: M versions nobody has yet, bare go vs go through athens-trio.

The limit is go itself fetching from git (``GOPROXY=direct``); through athens-trio the
same command asks the proxy, which runs that same fetch with its own go and stores
the result before answering.  Each repeat starts from an empty client cache and, for
athens-trio, an empty storage; the order alternates between repeats.
"""

from __future__ import annotations

import statistics

import trio

from ._context import Context
from ._fixtures import Tag, make_repo
from ._gocli import go_mod_download
from ._results import ATHENS_TRIO, Row, ScenarioResult, ratio

__all__ = ["run_cold"]

DIRECT = "go direct"


async def run_cold(ctx: Context, result: ScenarioResult) -> None:
    sizes = ctx.sizes
    directory = ctx.scenario_dir("cold")
    modules = [
        await trio.to_thread.run_sync(
            make_repo, ctx.go_env, f"cold-{i:03d}", [Tag("v1.0.0", padding=20_000)]
        )
        for i in range(sizes.cold_versions)
    ]
    targets = [f"{m}@v1.0.0" for m in modules]
    result.reference = (
        "bare `go mod download` from the same local git repositories (GOPROXY=direct)"
    )
    result.params.update({"versions": len(targets), "repeats": sizes.cold_repeats})
    seconds: dict[str, list[float]] = {DIRECT: [], ATHENS_TRIO: []}

    async def direct() -> None:
        run = await go_mod_download(
            ctx.tools.go, ctx.go_env, "direct", workdir=directory / "clients", targets=targets
        )
        seconds[DIRECT].append(run.seconds)

    async def proxied(repeat: int) -> None:
        storage = directory / f"storage-{repeat}"
        async with ctx.athens_trio(directory / f"server-{repeat}", storage) as server:
            run = await go_mod_download(
                ctx.tools.go, ctx.go_env, server.url, workdir=directory / "clients", targets=targets
            )
        if run.zips != len(targets):
            result.notes.append(f"repeat {repeat}: got {run.zips} zips, want {len(targets)}")
        seconds[ATHENS_TRIO].append(run.seconds)

    for repeat in range(sizes.cold_repeats):
        if repeat % 2:
            await proxied(repeat)
            await direct()
        else:
            await direct()
            await proxied(repeat)

    medians: dict[str, float | None] = {k: statistics.median(v) for k, v in seconds.items()}
    result.add(
        Row(
            case=f"{len(targets)} cold versions",
            metric="s",
            values=medians,
            ratio_name=f"{ATHENS_TRIO} / {DIRECT}",
            ratio=ratio(medians[ATHENS_TRIO], medians[DIRECT]),
            better="lower",
            details={"runs_s": seconds, "statistic": "median"},
        )
    )
    overhead = ((medians[ATHENS_TRIO] or 0.0) - (medians[DIRECT] or 0.0)) / len(targets)
    result.add(
        Row(
            case="overhead per version",
            metric="ms",
            values={ATHENS_TRIO: overhead * 1e3},
            details={"meaning": "(athens-trio - go direct) / versions"},
        )
    )
