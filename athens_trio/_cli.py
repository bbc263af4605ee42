"""The ``athens-trio`` command (also ``python -m athens_trio``): load config, serve.

``athens-trio [--config FILE]`` reads FILE, else ``./athens.toml`` if there is one, else
the defaults; Athens' environment variables override either.  It checks the go binary
once, serves on hypercorn's trio worker and prints one startup line with the address
and the storage.  SIGINT or SIGTERM stops it gracefully (in-flight requests get the
shutdown grace period, then the pipeline's go processes are killed); a second signal
stops it at once.  Exit status: 0 after a shutdown, 2 for a bad config or go binary,
1 when the server cannot start (e.g. the port is taken).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from . import __version__
from ._config import Config, load_config
from ._exceptions import AthensTrioError, ConfigError, GoBinaryError
from .server import serve
from .server._serve import check_go

__all__ = ["main"]

log = logging.getLogger("athens_trio")

DEFAULT_CONFIG_FILE = "athens.toml"

# Athens' LogLevel names (logrus) as stdlib logging levels.
_LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="athens-trio",
        description="A Go module proxy (GOPROXY server) in the shape of Athens, on Trio.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"Athens TOML config (default: ./{DEFAULT_CONFIG_FILE} if present, else "
        "built-in defaults); ATHENS_* environment variables override it",
    )
    parser.add_argument("--version", action="version", version=f"athens-trio {__version__}")
    return parser.parse_args(argv)


def _setup_logging(config: Config) -> None:
    level = _LOG_LEVELS[config.log_level]
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # hypercorn's "Running on ..." repeats our startup line; keep its warnings.
    logging.getLogger("athens_trio.hypercorn").setLevel(max(level, logging.WARNING))


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy until SIGINT or SIGTERM; return the exit status."""
    args = _parse_args(argv)
    path: str | None = args.config
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"athens-trio: config error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config)
    try:
        trio.run(_run, config)
    except GoBinaryError as exc:
        print(f"athens-trio: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        # From inside the nurseries: a port that is taken, storage that is not ready.
        leaves = _leaves(group)
        if len(leaves) != 1 or not isinstance(leaves[0], OSError | AthensTrioError):
            raise
        if isinstance(leaves[0], OSError):
            print(f"athens-trio: cannot serve on {config.port}: {leaves[0]}", file=sys.stderr)
        else:
            print(f"athens-trio: cannot start: {leaves[0]}", file=sys.stderr)
        return 1
    return 0
