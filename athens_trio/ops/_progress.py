"""Progress of a long operation on a terminal (a bar redrawn in place) or in a log or
a pipe (a plain line now and then), from whatever statistics() the operation has."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import trio

__all__ = ["Progress", "show_progress"]

#: Seconds between redraws of a bar, and between plain lines.
BAR_INTERVAL = 0.2
LINE_INTERVAL = 5.0
BAR_WIDTH = 30


@dataclass(frozen=True)
class Progress:
    """How far an operation is: ``done`` of ``total`` (which may still grow), and a
    short detail (``3 fetched, 1 failed``)."""

    done: int
    total: int
    detail: str = ""

    def bar(self) -> str:
        filled = BAR_WIDTH * self.done // self.total if self.total else 0
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.line()}"

    def line(self) -> str:
        return f"{self.done}/{self.total}" + (f" ({self.detail})" if self.detail else "")


async def show_progress(
    read: Callable[[], Progress], out: TextIO, *, what: str, line_interval: float = LINE_INTERVAL
) -> None:
    """Show ``read()`` on ``out`` until cancelled: a bar redrawn in place on a terminal,
    else a line (``what: 3/10 (...)``) every ``line_interval`` seconds when it moved.
    On cancellation a terminal's bar line is ended, so what follows starts clean."""
    tty = out.isatty()
    last = ""
    try:
        while True:
            progress = read()
            if tty:
                out.write(f"\r{what}: {progress.bar()}\x1b[K")
                out.flush()
            elif progress.line() != last:
                last = progress.line()
                print(f"{what}: {last}", file=out, flush=True)
            await trio.sleep(BAR_INTERVAL if tty else line_interval)
    finally:
        if tty:
            out.write(f"\r{what}: {read().bar()}\x1b[K\n")
            out.flush()
