"""Scenario ``cached``: a pre-filled storage under load, athens-trio vs a static server.

Storage holds N small versions (their ``.info`` and ``.mod`` make the request mix)
and one version per zip size.  Both servers serve the very same directory at once;
each case runs on both, back to back, alternating who goes first, so drift hits both.
Then ``go mod download`` of some of the small versions through athens-trio, through
the static server, and through ``GOPROXY=file://`` on the same directory.
"""

from __future__ import annotations

from athens_trio import DiskStorage

from ._context import Context, version_paths
from ._fixtures import OWNER, StoredVersion, store_version
from ._gocli import go_mod_download
from ._load import LoadResult
from ._results import ATHENS_TRIO, Row, ScenarioResult, ratio
from ._server import Server
from ._sizes import KIB, MIB

__all__ = ["clients_label", "run_cached", "size_label"]


def clients_label(count: int) -> str:
    return f"{count} client{'s' if count != 1 else ''}"


def size_label(size: int) -> str:
    if size >= MIB:
        return f"{size // MIB} MiB"
    return f"{size // KIB} KiB"


def _figure(run: LoadResult, metric: str) -> float:
    return run.requests_per_second if metric == "req/s" else run.megabytes_per_second


async def _measure(
    ctx: Context,
    servers: list[Server],
    paths: list[str],
    concurrency: int,
    flip: bool,
) -> dict[str, LoadResult]:
    order = list(reversed(servers)) if flip else servers
    results: dict[str, LoadResult] = {}
    for server in order:
        results[server.name] = await ctx.load(
            server, paths, concurrency=concurrency, workdir=ctx.scenario_dir("cached")
        )
    return results


async def run_cached(ctx: Context, result: ScenarioResult) -> None:
    sizes = ctx.sizes
    directory = ctx.scenario_dir("cached")
    root = directory / "storage"
    scratch = directory / "scratch"
    scratch.mkdir(exist_ok=True)
    storage = DiskStorage(root)
    result.reference = f"{ctx.reference_label}; load: {ctx.load_label}"
    result.params.update(
        {
            "versions": sizes.cached_versions,
            "zip_sizes": list(sizes.cached_zip_sizes),
            "concurrency": list(sizes.cached_concurrency),
            "max_requests_per_run": sizes.load_requests,
            "max_seconds_per_run": sizes.load_seconds,
        }
    )

    small_module = f"github.com/{OWNER}/cached-small"
    small: list[StoredVersion] = [
        await store_version(storage, small_module, f"v1.0.{i}", 2 * KIB, scratch)
        for i in range(sizes.cached_versions)
    ]
    zips = {
        size: await store_version(
            storage,
            f"github.com/{OWNER}/cached-zip-{size_label(size).replace(' ', '').lower()}",
            "v1.0.0",
            size,
            scratch,
        )
        for size in sizes.cached_zip_sizes
    }
    mixes: list[tuple[str, str, list[str]]] = [
        (".info+.mod", "req/s", [p for v in small for p in version_paths(v, ("info", "mod"))])
    ]
    mixes += [
        (f"zip {size_label(s)}", "MiB/s", version_paths(v, ("zip",))) for s, v in zips.items()
    ]

    reference = ctx.reference_name
    async with (
        ctx.athens_trio(directory, root) as trio_server,
        ctx.reference(directory, root) as ref_server,
    ):
        servers = [trio_server, ref_server]
        for server in servers:  # warm both: imports, page cache, first connections
            await ctx.load(server, mixes[0][2], concurrency=1, workdir=directory, max_requests=50)
        flip = False
        for label, metric, paths in mixes:
            for concurrency in sizes.cached_concurrency:
                runs = await _measure(ctx, servers, paths, concurrency, flip)
                flip = not flip
                values: dict[str, float | None] = {
                    ATHENS_TRIO: _figure(runs[ATHENS_TRIO], metric),
                    reference: _figure(runs[ref_server.name], metric),
                }
                result.add(
                    Row(
                        case=f"{label}, {clients_label(concurrency)}",
                        metric=metric,
                        values=values,
                        ratio_name=f"{ATHENS_TRIO} / {reference}",
                        ratio=ratio(values[ATHENS_TRIO], values[reference]),
                        better="higher",
                        details={name: run.details() for name, run in runs.items()},
                    )
                )
                for name, run in runs.items():
                    if run.errors:
                        result.notes.append(
                            f"{name}: {run.errors} errors in {label} at {concurrency} clients"
                        )

        # The go-client variant: the same files through go's own proxy client.
        targets = [f"{v.module}@{v.version}" for v in small[: sizes.go_client_versions]]
        proxies = {
            ATHENS_TRIO: trio_server.url,
            reference: ref_server.url,
            "file://": root.resolve().as_uri(),
        }
        timings: dict[str, float | None] = {}
        for name, proxy in proxies.items():
            download = await go_mod_download(
                ctx.tools.go, ctx.go_env, proxy, workdir=directory / "clients", targets=targets
            )
            timings[name] = download.seconds
        result.add(
            Row(
                case=f"go mod download, {len(targets)} versions",
                metric="s",
                values=timings,
                ratio_name=f"{ATHENS_TRIO} / file://",
                ratio=ratio(timings[ATHENS_TRIO], timings["file://"]),
                better="lower",
            )
        )
