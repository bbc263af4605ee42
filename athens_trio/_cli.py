"""The ``athens-trio`` command (also ``python -m athens_trio``): serve, or verify storage.

``athens-trio [--config FILE]`` reads FILE, else ``./athens.toml`` if there is one, else
the defaults; Athens' environment variables override either.  It checks the go binary
once, serves on hypercorn's trio worker and prints one startup line with the address
and the storage.  SIGINT or SIGTERM stops it gracefully (in-flight requests get the
shutdown grace period, then the pipeline's go processes are killed); a second signal
stops it at once.  Exit status: 0 after a shutdown, 2 for a bad config or go binary,
1 when the server cannot start (e.g. the port is taken, the certificate is unreadable).

``athens-trio verify [--config FILE] [--repair] [module[@version] ...]`` recomputes
go's ``h1:`` hash of stored zips and compares it with the one recorded when each was
stored: every stored version with no arguments, every stored version of a ``module``,
or one ``module@version``.  It prints a line for each corrupt version (and each with no
recorded hash, or asked for but not stored) and a summary.  ``--repair`` removes each
corrupt version, so the next request fetches it afresh.  It needs no go and no server:
only the storage (safe while a server runs on the same disk storage).  Exit status: 0
if nothing was corrupt, 1 if anything was (repaired or not) or an asked-for version is
not stored, 2 for a bad config or argument.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from . import __version__
from ._config import Config, load_config
from ._exceptions import AthensTrioError, ConfigError, GoBinaryError, NotFoundError
from ._integrity import Verdict, verify_version
from ._logging import setup_logging
from ._module import check_canonical_version, check_path
from ._pipeline import storage_from_config
from .server import serve
from .server._catalog import sort_entries
from .server._serve import check_go
from .storage import Backend

__all__ = ["main"]

log = logging.getLogger("athens_trio")

DEFAULT_CONFIG_FILE = "athens.toml"


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"Athens TOML config (default: ./{DEFAULT_CONFIG_FILE} if present, else "
        "built-in defaults); ATHENS_* environment variables override it",
    )


def _parse_serve_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="athens-trio",
        description="A Go module proxy (GOPROXY server) in the shape of Athens, on Trio. "
        "`athens-trio verify --help` for checking stored zips.",
    )
    _config_argument(parser)
    parser.add_argument("--version", action="version", version=f"athens-trio {__version__}")
    return parser.parse_args(argv)


def _parse_verify_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="athens-trio verify",
        description="Check stored zips against the h1: hash recorded when each was stored.",
    )
    _config_argument(parser)
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
    return parser.parse_args(argv)


def _load(path: str | None) -> Config | None:
    """The config, or None after saying why not on stderr."""
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    try:
        return load_config(path)
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


async def _run(config: Config) -> None:
    go_version = await check_go(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async with serve(config, go_version=go_version) as server:
                storage = server.pipeline.storage.description
                print(
                    f"athens-trio {__version__} serving on {', '.join(server.binds)} "
                    f"(storage: {storage}; {go_version})",
                    flush=True,
                )
                async for signum in signals:
                    log.info(
                        "%s: stopping; requests in flight get %g s (signal again to stop now)",
                        signal.Signals(signum).name,
                        config.shutdown_timeout,
                    )
                    break

                async def stop_at_once_on_another_signal() -> None:
                    async for signum in signals:
                        log.warning("%s again: stopping now", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()

                nursery.start_soon(stop_at_once_on_another_signal)
            nursery.cancel_scope.cancel()
    log.info("stopped")


def _serve_main(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    handler = setup_logging(config.log_level, config.log_format)
    try:
        trio.run(_run, config)
    except GoBinaryError as exc:
        print(f"athens-trio: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (OSError, BaseExceptionGroup) as error:
        # A certificate that cannot be read; from inside the nurseries: a port that is
        # taken, storage that is not ready.
        leaves = _leaves(error)
        if len(leaves) != 1 or not isinstance(leaves[0], OSError | AthensTrioError):
            raise
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
        tally = trio.run(partial(_verify, config, targets, repair=args.repair))
    except AthensTrioError as exc:
        print(f"athens-trio verify: {exc}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger().removeHandler(handler)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["verify"]:
        return _verify_main(_parse_verify_args(arguments[1:]))
    return _serve_main(_parse_serve_args(arguments))
