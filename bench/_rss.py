"""Resident memory of a server process and its children, read from ``/proc``."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import trio

__all__ = ["RssSampler", "process_tree", "rss_bytes", "status_kib"]

_FIELD = re.compile(r"^(\w+):\s+(\d+) kB$", re.MULTILINE)


def status_kib(pid: int) -> dict[str, int]:
    """The ``kB`` fields of ``/proc/<pid>/status`` (VmRSS, VmHWM, ...); {} if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {name: int(value) for name, value in _FIELD.findall(text)}


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (nginx's workers, athens-trio's go runs)."""
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue.extend(_children(current))
    return tree


def rss_bytes(pid: int, *, tree: bool = True) -> int:
    """Resident set size of ``pid`` (and, with ``tree``, its descendants), in bytes."""
    pids = process_tree(pid) if tree else [pid]
    return sum(status_kib(p).get("VmRSS", 0) for p in pids) * 1024


class RssSampler:
    """Polls a process tree's RSS in the background and keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0

    def sample(self) -> int:
        value = rss_bytes(self.pid)
        self.peak = max(self.peak, value)
        self.samples += 1
        return value

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            self.sample()
            await trio.sleep(self.interval)

    def high_water_mark(self) -> int:
        """The kernel's own peak (VmHWM) of the main process, which polling may miss."""
        return status_kib(self.pid).get("VmHWM", 0) * 1024
