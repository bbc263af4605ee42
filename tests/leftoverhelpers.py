"""What the leftovers and soak tests share: a host that stalls every fetch, and the
processes a server started (each go runs as the leader of its own session, under the
reaper, so a server's children are the sessions to watch)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from .gofixtures import GoFixtures
from .helpers import fixture_env_vars

__all__ = [
    "STALLED_PREFIX",
    "children",
    "parent",
    "session_members",
    "stalled_env_vars",
    "stalled_host",
]

#: Module paths under this prefix are fetched from the stalled host.
STALLED_PREFIX = "github.com/stalled-host/"


@contextlib.contextmanager
def stalled_host() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def stalled_env_vars(fixtures: GoFixtures, port: int) -> str:
    """ATHENS_GO_BINARY_ENV_VARS for the fixtures, with :data:`STALLED_PREFIX` modules'
    repositories on the stalled ``port`` (git's longest insteadOf wins)."""
    return fixture_env_vars(
        fixtures,
        GIT_CONFIG_COUNT="3",
        GIT_CONFIG_KEY_2=f"url.http://127.0.0.1:{port}/.insteadOf",
        GIT_CONFIG_VALUE_2=f"https://{STALLED_PREFIX}",
    )


def _stat_fields(pid: str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None  # gone meanwhile


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat_fields(entry) if entry.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def parent(pid: int) -> int | None:
    """The parent of ``pid``, or None if it is gone."""
    fields = _stat_fields(str(pid))
    return None if fields is None else int(fields[1])


def session_members(sessions: Iterable[int]) -> list[tuple[int, str]]:
    """The live (not zombie) processes of these sessions: (pid, command line)."""
    wanted = set(sessions)
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat_fields(entry) if entry.isdigit() else None
        if fields is None or int(fields[3]) not in wanted or fields[0] in ("Z", "X"):
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        found.append((int(entry), command.decode(errors="replace").strip()))
    return found
