"""Scenario ``herd``: C clients ask for one cold version at the same instant.

athens-trio's go binary is a wrapper script that logs every invocation, then runs go:
however many clients ask, go must run once per part of the version fetched: one ``go
list -m`` for the go.mod part (``.info``, ``.mod``) and one ``go mod download`` for the
zip.  Each client GETs the version's ``.info``, ``.mod`` and ``.zip`` in turn (as go
does).  Compared
with one client alone on another cold version: the time until every client had its
``.info`` (the shared fetch plus the wait for it) and the time until every client had
everything (which adds serving C times the three files).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import trio

from ._context import Context
from ._fixtures import Tag, make_repo
from ._load import BurstResult, burst
from ._results import Row, ScenarioResult, ratio

__all__ = ["FETCH_COMMANDS", "count_runs", "run_herd", "write_counting_go"]


def write_counting_go(path: Path, go: str, log: Path) -> Path:
    """A go stand-in that appends its arguments to ``log``, then execs the real go."""
    path.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$*\" >> {shlex.quote(str(log))}\n"
        f'exec {shlex.quote(go)} "$@"\n'
    )
    path.chmod(0o755)
    log.touch()
    return path


#: The go commands that fetch a version (a go.mod part alone: ``list -m``; the whole
#: version: ``mod download``, which from a VCS serves a go.mod miss too).
FETCH_COMMANDS = ("list -m", "mod download")


def count_runs(log: Path, module: str) -> int:
    """How many go runs the wrapper saw fetch a version of ``module`` (want: one per
    version, however many clients asked for its .info, .mod and .zip)."""
    return sum(
        line.split()[-1].startswith(f"{module}@") and line.startswith(FETCH_COMMANDS)
        for line in log.read_text().splitlines()
    )


async def run_herd(ctx: Context, result: ScenarioResult) -> None:
    directory = ctx.scenario_dir("herd")
    clients = ctx.sizes.herd_clients
    names = ["herd-single", *(f"herd-c{c}" for c in clients)]
    modules = {
        name: await trio.to_thread.run_sync(
            make_repo, ctx.go_env, name, [Tag("v1.0.0", padding=200_000)]
        )
        for name in names
    }
    log = directory / "go-runs.log"
    wrapper = write_counting_go(directory / "go-counting", ctx.tools.go, log)
    result.reference = "one client alone on another cold version, same server"
    result.params.update(
        {"clients": list(clients), "requests_per_client": [".info", ".mod", ".zip"]}
    )
    timeout = float(ctx.sizes.stash_timeout + 30)

    def sequence(module: str) -> list[str]:
        return [f"/{module}/@v/v1.0.0.{suffix}" for suffix in ("info", "mod", "zip")]

    async with ctx.athens_trio(directory, directory / "storage", go_binary=str(wrapper)) as server:
        single = await burst(
            server.url, sequence(modules["herd-single"]), clients=1, timeout=timeout
        )
        runs: dict[int, BurstResult] = {}
        for count in clients:
            runs[count] = await burst(
                server.url, sequence(modules[f"herd-c{count}"]), clients=count, timeout=timeout
            )
    single_runs = count_runs(log, modules["herd-single"])
    result.add(
        Row(
            case="1 client",
            metric="s",
            values={"single": single.seconds},
            details={**single.details(), "go_runs": single_runs},
        )
    )
    result.add(Row(case="1 client", metric="s to .info", values={"single": single.first_seconds}))
    for count, run in runs.items():
        herd_runs = count_runs(log, modules[f"herd-c{count}"])
        result.add(
            Row(
                case=f"{count} clients",
                metric="s",
                values={"herd": run.seconds, "single": single.seconds},
                ratio_name="herd / single",
                ratio=ratio(run.seconds, single.seconds),
                better="lower",
                details={**run.details(), "go_runs": herd_runs},
            )
        )
        result.add(
            Row(
                case=f"{count} clients",
                metric="s to .info",
                values={"herd": run.first_seconds, "single": single.first_seconds},
                ratio_name="herd / single",
                ratio=ratio(run.first_seconds, single.first_seconds),
                better="lower",
                details={"meaning": "until every client had its .info: the fetch, shared"},
            )
        )
        result.add(
            Row(
                case=f"{count} clients",
                metric="go runs",
                values={"herd": herd_runs, "single": single_runs},
                details={"want": 1},
            )
        )
        result.add(Row(case=f"{count} clients", metric="errors", values={"herd": run.errors}))
        if herd_runs != 1:
            result.notes.append(f"{count} clients: go fetched the version {herd_runs} times")
        if run.errors:
            result.notes.append(
                f"{count} clients: {run.errors} failed, e.g. {run.error_samples[:2]}"
            )
