"""Whether a file's bytes are in the page cache, so the event loop may send them.

``sendfile(2)`` hands a file's pages to the socket with no copy through Python, but if a
page is not in memory it waits for the disk, on the event loop, stalling every other
connection.  ``cachestat(2)`` (Linux 6.5) answers in one call how many pages of a range
are cached: when all are, the loop sends them; otherwise the caller reads in a thread.
Where the call does not exist (an older kernel, another system) every answer is "no",
once and for all, and zips are read as before.

Opening a file is on the loop too, for a zip served before: on a local filesystem its
path's lookup is in the kernel's caches.  On a network one (NFS revalidates every open
with its server) it would be a round trip, so there nothing is opened on the loop:
:func:`on_local_filesystem` tells, once, from the mount table.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from pathlib import Path

__all__ = ["entirely_cached", "on_local_filesystem"]

# cachestat's number in the generic system call table, which every architecture Linux
# added it to after 6.5 shares.
_SYS_CACHESTAT = 451
_PAGE = 4096


class _Range(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint64), ("length", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [
        ("nr_cache", ctypes.c_uint64),
        ("nr_dirty", ctypes.c_uint64),
        ("nr_writeback", ctypes.c_uint64),
        ("nr_evicted", ctypes.c_uint64),
        ("nr_recently_evicted", ctypes.c_uint64),
    ]


class _CacheStat:
    def __init__(self) -> None:
        self.available = sys.platform == "linux"
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall if self.available else None

    def entirely_cached(self, fd: int, offset: int, count: int) -> bool:
        if not self.available or count <= 0 or self._syscall is None:
            return False
        first = offset // _PAGE
        pages = (offset + count + _PAGE - 1) // _PAGE - first
        wanted = _Range(first * _PAGE, pages * _PAGE)
        stat = _Stat()
        if self._syscall(_SYS_CACHESTAT, fd, ctypes.byref(wanted), ctypes.byref(stat), 0) != 0:
            if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):  # no such call (or seccomp)
                self.available = False
            return False
        return bool(stat.nr_cache >= pages)


_cachestat = _CacheStat()


def entirely_cached(fd: int, offset: int, count: int) -> bool:
    """Whether every page of bytes ``[offset, offset + count)`` of ``fd`` is in memory
    (False where that cannot be told)."""
    return _cachestat.entirely_cached(fd, offset, count)


#: Filesystem types whose opens and reads may go over a network (``fuse``: whatever it
#: is, it is a process away).  Any other is taken as local.
_NETWORK = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "afs"}
    | {"gpfs", "beegfs", "virtiofs", "fuse", "fuseblk", "sshfs", "davfs"}
)


def on_local_filesystem(path: Path, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether ``path`` lies on a local filesystem (False when that cannot be told)."""
    try:
        target = os.path.realpath(path)
        with open(mountinfo, encoding="utf-8", errors="replace") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return False
    best, fstype = "", ""
    for line in lines:
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, line.split(" - ", 1)[1].split(" ", 1)[0]
    return bool(best) and fstype.split(".", 1)[0] not in _NETWORK
