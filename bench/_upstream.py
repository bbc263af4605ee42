"""Scenario ``upstream``: a dependency graph cold through athens-trio in front of a GOPROXY.

The graph scenario's modules (K dependencies, each at v1.0.0 and v1.1.0), downloaded
once by go itself; its download cache is a GOPROXY tree, served by the static reference
server (nginx, or http.server standing in) as the upstream.  Then ``go mod download`` in
the consumer: straight from that upstream, and cold through athens-trio (empty storage)
whose GOPROXY is that upstream (upstream-proxy mode, GOSUMDB=off: no checksum lookups).
Each repeat starts from an empty client cache and, for athens-trio, an empty storage;
the order alternates between repeats.  Measured twice: with the upstream on loopback,
and with the upstream a round trip away (:data:`UPSTREAM_ROUND_TRIP`, added by a
delaying relay in front of it, :mod:`bench._latency`), where the client and
athens-trio, which sits next to it, both reach the upstream through the relay.  Also
counted: the zips athens-trio stored against the zips the client fetched.
"""

from __future__ import annotations

import os
import shutil
import stat
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ._context import Context
from ._fixtures import write_consumer
from ._gocli import go_mod_download, scratch_home
from ._graph import build_graph
from ._latency import delayed_relay
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


#: The round trip the second measurement adds between the client (or athens-trio) and
#: the upstream, as a remote proxy has; athens-trio sits next to the client.
UPSTREAM_ROUND_TRIP = 0.03


@dataclass
class _Runs:
    seconds: dict[str, list[float]] = field(default_factory=lambda: {UPSTREAM: [], ATHENS_TRIO: []})
    stored: list[int] = field(default_factory=list)
    fetched: list[int] = field(default_factory=list)

    def medians(self) -> dict[str, float | None]:
        return {k: statistics.median(v) for k, v in self.seconds.items()}


async def _measure(
    ctx: Context, directory: Path, consumer: Path, upstream_url: str, label: str
) -> _Runs:
    """``go mod download`` straight from ``upstream_url`` and cold through athens-trio in
    front of it, alternating, ``cold_repeats`` times each."""
    clients = directory / "clients"
    runs = _Runs()

    async def straight() -> None:
        run = await go_mod_download(
            ctx.tools.go, ctx.go_env, upstream_url, workdir=clients, module=consumer
        )
        runs.seconds[UPSTREAM].append(run.seconds)

    async def through(repeat: int) -> None:
        storage = directory / f"storage-{label}-{repeat}"
        server_dir = directory / f"server-{label}-{repeat}"
        server_dir.mkdir(parents=True, exist_ok=True)
        async with ctx.athens_trio(server_dir, storage, goproxy=f"{upstream_url},direct") as server:
            run = await go_mod_download(
                ctx.tools.go, ctx.go_env, server.url, workdir=clients, module=consumer
            )
        runs.seconds[ATHENS_TRIO].append(run.seconds)
        runs.fetched.append(run.zips)
        runs.stored.append(await trio.to_thread.run_sync(_count_zips, storage))
        await trio.to_thread.run_sync(shutil.rmtree, storage)

    for repeat in range(ctx.sizes.cold_repeats):
        if repeat % 2:
            await through(repeat)
            await straight()
        else:
            await straight()
            await through(repeat)
    return runs


def _time_row(case: str, runs: _Runs) -> Row:
    medians = runs.medians()
    return Row(
        case=case,
        metric="s",
        values=medians,
        ratio_name=f"{ATHENS_TRIO} / {UPSTREAM}",
        ratio=ratio(medians[ATHENS_TRIO], medians[UPSTREAM]),
        better="lower",
        details={"runs_s": runs.seconds, "statistic": "median"},
    )


async def run_upstream(ctx: Context, result: ScenarioResult) -> None:
    directory = ctx.scenario_dir("upstream")
    requires = await trio.to_thread.run_sync(
        build_graph, ctx, "upstream", ctx.sizes.graph_dependencies
    )
    consumer = write_consumer(directory / "consumer", requires)
    root = await _fill_upstream(ctx, consumer, directory)
    result.reference = f"go mod download straight from the upstream GOPROXY ({ctx.reference_label})"
    result.params.update(
        {
            "dependencies": len(requires),
            "upstream_zips": _count_zips(root),
            "repeats": ctx.sizes.cold_repeats,
            "upstream_round_trip_s": UPSTREAM_ROUND_TRIP,
        }
    )
    async with ctx.reference(directory, root) as upstream:
        near = await _measure(ctx, directory, consumer, upstream.url, "near")
        async with delayed_relay(upstream.url, UPSTREAM_ROUND_TRIP) as far_url:
            far = await _measure(ctx, directory, consumer, far_url, "far")

    zips = f"{len(requires)} dependencies, {near.fetched[0]} zips"
    result.add(_time_row(f"cold graph ({zips})", near))
    rtt = f"{UPSTREAM_ROUND_TRIP * 1000:g} ms"
    result.add(_time_row(f"cold graph, upstream {rtt} away ({zips})", far))
    stored, fetched = near.stored + far.stored, near.fetched + far.fetched
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
