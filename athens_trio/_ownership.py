"""Directories owned by a running process, and the sweep of those whose owner died.

A process that writes temporary things into a directory it may share with other
processes (GoGetDir, a disk storage's root) first *claims* a directory of its own there:
``<parent>/<prefix><token>/`` with a ``.owner`` file inside that it holds an exclusive
``flock`` on for as long as it runs.  The kernel drops the lock when the process dies,
``kill -9`` included, so at any later start a claim whose lock can be taken is a dead
process's, and what it owns can go, whatever its age; a live process's lock cannot be
taken, so its claim is never touched, however many instances share the parent.

A claim appears with its lock already held: it is built under a hidden name, locked,
then renamed into place (the lock follows the inode).  A sweep never sees a claim that
is not yet locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Claim", "claim", "dead_claims", "remove_if_empty", "remove_tree"]

_OWNER = ".owner"
_STAGING = ".staging-"
#: A hidden staging directory older than this whose lock is free was left by a process
#: killed in the instant between making it and renaming it.
_STAGING_ABANDONED_AFTER = 60.0


@dataclass
class Claim:
    """A directory this process owns until :meth:`release` (or its death)."""

    path: Path
    token: str
    _fd: int

    def release(self) -> None:
        """Remove the directory and everything in it, then let the lock go."""
        if self._fd < 0:
            return
        try:
            remove_tree(self.path)
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def claim(parent: Path, prefix: str) -> Claim:
    """Claim a new directory ``<parent>/<prefix><token>`` (mode 0700)."""
    token = secrets.token_hex(8)
    staging = parent / f"{_STAGING}{prefix}{token}"
    for attempt in range(3):
        parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.mkdir(mode=0o700)
            break
        except FileNotFoundError:
            # Another process removed the empty parent just now (see remove_if_empty).
            if attempt == 2:
                raise
    fd = os.open(staging / _OWNER, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        final = parent / f"{prefix}{token}"
        os.replace(staging, final)  # a fresh token: nothing is there to replace
    except BaseException:
        os.close(fd)
        remove_tree(staging)
        raise
    return Claim(final, token, fd)


@contextlib.contextmanager
def _lock_if_free(directory: Path) -> Iterator[bool]:
    """Whether ``directory``'s owner is gone (its lock taken here, held in the block).
    A claim without its ``.owner`` file is one a sweep was removing: gone too."""
    try:
        fd = os.open(directory / _OWNER, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True
        return
    except OSError:
        yield False  # not ours to judge (another user's): left alone
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def dead_claims(parent: Path, prefix: str, *, remove: bool = True) -> list[str]:
    """The tokens of the claims under ``parent`` whose owner is gone; with ``remove``
    their directories go (under their lock: no two sweeps remove one twice)."""
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return []
    dead: list[str] = []
    for name in names:
        directory = parent / name
        if name.startswith(prefix) and directory.is_dir():
            with _lock_if_free(directory) as free:
                if free:
                    dead.append(name[len(prefix) :])
                    if remove:
                        remove_tree(directory)
        elif name.startswith(f"{_STAGING}{prefix}") and remove:
            with _lock_if_free(directory) as free, contextlib.suppress(OSError):
                if free and directory.stat().st_mtime < time.time() - _STAGING_ABANDONED_AFTER:
                    remove_tree(directory)
    return dead


def remove_if_empty(directory: Path) -> None:
    """Remove ``directory`` if nothing is in it (another process's claim keeps it)."""
    with contextlib.suppress(OSError):
        directory.rmdir()


def remove_tree(directory: Path) -> None:
    """rmtree that also removes the module cache, which go makes read-only: every
    directory gets its owner's write bit back first (files need none to be unlinked)."""
    for parent, _dirs, _files in os.walk(directory):
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
    shutil.rmtree(directory, ignore_errors=True)
