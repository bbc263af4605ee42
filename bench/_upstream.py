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
athens-trio, which sits next to it, both reach the upstream through the relay.  Where
``--athens-binary`` names a built Athens, it runs cold in front of the same upstream
too (its GoBinaryEnvVars' GOPROXY), and a row per measurement gives athens-trio / Athens.
Also counted: the zips athens-trio stored against the zips the client fetched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ._athens import ATHENS
from ._context import Context
from ._fixtures import Tag, make_repo, write_consumer
from ._gocli import go_mod_download, scratch_home
from ._graph import build_graph
from ._latency import delayed_relay
from ._results import ATHENS_TRIO, Row, ScenarioResult, ratio
from ._server import Server, run_athens_go

__all__ = ["run_upstream"]

UPSTREAM = "upstream"
PREFETCH_ON = f"{ATHENS_TRIO} prefetch"
PREFETCH_ONE_WORKER = f"{ATHENS_TRIO} prefetch, 1 worker"
PREFETCH_OFF = f"{ATHENS_TRIO} no prefetch"
#: athens-trio at its defaults in front of an upstream: a process per core (``Workers``
#: 0), as a user runs it; the cached scenarios pin one, as nginx runs one worker.
_DEFAULT_WORKERS = {"ATHENS_WORKERS": "0"}


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
    seconds: dict[str, list[float]] = field(default_factory=dict)
    stored: list[int] = field(default_factory=list)
    fetched: list[int] = field(default_factory=list)
    logs: dict[str, list[Path]] = field(default_factory=dict)

    def medians(self) -> dict[str, float | None]:
        return {k: statistics.median(v) for k, v in self.seconds.items()}


@dataclass(frozen=True)
class _Arm:
    """A proxy measured cold in front of the upstream: ``start(workdir, storage,
    upstream_url)`` runs it; ``ours`` says whether its stored zips are counted."""

    start: Callable[[Path, Path, str], contextlib.AbstractAsyncContextManager[Server]]
    ours: bool = True


def _trio_arm(ctx: Context, env: dict[str, str]) -> _Arm:
    """athens-trio with ``env`` (ATHENS_* settings), its upstream that GOPROXY."""
    return _Arm(
        lambda workdir, storage, url: ctx.athens_trio(
            workdir, storage, goproxy=f"{url},direct", env=env
        )
    )


def _athens_arm(ctx: Context, binary: str) -> _Arm:
    """Athens (Go) with its GoBinaryEnvVars' GOPROXY the upstream: its go fetches each
    version whole from there (Athens' own download protocol)."""
    return _Arm(
        lambda workdir, storage, url: run_athens_go(
            binary, workdir, storage, ctx.go_env, ctx.tools.go, ctx.sizes, goproxy=f"{url},direct"
        ),
        ours=False,
    )


def _plain_arms(ctx: Context) -> dict[str, _Arm]:
    """athens-trio at its defaults, and Athens where ``--athens-binary`` names one."""
    arms = {ATHENS_TRIO: _trio_arm(ctx, _DEFAULT_WORKERS)}
    if ctx.athens_binary:
        arms[ATHENS] = _athens_arm(ctx, ctx.athens_binary)
    return arms


async def _measure(
    ctx: Context,
    directory: Path,
    consumer: Path,
    upstream_url: str,
    label: str,
    arms: dict[str, _Arm],
) -> _Runs:
    """``go mod download`` straight from ``upstream_url`` and cold through each
    proxy arm in front of it, in rotating order, ``cold_repeats`` times each."""
    clients = directory / "clients"
    runs = _Runs(seconds={UPSTREAM: [], **{name: [] for name in arms}})

    async def straight(repeat: int) -> None:
        run = await go_mod_download(
            ctx.tools.go, ctx.go_env, upstream_url, workdir=clients, module=consumer
        )
        runs.seconds[UPSTREAM].append(run.seconds)

    def through(name: str) -> Callable[[int], Awaitable[None]]:
        async def arm(repeat: int) -> None:
            tag = f"{label}-{len(runs.seconds[name])}-{name.replace(' ', '-')}"
            storage = directory / f"storage-{tag}"
            storage.mkdir(parents=True, exist_ok=True)
            server_dir = directory / f"server-{tag}"
            server_dir.mkdir(parents=True, exist_ok=True)
            async with arms[name].start(server_dir, storage, upstream_url) as server:
                run = await go_mod_download(
                    ctx.tools.go, ctx.go_env, server.url, workdir=clients, module=consumer
                )
            runs.seconds[name].append(run.seconds)
            if arms[name].ours:
                runs.fetched.append(run.zips)
                runs.stored.append(await trio.to_thread.run_sync(_count_zips, storage))
            runs.logs.setdefault(name, []).append(server.log)
            await trio.to_thread.run_sync(shutil.rmtree, storage)

        return arm

    order = [straight, *(through(name) for name in arms)]
    for repeat in range(ctx.sizes.cold_repeats):
        shift = repeat % len(order)
        for step in order[shift:] + order[:shift]:
            await step(repeat)
    return runs


def _time_row(case: str, runs: _Runs, target: str = ATHENS_TRIO, against: str = UPSTREAM) -> Row:
    medians = runs.medians()
    return Row(
        case=case,
        metric="s",
        values=medians,
        ratio_name=f"{target} / {against}",
        ratio=ratio(medians[target], medians[against]),
        better="lower",
        details={"runs_s": runs.seconds, "statistic": "median"},
    )


def _time_rows(case: str, runs: _Runs) -> list[Row]:
    """athens-trio against the upstream, and against Athens where it ran."""
    rows = [_time_row(case, runs)]
    if ATHENS in runs.seconds:
        rows.append(_time_row(f"{case}, against Athens", runs, against=ATHENS))
    return rows


def build_tree(ctx: Context, prefix: str, fanout: int) -> list[str]:
    """A root module requiring ``fanout`` modules, each requiring ``fanout`` more, all at
    go 1.16 (so go reads every go.mod of the tree, a level at a time); return the
    consumer's one require line (the root)."""

    def name(*path: int) -> str:
        return f"{prefix}-tree" + "".join(f"-{i}" for i in path)

    def module(*path: int) -> str:
        return f"github.com/athens-bench/{name(*path)}"

    def make(*path: int, requires: tuple[str, ...] = ()) -> None:
        tags = [Tag("v1.0.0", requires=requires, padding=4_000, go="1.16")]
        make_repo(ctx.go_env, name(*path), tags)

    for i in range(fanout):
        for j in range(fanout):
            make(i, j)
        make(i, requires=tuple(f"{module(i, j)} v1.0.0" for j in range(fanout)))
    make(requires=tuple(f"{module(i)} v1.0.0" for i in range(fanout)))
    return [f"{module()} v1.0.0"]


_PREFETCH_LINE = re.compile(r"prefetch: (\d+) go\.mod parts prefetched, (\d+) of them asked")


def _prefetch_hits(logs: list[Path]) -> tuple[int, int]:
    """Prefetched and then asked for, summed over the servers' logs (their last line)."""
    prefetched = asked = 0
    for log in logs:
        for found in _PREFETCH_LINE.finditer(log.read_text(errors="replace")):
            prefetched += int(found[1])
            asked += int(found[2])
    return prefetched, asked


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
    tree_requires = await trio.to_thread.run_sync(
        build_tree, ctx, "upstream", ctx.sizes.prefetch_fanout
    )
    tree_consumer = write_consumer(directory / "tree-consumer", tree_requires)
    tree_root = await _fill_upstream(ctx, tree_consumer, directory / "tree")
    prefetch_arms = {
        PREFETCH_ON: _trio_arm(ctx, {**_DEFAULT_WORKERS, "ATHENS_PREFETCH_WORKERS": "8"}),
        # Each worker counts the prefetches a client then asked *it* for: the hit ratio
        # is read from one process, which sees every request.
        PREFETCH_ONE_WORKER: _trio_arm(ctx, {"ATHENS_PREFETCH_WORKERS": "8"}),
        PREFETCH_OFF: _trio_arm(ctx, {**_DEFAULT_WORKERS, "ATHENS_PREFETCH_WORKERS": "0"}),
    }
    async with (
        ctx.reference(directory, root) as upstream,
        ctx.reference(directory / "tree", tree_root) as tree_upstream,
    ):
        plain = _plain_arms(ctx)
        near = await _measure(ctx, directory, consumer, upstream.url, "near", plain)
        async with delayed_relay(upstream.url, UPSTREAM_ROUND_TRIP) as far_url:
            far = await _measure(ctx, directory, consumer, far_url, "far", plain)
        async with delayed_relay(tree_upstream.url, UPSTREAM_ROUND_TRIP) as tree_url:
            tree = await _measure(
                ctx, directory / "tree", tree_consumer, tree_url, "tree", prefetch_arms
            )

    zips = f"{len(requires)} dependencies, {near.fetched[0]} zips"
    for row in _time_rows(f"cold graph ({zips})", near):
        result.add(row)
    rtt = f"{UPSTREAM_ROUND_TRIP * 1000:g} ms"
    for row in _time_rows(f"cold graph, upstream {rtt} away ({zips})", far):
        result.add(row)
    modules = 1 + ctx.sizes.prefetch_fanout * (1 + ctx.sizes.prefetch_fanout)
    result.add(
        _time_row(
            f"cold tree of {modules} go 1.16 modules, upstream {rtt} away, prefetch on",
            tree,
            PREFETCH_ON,
        )
    )
    prefetched, asked = _prefetch_hits(tree.logs.get(PREFETCH_ONE_WORKER, []))
    result.add(
        Row(
            case="prefetched go.mod parts a client then asked for (1 worker)",
            metric="go.mod",
            values={"prefetched": prefetched, "asked": asked},
            ratio_name="asked / prefetched",
            ratio=ratio(asked, prefetched),
            better="higher",
        )
    )
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
