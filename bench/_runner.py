"""``python -m bench <scenario|all> [--quick]``: run scenarios, print, write the results.

Each scenario runs in turn in one scratch directory (removed at the end unless
``--keep``); one that fails is recorded as ``error: ...`` with its traceback on
stderr, the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from ._athens import run_athens
from ._cached import run_cached
from ._cold import run_cold
from ._context import Context
from ._fixtures import make_go_env
from ._graph import run_graph
from ._herd import run_herd
from ._memory import run_memory
from ._replicas import run_replicas
from ._report import render_markdown, render_summary, render_table, write_chart, write_json
from ._results import ScenarioResult
from ._sizes import FULL, QUICK
from ._tools import find_tools, machine_info, source_revision
from ._upstream import run_upstream

__all__ = ["SCENARIOS", "main"]

# Each fills in the result it is handed, so what it measured before a failure is kept.
SCENARIOS: dict[str, Callable[[Context, ScenarioResult], Awaitable[None]]] = {
    "cached": run_cached,
    "cold": run_cold,
    "herd": run_herd,
    "memory": run_memory,
    "graph": run_graph,
    "upstream": run_upstream,
    "replicas": run_replicas,
    "athens": run_athens,
}

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    parts = []
    for leaf in _leaves(exc):
        first_line = (str(leaf).strip().splitlines() or [""])[0]
        parts.append(f"{type(leaf).__name__}: {first_line}"[:300])
    return "; ".join(parts)


async def run_scenarios(ctx: Context, names: Sequence[str]) -> list[ScenarioResult]:
    results = []
    for name in names:
        print(f"bench: {name} ...", flush=True)
        started = trio.current_time()
        result = ScenarioResult(name)
        try:
            await SCENARIOS[name](ctx, result)
        except Exception as exc:
            traceback.print_exception(exc, file=sys.stderr)
            result.status = f"error: {_describe(exc)}"
        result.seconds = trio.current_time() - started
        print(render_table(result), flush=True)
        results.append(result)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark athens-trio against its references, in one run.",
    )
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"], help="what to run")
    parser.add_argument("--quick", action="store_true", help="toy sizes; never installs")
    parser.add_argument(
        "--athens-binary", metavar="PATH", help="a built Athens proxy, for the athens scenario"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=DEFAULT_RESULTS,
        help=f"where the JSON and charts go (default: {DEFAULT_RESULTS})",
    )
    parser.add_argument(
        "--no-install", action="store_true", help="never apt-get install nginx or wrk"
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=["nginx", "wrk", "matplotlib"],
        help="act as if this tool were missing (exercises the fallbacks); repeatable",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    sizes = QUICK if args.quick else FULL
    started = datetime.now(UTC)
    clock = time.monotonic()
    tools = find_tools(quick=args.quick, install=not args.no_install, without=set(args.without))
    for note in tools.notes:
        print(f"bench: {note}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="athens-trio-bench-"))
    ctx = Context(
        sizes=sizes,
        quick=args.quick,
        tools=tools,
        workdir=workdir,
        go_env=make_go_env(workdir / "repos"),
        athens_binary=str(Path(args.athens_binary).resolve()) if args.athens_binary else None,
    )
    try:
        results = trio.run(run_scenarios, ctx, names)
    finally:
        if args.keep:
            print(f"bench: scratch directory kept at {workdir}")
        else:
            _remove_tree(workdir)

    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    results_dir: Path = args.results_dir
    charts: dict[str, str] = {}
    if tools.charts:
        for result in results:
            chart = results_dir / f"{stamp}-{result.name}.png"
            try:
                if write_chart(result, chart):
                    charts[result.name] = chart.name
            except Exception as exc:
                print(f"bench: chart for {result.name} failed: {_describe(exc)}", file=sys.stderr)
    else:
        print("bench: no charts (matplotlib is not importable: pip install '.[bench]')")
    document: dict[str, Any] = {
        "schema": 1,
        "started": started.isoformat(),
        "seconds": round(time.monotonic() - clock, 2),
        "quick": args.quick,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "source": source_revision(Path(__file__).resolve().parent.parent),
        "tools": {
            "paths": {"go": tools.go, "nginx": tools.nginx, "wrk": tools.wrk},
            "versions": tools.versions(),
            "notes": tools.notes,
        },
        "sizes": dataclasses.asdict(sizes),
        "scenarios": {result.name: result.as_json() for result in results},
        "charts": charts,
    }
    path = results_dir / f"{stamp}.json"
    write_json(path, document)
    (results_dir / f"{stamp}.md").write_text(
        "\n".join(render_markdown(result) for result in results)
    )
    print(render_summary(results))
    print(f"bench: {len(results)} scenarios in {document['seconds']:.1f} s; results: {path}")
    failed = [r.name for r in results if r.status.startswith("error")]
    if failed:
        print(f"bench: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _remove_tree(directory: Path) -> None:
    # go makes its module cache read-only; give directories their write bit back.
    for parent, _dirs, _files in os.walk(directory):
        try:
            os.chmod(parent, 0o700)
        except OSError:
            continue
    shutil.rmtree(directory, ignore_errors=True)
