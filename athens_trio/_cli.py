"""The ``athens-trio`` command (also ``python -m athens_trio``): one function per
subcommand, all named in :data:`_COMMANDS`.

Every subcommand reads the config the same way: ``--config FILE`` (before or after the
subcommand), else ``./athens.toml`` if there is one, else the defaults; Athens'
environment variables override either.  A bad config exits 2 naming the key.

``athens-trio [serve]`` (the default) checks the go binary once, serves on hypercorn's
trio worker and prints one startup line with the address and the storage.  SIGINT or
SIGTERM stops it gracefully (in-flight requests get the shutdown grace period, then the
pipeline's go processes are killed); a second signal stops it at once.  Exit status: 0
after a shutdown, 2 for a bad config or go binary, 1 when the server cannot start (e.g.
the port is taken, the certificate is unreadable).

``athens-trio verify [--repair] [module[@version] ...]`` recomputes go's ``h1:`` hash
of stored zips and compares it with the one recorded when each was stored: every stored
version with no arguments, every stored version of a ``module``, or one
``module@version``.  It prints a line for each corrupt version (and each with no
recorded hash, or asked for but not stored) and a summary.  ``--repair`` removes each
corrupt version, so the next request fetches it afresh.  It needs no go and no server:
only the storage (safe while a server runs on the same disk storage).  Exit status: 0
if nothing was corrupt, 1 if anything was (repaired or not) or an asked-for version is
not stored, 2 for a bad config or argument.

``athens-trio config check`` loads the config as ``serve`` would and prints the
effective configuration as TOML with Athens' key names, which loads back unchanged,
secrets masked as ``***``.  Exit status: 0, or 2 for a bad config.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import trio

from ._config import Config, load_config
from ._exceptions import AthensTrioError, ConfigError, GoBinaryError, NotFoundError
from ._integrity import Verdict, verify_version
from ._logging import setup_logging
from ._module import check_canonical_version, check_path
from ._pipeline import open_pipeline, storage_from_config
from ._redact import MASK, redact_urls
from ._version import __version__
from .ops import (
    DEFAULT_WARM_CONCURRENCY,
    LAST_SERVED_DIR,
    STORED,
    BundleStatistics,
    GcStatistics,
    LastServed,
    Need,
    Pins,
    Progress,
    Warm,
    WarmStatistics,
    collect,
    disk_root,
    export_bundle,
    import_bundle,
    open_sum_check,
    parse_duration,
    parse_go_mod,
    parse_go_sum,
    parse_module_version,
    pins_from_file,
    show_progress,
)
from .server import serve
from .server._catalog import sort_entries
from .server._serve import check_go
from .server._workers import (
    inherited_fds,
    release_held_signals,
    run_supervisor,
    worker_argv,
    worker_count,
)
from .storage import Backend, mark_takedown, with_integrity
from .upstream import claim_run_dir

__all__ = ["main"]

log = logging.getLogger("athens_trio")

_Result = TypeVar("_Result")

DEFAULT_CONFIG_FILE = "athens.toml"


def _config_path(path: str | None) -> str | None:
    """The config file to read: the one named, else ./athens.toml if there is one."""
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        return DEFAULT_CONFIG_FILE
    return path


def _load(path: str | None) -> Config | None:
    """The config, or None after saying why not on stderr."""
    try:
        return load_config(_config_path(path))
    except ConfigError as exc:
        print(f"athens-trio: config error: {exc}", file=sys.stderr)
        return None


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _where(config: Config) -> str:
    return f"unix:{config.unix_socket}" if config.unix_socket else config.port


# ---------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------


#: The signals that stop a command.
_STOPS = (signal.SIGINT, signal.SIGTERM)
#: Stop signals that came while no receiver listened (see main): a command starting
#: looks here once its receiver is open.
_unheard_stops: list[int] = []


def _note_stop(signum: int, frame: object) -> None:
    _unheard_stops.append(signum)


async def _run(config: Config) -> None:
    fds = inherited_fds()  # a worker's (server/_workers.py)
    # Signals are ours from the first step: one during the start (go's version check,
    # storage opening) stops at once, since nothing is in flight yet; once serving, the
    # first stops gracefully and a second at once.
    serving = False
    stop = trio.Event()
    with trio.open_signal_receiver(*_STOPS) as signals:
        release_held_signals()  # a worker's, held since it started
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if serving and not stop.is_set():
                        log.info(
                            "%s: stopping; requests in flight get %g s (signal again to stop now)",
                            name,
                            config.shutdown_timeout,
                        )
                        stop.set()
                        continue
                    if serving:
                        log.warning("%s again: stopping now", name)
                    else:
                        log.info("%s while starting: stopping", name)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            if _unheard_stops:
                log.info("%s while starting: stopping", signal.Signals(_unheard_stops[0]).name)
                nursery.cancel_scope.cancel()
            go_version = await check_go(config)
            async with serve(config, go_version=go_version, fds=fds) as server:
                storage = server.pipeline.storage.description
                print(
                    f"athens-trio {__version__} serving on {', '.join(server.binds)} "
                    f"(storage: {storage}; {go_version})",
                    flush=True,
                )
                serving = True
                await stop.wait()
            nursery.cancel_scope.cancel()
    log.info("stopped")


def _serve_main(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    handler = setup_logging(config.log_level, config.log_format)
    workers = worker_count(config)
    try:
        if workers > 1:
            describe = f"storage: {storage_from_config(config).description}"
            return run_supervisor(
                config, workers, worker_argv(), describe, stopped_before=_unheard_stops
            )
        trio.run(_run, config)
    except (OSError, BaseExceptionGroup) as error:
        # A certificate that cannot be read; from inside the nurseries: a go binary that
        # does not run, a port that is taken, storage that is not ready.
        leaves = _leaves(error)
        if len(leaves) != 1 or not isinstance(leaves[0], OSError | AthensTrioError):
            raise
        if isinstance(leaves[0], GoBinaryError):
            print(f"athens-trio: {leaves[0]}", file=sys.stderr)
            return 2
        if isinstance(leaves[0], OSError):
            print(f"athens-trio: cannot serve on {_where(config)}: {leaves[0]}", file=sys.stderr)
        else:
            print(f"athens-trio: cannot start: {leaves[0]}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger().removeHandler(handler)
    return 0


# ---------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------


@dataclass
class _Tally:
    checked: int = 0
    ok: int = 0
    unrecorded: int = 0
    corrupt: int = 0
    repaired: int = 0
    missing: list[str] = field(default_factory=list)


def _parse_target(target: str) -> tuple[str, str | None]:
    """``module`` or ``module@version``, checked (:class:`ValueError` if malformed)."""
    module, at, version = target.partition("@")
    check_path(module)
    if at:
        check_canonical_version(version)
        return module, version
    return module, None


async def _targets(
    storage: Backend, targets: list[tuple[str, str | None]], tally: _Tally
) -> list[tuple[str, str]]:
    """The (module, version) pairs to check, in catalog order."""
    if not targets:
        found = {entry async for entry in storage.catalog()}
    else:
        found = set()
        for module, version in targets:
            if version is not None:
                if await storage.exists(module, version):
                    found.add((module, version))
                else:
                    tally.missing.append(f"{module}@{version}")
                continue
            versions = await storage.list_versions(module)
            if not versions:
                tally.missing.append(module)
            found.update((module, v) for v in versions)
    return sort_entries(found)


async def _verify(config: Config, targets: list[tuple[str, str | None]], *, repair: bool) -> _Tally:
    storage = storage_from_config(config)
    tally = _Tally()
    await storage.ready()
    try:
        for module, version in await _targets(storage, targets, tally):
            try:
                result = await verify_version(storage, module, version)
            except NotFoundError:
                continue  # removed while we were at it: nothing left to be corrupt
            tally.checked += 1
            name = f"{module}@{version}"
            if result.verdict is Verdict.OK:
                tally.ok += 1
            elif result.verdict is Verdict.UNRECORDED:
                tally.unrecorded += 1
                print(
                    f"unrecorded {name}: no hash was recorded; the zip hashes to {result.computed}",
                    flush=True,
                )
            else:
                tally.corrupt += 1
                detail = (
                    f"recorded {result.recorded}, the zip hashes to {result.computed}"
                    if result.computed
                    else f"not a readable zip ({result.detail})"
                )
                removed = ""
                if repair:
                    with contextlib.suppress(NotFoundError):  # someone else got there
                        await storage.delete(module, version)
                    tally.repaired += 1
                    removed = "; removed (the next request fetches it again)"
                print(f"CORRUPT {name}: {detail}{removed}", flush=True)
    finally:
        with trio.CancelScope(shield=True):
            await storage.aclose()
    for name in tally.missing:
        print(f"missing {name}: not in storage", flush=True)
    return tally


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repair",
        action="store_true",
        help="remove each corrupt version, so that the next request fetches it again",
    )
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="module[@version]",
        help="what to check (default: every stored version)",
    )


def _verify_main(args: argparse.Namespace) -> int:
    try:
        targets = [_parse_target(target) for target in args.targets]
    except ValueError as exc:
        print(f"athens-trio verify: {exc}", file=sys.stderr)
        return 2
    config = _load(args.config)
    if config is None:
        return 2
    handler = setup_logging(config.log_level, config.log_format)
    try:
        tally = _run_interruptible(partial(_verify, config, targets, repair=args.repair))
    except AthensTrioError as exc:
        print(f"athens-trio verify: {exc}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger().removeHandler(handler)
    if isinstance(tally, _Interrupted):
        print(f"verify interrupted by {tally.by}", flush=True)
        return 130
    corrupt = f"{tally.corrupt} corrupt" + (
        f" ({tally.repaired} removed)" if tally.repaired else ""
    )
    print(
        f"verified {tally.checked} versions: {tally.ok} ok, {corrupt}, "
        f"{tally.unrecorded} without a recorded hash"
        + (f", {len(tally.missing)} not in storage" if tally.missing else ""),
        flush=True,
    )
    return 1 if tally.corrupt or tally.missing else 0


# ---------------------------------------------------------------------------------------
# Operators' tools: warm (and, below, export/import, gc)
# ---------------------------------------------------------------------------------------


@dataclass
class _Interrupts:
    """A tool's SIGINT/SIGTERM, taken for its whole run (see _run_interruptible): the
    first cancels the innermost scope in ``scopes`` (the work under way: what was
    stored stays, go is killed; before any, the whole run), later ones are only noted,
    since the tool is stopping already and its clean-up is bounded."""

    by: str = ""  # the first signal's name
    scopes: list[trio.CancelScope] = field(default_factory=list)
    worked: bool = False  # a phase of work ran (and ended): nothing left to cancel


_INTERRUPTS: ContextVar[_Interrupts] = ContextVar("interrupts")


@dataclass(frozen=True)
class _Interrupted:
    """A tool's run cancelled as a whole, before its work began or in a tool with no
    progress of its own (verify)."""

    by: str


async def _take_signals(signals: AsyncIterator[int], interrupts: _Interrupts) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if interrupts.by or (interrupts.worked and len(interrupts.scopes) == 1):
            # Stopping already, or the work is done and what is left (closing up,
            # the summary) is bounded: noted, not cancelled.
            log.info("%s: finishing already", name)
            continue
        interrupts.by = name
        interrupts.scopes[-1].cancel()


def _run_interruptible(fn: Callable[..., Awaitable[_Result]], *args: Any) -> _Result | _Interrupted:
    """``trio.run(fn, *args)`` with SIGINT/SIGTERM taken from its first step to its
    last, so that a signal during start-up or clean-up is handled, never fatal."""

    async def run() -> _Result | _Interrupted:
        interrupts = _Interrupts()
        _INTERRUPTS.set(interrupts)
        failure: Exception | None = None
        with trio.open_signal_receiver(*_STOPS) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_take_signals, signals, interrupts)
                with trio.CancelScope() as whole:
                    interrupts.scopes.append(whole)
                    if _unheard_stops:  # before the receiver opened: stop at once
                        interrupts.by = signal.Signals(_unheard_stops[0]).name
                        whole.cancel()
                    try:
                        result = await fn(*args)
                    except Exception as exc:
                        failure = exc  # raised as fn raised it, not in the nursery's group
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return _Interrupted(interrupts.by) if whole.cancelled_caught else result

    try:
        return trio.run(run)
    except BaseExceptionGroup as group:
        # One error, however deep in nurseries (a cancel unwinding among them
        # included), raised as itself: the tools report it by name, not as a traceback.
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise


@dataclass(frozen=True)
class _WarmTargets:
    go_sums: list[list[Need]]
    go_mods: list[str]
    modules: list[tuple[str, str]]


def _warm_targets(arguments: list[str]) -> _WarmTargets:
    """Files (a go.sum by its name, else a go.mod) and module@version targets
    (ValueError or OSError when one is not)."""
    targets = _WarmTargets([], [], [])
    for argument in arguments:
        path = Path(argument)
        if "@" not in argument or path.exists():
            text = path.read_text()
            if path.name.endswith(".sum"):
                targets.go_sums.append(parse_go_sum(text))
            else:
                parse_go_mod(text)  # malformed: refused now, before anything is fetched
                targets.go_mods.append(text)
        else:
            targets.modules.append(parse_module_version(argument))
    return targets


async def _with_progress(
    what: str, read: Callable[[], Progress], work: Callable[[], Awaitable[object]]
) -> str:
    """Run ``work`` with its progress on stderr; SIGINT/SIGTERM cancel it (what was
    stored stays, go is killed).  Returns the signal's name, or "" if none came."""
    interrupts = _INTERRUPTS.get()
    async with trio.open_nursery() as nursery:
        interrupts.scopes.append(nursery.cancel_scope)
        try:
            nursery.start_soon(partial(show_progress, read, sys.stderr, what=what))
            await work()
            nursery.cancel_scope.cancel()
        finally:
            interrupts.scopes.remove(nursery.cancel_scope)
            interrupts.worked = True
    return interrupts.by


async def _warm(
    config: Config, targets: _WarmTargets, concurrency: int
) -> tuple[WarmStatistics, str]:
    await check_go(config)
    async with open_pipeline(config) as pipeline:
        warm = Warm(pipeline.protocol, pipeline.storage, concurrency=concurrency)
        interrupted = await _with_progress(
            "warm",
            lambda: warm.statistics().progress(),
            partial(
                warm.run, go_sums=targets.go_sums, go_mods=targets.go_mods, modules=targets.modules
            ),
        )
    return warm.statistics(), interrupted


def _warm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_WARM_CONCURRENCY,
        metavar="N",
        help=f"versions asked for at once (default {DEFAULT_WARM_CONCURRENCY})",
    )
    parser.add_argument(
        "targets",
        nargs="+",
        metavar="go.mod|go.sum|module@version",
        help="a project's go.mod or go.sum, or a module@version (or @latest, a branch...)",
    )


def _warm_main(args: argparse.Namespace) -> int:
    try:
        targets = _warm_targets(args.targets)
        if args.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
    except (ValueError, OSError) as exc:
        print(f"athens-trio warm: {exc}", file=sys.stderr)
        return 2
    config = _load(args.config)
    if config is None:
        return 2
    handler = setup_logging(config.log_level, config.log_format)
    try:
        warmed = _run_interruptible(_warm, config, targets, args.concurrency)
    except AthensTrioError as exc:
        print(f"athens-trio warm: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, GoBinaryError) else 1
    finally:
        logging.getLogger().removeHandler(handler)
    if isinstance(warmed, _Interrupted):
        print(f"warm interrupted by {warmed.by} before it began", flush=True)
        return 130
    stats, interrupted = warmed
    for failure in stats.failures:
        print(f"failed {failure}", flush=True)
    print(
        f"warmed {stats.done} of {stats.total}: {stats.fetched} fetched, "
        f"{stats.already_stored} already stored, {stats.failed} failed in {stats.seconds:.1f}s"
        + (f"; interrupted by {interrupted} (what was stored stays)" if interrupted else ""),
        flush=True,
    )
    if interrupted:
        return 130
    return 1 if stats.failed else 0


@contextlib.asynccontextmanager
async def _opened_storage(config: Config) -> AsyncIterator[Backend]:
    """The configured storage, ready, closed on the way out (no server, no go)."""
    storage = storage_from_config(config)
    await storage.ready()
    try:
        yield storage
    finally:
        with trio.CancelScope(shield=True):
            await storage.aclose()


async def _export_needs(
    storage: Backend, go_sum: list[Need] | None, targets: list[tuple[str, str | None]]
) -> list[Need]:
    """What ``export`` writes: a go.sum's versions, the targets (module@version, or a
    module's every stored version), or everything stored."""
    if go_sum is not None:
        return go_sum
    entries: list[tuple[str, str]] = []
    for module, version in targets:
        if version is not None:
            entries.append((module, version))
        else:
            entries += [(module, v) for v in await storage.list_versions(module)]
    if not targets:
        entries = [entry async for entry in storage.catalog()]
    return [Need(module, version, STORED) for module, version in sort_entries(set(entries))]


async def _export(
    config: Config,
    args: argparse.Namespace,
    go_sum: list[Need] | None,
    targets: list[tuple[str, str | None]],
) -> tuple[BundleStatistics, str]:
    stats = BundleStatistics()
    async with _opened_storage(config) as raw:
        storage = with_integrity(raw)
        needs = await _export_needs(storage, go_sum, targets)
        interrupted = await _with_progress(
            "export",
            stats.progress,
            partial(export_bundle, storage, needs, Path(args.output), stats),
        )
    return stats, interrupted


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", required=True, metavar="BUNDLE.tar", help="the tar to write"
    )
    parser.add_argument(
        "--go-sum",
        metavar="FILE",
        help="the versions a go.sum names (zips where it has a zip hash, else go.mod only)",
    )
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="module[@version]",
        help="what to export (default: everything stored)",
    )


def _bundle_report(command: str, stats: BundleStatistics, interrupted: str, summary: str) -> int:
    for problem in stats.problems:
        print(f"{'missing' if command == 'export' else 'refused'} {problem}", flush=True)
    print(summary + (f"; interrupted by {interrupted}" if interrupted else ""), flush=True)
    if interrupted:
        return 130
    return 1 if stats.problems else 0


def _run_tool(
    command: str, args: argparse.Namespace, run: Callable[[Config], Awaitable[_Result]]
) -> _Result | int:
    """Config, logging and trio.run around a tool (export, import, gc); an exit status
    instead when it could not run."""
    config = _load(args.config)
    if config is None:
        return 2
    handler = setup_logging(config.log_level, config.log_format)
    try:
        result = _run_interruptible(run, config)
    except (AthensTrioError, OSError, ValueError) as exc:
        print(f"athens-trio {command}: {exc}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger().removeHandler(handler)
    if isinstance(result, _Interrupted):
        print(f"{command} interrupted by {result.by} before it began", flush=True)
        return 130
    return result


def _export_main(args: argparse.Namespace) -> int:
    if args.go_sum and args.targets:
        print("athens-trio export: --go-sum or targets, not both", file=sys.stderr)
        return 2
    try:
        go_sum = parse_go_sum(Path(args.go_sum).read_text()) if args.go_sum else None
        targets = [_parse_target(target) for target in args.targets]
    except (OSError, ValueError) as exc:
        print(f"athens-trio export: {exc}", file=sys.stderr)
        return 2
    result = _run_tool("export", args, lambda config: _export(config, args, go_sum, targets))
    if isinstance(result, int):
        return result
    stats, interrupted = result
    return _bundle_report(
        "export",
        stats,
        interrupted,
        f"exported {stats.written} of {stats.total} versions to {args.output}"
        + (f", {len(stats.problems)} not stored" if stats.problems else ""),
    )


async def _import(config: Config, bundle: Path) -> tuple[BundleStatistics, str]:
    stats = BundleStatistics()
    # Zips are staged beside the tree (renamed in, not copied), as fetches are, in a
    # claimed run directory: one a killed import leaves goes at the next start.
    config.go_get_root.mkdir(parents=True, exist_ok=True)
    run_dir = await trio.to_thread.run_sync(claim_run_dir, config.go_get_root)
    try:
        async with _opened_storage(config) as storage, open_sum_check(config, storage) as sums:
            interrupted = await _with_progress(
                "import",
                stats.progress,
                partial(import_bundle, storage, bundle, sums, stats, temp_root=str(run_dir.path)),
            )
    finally:
        run_dir.release()  # on the loop: a cancelled thread hop would leave it
    return stats, interrupted


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE.tar", help="a bundle written by export")


def _import_main(args: argparse.Namespace) -> int:
    result = _run_tool("import", args, lambda config: _import(config, Path(args.bundle)))
    if isinstance(result, int):
        return result
    stats, interrupted = result
    checked = (
        "checksum database unreachable: recorded hashes only"
        if stats.sumdb_unreachable
        else f"{stats.sumdb_checked} checked against the checksum database"
    )
    return _bundle_report(
        "import",
        stats,
        interrupted,
        f"imported {stats.written} of {stats.total} versions, {stats.already_stored} already "
        f"stored, {len(stats.problems)} refused ({checked})",
    )


async def _gc(
    config: Config, unused_for: float, pins: Pins, dry_run: bool
) -> tuple[GcStatistics, str]:
    stats = GcStatistics()
    if config.storage_type != "disk":
        # When a version was stored and last served are kept beside a disk tree only:
        # elsewhere every version would look fresh, and gc would remove nothing, silently.
        raise ConfigError("StorageType", f"gc needs disk storage, not {config.storage_type!r}")
    async with _opened_storage(config) as storage:
        root = disk_root(storage)
        last_served = LastServed(root / LAST_SERVED_DIR if root else None)
        interrupted = await _with_progress(
            "gc",
            stats.progress,
            partial(
                collect,
                storage,
                root,
                last_served,
                unused_for=unused_for,
                now=time.time(),
                pins=pins,
                dry_run=dry_run,
                stats=stats,
            ),
        )
        if root is not None and not dry_run:
            # A server on the same tree forgets what it kept in memory of them.
            await trio.to_thread.run_sync(mark_takedown, root)
    return stats, interrupted


def _gc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unused-for",
        required=True,
        metavar="AGE",
        help="remove versions neither served nor stored for this long: 90d, 12h, 2w...",
    )
    parser.add_argument("--dry-run", action="store_true", help="only print what would go")
    parser.add_argument(
        "--pin",
        metavar="FILE",
        type=Path,
        help="keep these whatever their age: module path globs or module@version, one a line",
    )


def _gc_main(args: argparse.Namespace) -> int:
    try:
        unused_for = parse_duration(args.unused_for)
        pins = pins_from_file(args.pin)
    except (OSError, ValueError) as exc:
        print(f"athens-trio gc: {exc}", file=sys.stderr)
        return 2
    result = _run_tool("gc", args, lambda config: _gc(config, unused_for, pins, args.dry_run))
    if isinstance(result, int):
        return result
    stats, interrupted = result
    verb = "would remove" if args.dry_run else "removed"
    for name in stats.removed:
        print(f"{verb} {name}", flush=True)
    print(
        f"{verb} {len(stats.removed)} of {stats.total} versions unused for {args.unused_for} "
        f"({stats.removed_bytes / (1 << 20):.1f} MiB); kept {stats.kept} "
        f"({stats.pinned} pinned)" + (f"; interrupted by {interrupted}" if interrupted else ""),
        flush=True,
    )
    return 130 if interrupted else 0


# ---------------------------------------------------------------------------------------
# config check
# ---------------------------------------------------------------------------------------

# Keys whose whole value is a secret.
_SECRET_KEYS = frozenset({"GithubToken", "BasicAuthPass"})
# GoBinaryEnvVars names whose value is (or may carry) a credential.
_CREDENTIAL_NAME = re.compile(
    r"token|secret|passw|passphrase|pass$|auth|credential|cookie|(api|access|private)_?key",
    re.IGNORECASE,
)


def _mask_env_entry(entry: str) -> str:
    name, _, value = entry.partition("=")
    if value and _CREDENTIAL_NAME.search(name):
        return f"{name}={MASK}"
    return f"{name}={redact_urls(value)}"


def _masked(value: Any, key: str = "") -> Any:
    """The config's builtins with every secret masked: whole values for the secret
    keys and credential-like GoBinaryEnvVars, URLs' userinfo and queries everywhere."""
    if isinstance(value, dict):
        return {name: _masked(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, key) for item in value]
    if not isinstance(value, str):
        return value
    if key in _SECRET_KEYS:
        return MASK if value else ""
    if key == "GoBinaryEnvVars":
        return _mask_env_entry(value)
    return redact_urls(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_lines(table: Mapping[str, Any], header: tuple[str, ...] = ()) -> list[str]:
    """``table`` as TOML: its values, then its tables (headers only above values)."""
    values = {key: value for key, value in table.items() if not isinstance(value, dict)}
    lines = [f"\n[{'.'.join(header)}]"] if header and values else []
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    for key, value in table.items():
        if isinstance(value, dict):
            lines += _toml_lines(value, (*header, key))
    return lines


def _config_check_main(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    path = _config_path(args.config)
    source = f"{path} and the environment" if path else "the defaults and the environment"
    print(f"# athens-trio {__version__}: the effective configuration from {source}")
    print(f"# (secrets masked as {MASK})")
    print("\n".join(_toml_lines(_masked(msgspec.to_builtins(config)))), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------------------


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class _Command:
    """A subcommand: the words that name it, what it does in a line, its arguments
    (besides --config, which every command takes), and the function that runs it."""

    words: tuple[str, ...]
    summary: str
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments


_COMMANDS: tuple[_Command, ...] = (
    _Command(("serve",), "serve the GOPROXY protocol (the default command)", _serve_main),
    _Command(
        ("verify",),
        "check stored zips against the h1: hash recorded when each was stored",
        _verify_main,
        _verify_arguments,
    ),
    _Command(
        ("warm",),
        "fetch a project's module graph (go.mod, go.sum, module@version) into storage",
        _warm_main,
        _warm_arguments,
    ),
    _Command(
        ("export",),
        "write stored versions with their hashes to a bundle (a GOPROXY=file:// tree as a tar)",
        _export_main,
        _export_arguments,
    ),
    _Command(
        ("import",),
        "store a bundle's versions, each verified against its hash and the checksum database",
        _import_main,
        _import_arguments,
    ),
    _Command(
        ("gc",),
        "remove versions no one fetched for a while (--unused-for 90d), keeping pinned ones",
        _gc_main,
        _gc_arguments,
    ),
    _Command(
        ("config", "check"),
        "load the config as serve would and print it, secrets masked",
        _config_check_main,
    ),
)
_DEFAULT_COMMAND = _COMMANDS[0]


def _config_argument(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help=f"Athens TOML config (default: ./{DEFAULT_CONFIG_FILE} if present, else "
        "built-in defaults); ATHENS_* environment variables override it",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="athens-trio",
        description="A Go module proxy (GOPROXY server) in the shape of Athens, on Trio. "
        f"With no command: {_DEFAULT_COMMAND.words[0]}.",
    )
    _config_argument(parser, default=None)
    parser.add_argument("--version", action="version", version=f"athens-trio {__version__}")
    parser.set_defaults(run=_DEFAULT_COMMAND.run)
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): parser}
    subparsers: dict[tuple[str, ...], Any] = {}
    for command in _COMMANDS:
        for depth in range(1, len(command.words) + 1):
            words = command.words[:depth]
            if words in parsers:
                continue
            owner = words[:-1]
            if owner not in subparsers:
                # Only the top level has a default; `config` alone is an error.
                subparsers[owner] = parsers[owner].add_subparsers(
                    title="commands", metavar="COMMAND", required=bool(owner)
                )
            # A group's line in its owner's help names the commands under it.
            leaf = words == command.words
            summary = (
                command.summary
                if leaf
                else "; ".join(
                    f"{' '.join(each.words)}: {each.summary}"
                    for each in _COMMANDS
                    if each.words[:depth] == words
                )
            )
            description = summary[:1].upper() + summary[1:] + "." if leaf else None
            child = subparsers[owner].add_parser(words[-1], help=summary, description=description)
            # SUPPRESS: --config before the subcommand survives one not given after it.
            _config_argument(child, default=argparse.SUPPRESS)
            parsers[words] = child
        command.arguments(parsers[command.words])
        parsers[command.words].set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the exit status.

    A stop signal outside a command's own receiver (trio's, which restores this handler
    when it closes) is noted, not fatal: one before the receiver opens stops the start
    (the command looks), one after a stop changes nothing, where the default action
    would kill a process winding down (143 after a clean stop).  Not SIG_IGN: that
    would discard a worker's held signal (server/_workers.py).  The main thread's: the
    commands take signals (a program embedding the proxy uses ``serve`` instead)."""
    return _main(argv, exiting=False)


def entry() -> int:
    """The ``athens-trio`` program: :func:`main`, then stop signals ignored while the
    interpreter winds down (its finalization resets handlers, though not SIG_IGN)."""
    return _main(None, exiting=True)


def _main(argv: Sequence[str] | None, *, exiting: bool) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    _unheard_stops.clear()
    previous = {stop: signal.signal(stop, _note_stop) for stop in _STOPS}
    try:
        status: int = args.run(args)
    finally:
        for stop, handler in previous.items():
            if exiting:
                handler = signal.SIG_IGN
            signal.signal(stop, signal.SIG_DFL if handler is None else handler)
    return status
