"""Scenario ``cached``: a pre-filled storage under load, athens-trio vs a static server.

Storage holds N small versions (their ``.info`` and ``.mod`` make the request mix)
and one version per zip size.  Both servers serve the very same directory at once;
each case runs on both, back to back, alternating who goes first, so drift hits both.
Then ``go mod download`` of some of the small versions through athens-trio, through
the static server, and through ``GOPROXY=file://`` on the same directory.

The small-file mix is also run against the floor of athens-trio's own stack: a bare
ASGI app on hypercorn's trio worker answering the same ``.info``/``.mod`` bytes from a
dict (:func:`floor_main`, run as ``python -m bench._cached <root> <port>``), so the
rows ``... vs hypercorn-trio floor`` say how much athens-trio adds to its stack.  And on
athens-trio with ``Workers = 2`` (two processes on one socket, on the same storage), so
the rows ``... 2 workers vs 1`` say what a second process buys (athens-trio itself runs
one worker throughout, as nginx does).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import hypercorn.config
import hypercorn.trio
import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from athens_trio import DiskStorage

from ._context import Context, version_paths
from ._fixtures import OWNER, StoredVersion, store_version
from ._gocli import go_mod_download
from ._load import LoadResult
from ._results import ATHENS_TRIO, Row, ScenarioResult, ratio
from ._server import _SOURCE, Server, _clean_environ, _serve, free_port, started_together
from ._sizes import KIB, MIB

__all__ = ["FLOOR", "TWO_WORKERS", "clients_label", "floor_main", "run_cached", "size_label"]

#: The bare hypercorn-trio ASGI app's label in the results.
FLOOR = "hypercorn-trio floor"
#: athens-trio with ``Workers = 2``'s label in the results.
TWO_WORKERS = f"{ATHENS_TRIO} 2 workers"

_FLOOR_TYPES = {".info": b"application/json", ".mod": b"text/plain; charset=utf-8"}


def _floor_app(root: Path) -> ASGIFramework:
    """An ASGI app answering each ``.info`` and ``.mod`` under ``root`` from memory (as
    athens-trio's fast path does, with its ETag and Cache-Control), 404 otherwise."""
    files: dict[str, tuple[bytes, list[tuple[bytes, bytes]]]] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            suffix = os.path.splitext(name)[1]
            if suffix in _FLOOR_TYPES and not name.startswith("."):
                path = Path(directory, name)
                body = path.read_bytes()
                headers = [
                    (b"cache-control", b"public, max-age=31536000, immutable"),
                    (b"etag", b'"%032x"' % (hash(body) & (1 << 128) - 1)),
                    (b"content-type", _FLOOR_TYPES[suffix]),
                    (b"content-length", b"%d" % len(body)),
                ]
                files["/" + path.relative_to(root).as_posix()] = (body, headers)
    missing = (b"404 page not found\n", [(b"content-length", b"19")])

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        found = files.get(scope["path"])
        body, headers = found or missing
        await send(
            {
                "type": "http.response.start",
                "status": 200 if found else 404,
                "headers": headers,
                "trailers": False,
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


def floor_main(root: str, port: int) -> None:
    """Serve :func:`_floor_app` on 127.0.0.1:``port`` until SIGTERM/SIGINT."""
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.include_server_header = False
    trio.run(hypercorn.trio.serve, _floor_app(Path(root)), config)


@contextlib.asynccontextmanager
async def run_floor(workdir: Path, root: Path) -> AsyncIterator[Server]:
    port = free_port()
    where = str(await trio.Path(root).resolve())
    env = _clean_environ()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SOURCE, env.get("PYTHONPATH")]))
    async with _serve(
        FLOOR,
        [sys.executable, "-m", "bench._cached", where, str(port)],
        port=port,
        env=env,
        log=workdir / "floor.log",
        ready_path="/",
        need_ok=False,
    ) as server:
        yield server


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
    async with started_together(
        [
            ctx.athens_trio(directory, root),
            ctx.reference(directory, root),
            run_floor(directory, root),
            ctx.athens_trio(
                directory / "workers", root, env={"ATHENS_WORKERS": "2"}, name=TWO_WORKERS
            ),
        ]
    ) as (trio_server, ref_server, floor_server, workers_server):
        servers = [trio_server, ref_server]
        # The small files are measured on the floor of athens-trio's own stack too, and
        # on two workers.
        small_servers = [*servers, floor_server, workers_server]
        warm = 2 * len(mixes[0][2])  # each worker process has its own cache
        for server in small_servers:  # warm: imports, page cache, connections, caches
            await ctx.load(server, mixes[0][2], concurrency=2, workdir=directory, max_requests=warm)
        flip = False
        for label, metric, paths in mixes:
            small_files = paths is mixes[0][2]
            for concurrency in sizes.cached_concurrency:
                measured = small_servers if small_files else servers
                runs = await _measure(ctx, measured, paths, concurrency, flip)
                flip = not flip
                values: dict[str, float | None] = {
                    name: _figure(run, metric) for name, run in runs.items()
                }
                values[reference] = values.pop(ref_server.name)
                details = {name: run.details() for name, run in runs.items()}
                ratios = [(f"{label}, ", ATHENS_TRIO, reference)]
                if small_files:
                    ratios.append((f"{label} vs {FLOOR}, ", ATHENS_TRIO, FLOOR))
                    ratios.append((f"{label}, 2 workers vs 1, ", TWO_WORKERS, ATHENS_TRIO))
                for case, measured_name, against in ratios:
                    result.add(
                        Row(
                            case=f"{case}{clients_label(concurrency)}",
                            metric=metric,
                            values=values,
                            ratio_name=f"{measured_name} / {against}",
                            ratio=ratio(values[measured_name], values[against]),
                            better="higher",
                            details=details,
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


if __name__ == "__main__":
    floor_main(sys.argv[1], int(sys.argv[2]))
