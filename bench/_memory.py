"""Scenario ``memory``: N clients pull one big zip at once; how much does the server grow?

The server's resident memory (its process tree, from ``/proc``) is read once idle,
after a warm-up request, then polled every 10 ms while the clients download; the peak
is the larger of the polled maximum and the kernel's high-water mark.  A server that
streams with backpressure grows by a few chunks per client; one that buffers grows by
the zip size per client.  The static server runs the same burst for comparison.
"""

from __future__ import annotations

import trio

from athens_trio import DiskStorage

from ._context import Context, version_paths
from ._fixtures import OWNER, store_version
from ._load import BurstResult, burst
from ._results import ATHENS_TRIO, Row, ScenarioResult, ratio
from ._rss import RssSampler, rss_bytes
from ._server import Server
from ._sizes import MIB

__all__ = ["run_memory"]


async def _measure(
    server: Server, warmup: list[str], paths: list[str], clients: int
) -> tuple[int, int, BurstResult]:
    """(idle bytes, peak bytes, the burst) for one server."""
    await burst(server.url, warmup, clients=1, timeout=60)
    await trio.sleep(0.3)
    idle = rss_bytes(server.pid)
    sampler = RssSampler(server.pid)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.run)
        run = await burst(server.url, paths, clients=clients, timeout=600)
        nursery.cancel_scope.cancel()
    sampler.sample()
    peak = max(sampler.peak, sampler.high_water_mark(), idle)
    return idle, peak, run


async def run_memory(ctx: Context, result: ScenarioResult) -> None:
    sizes = ctx.sizes
    directory = ctx.scenario_dir("memory")
    root = directory / "storage"
    scratch = directory / "scratch"
    scratch.mkdir(exist_ok=True)
    storage = DiskStorage(root)
    big = await store_version(
        storage, f"github.com/{OWNER}/memory-big", "v1.0.0", sizes.memory_zip_size, scratch
    )
    small = await store_version(
        storage, f"github.com/{OWNER}/memory-small", "v1.0.0", 1000, scratch
    )
    warmup = version_paths(small, ("info", "mod", "zip"))
    paths = version_paths(big, ("zip",))
    clients = sizes.memory_clients
    result.reference = f"the server's own idle RSS; {ctx.reference_label} for comparison"
    result.params.update({"clients": clients, "zip_bytes": big.zip_size})
    reference = ctx.reference_name
    measured: dict[str, tuple[int, int, BurstResult]] = {}
    async with ctx.athens_trio(directory, root) as server:
        measured[ATHENS_TRIO] = await _measure(server, warmup, paths, clients)
    async with ctx.reference(directory, root) as server:
        measured[reference] = await _measure(server, warmup, paths, clients)

    for name, (idle, peak, run) in measured.items():
        grown = (peak - idle) / MIB
        result.add(
            Row(
                case=f"{name}: {clients} clients x {big.zip_size / MIB:.0f} MiB",
                metric="RSS MiB",
                values={"idle": idle / MIB, "peak": peak / MIB},
                ratio_name="peak / idle",
                ratio=ratio(peak, idle),
                better="lower",
                details={
                    **run.details(),
                    "grown_mib": round(grown, 2),
                    "grown_mib_per_client": round(grown / clients, 3),
                },
            )
        )
        if run.errors:
            result.notes.append(f"{name}: {run.errors} of {clients} downloads failed")
        if run.bytes < clients * big.zip_size:
            result.notes.append(f"{name}: got {run.bytes} bytes, want {clients * big.zip_size}")
    speed = {
        name: run.bytes / run.seconds / MIB if run.seconds else None
        for name, (_idle, _peak, run) in measured.items()
    }
    result.add(
        Row(
            case=f"{clients} clients at once (httpx clients)",
            metric="MiB/s",
            values=speed,
            ratio_name=f"{ATHENS_TRIO} / {reference}",
            ratio=ratio(speed[ATHENS_TRIO], speed[reference]),
            better="higher",
        )
    )
    per_client = {
        name: (peak - idle) / MIB / clients for name, (idle, peak, _run) in measured.items()
    }
    result.add(
        Row(
            case="growth per client",
            metric="MiB",
            values=dict(per_client),
            details={"meaning": "(peak - idle) / clients"},
        )
    )
