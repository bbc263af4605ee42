"""Retention: remove what no one fetched for a while, keeping what is pinned.

A version's age is the time since it was last served (the :mod:`._activity` record),
or since it was stored when it was never served (a warmed or imported version gets its
full period).  A pin file lists what is kept whatever its age, one per line: a module
path glob (``github.com/corp/*``, as GOPRIVATE's: it matches the path and everything
below it) or a ``module@version``; ``#`` starts a comment.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .._exceptions import NotFoundError
from .._module import check_canonical_version, check_path, escape_path, escape_version
from .._patterns import matches_pattern
from .._semver import sort_versions
from ..storage import Backend, DiskStorage
from ._activity import LastServed, all_recorded
from ._progress import Progress

__all__ = [
    "GcStatistics",
    "Pins",
    "VersionFacts",
    "collect",
    "disk_root",
    "parse_duration",
    "pins_from_file",
    "version_facts",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``2w``, ``30m``, ``45s`` (or a bare number of seconds)."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw]?)", text.strip())
    if not found:
        raise ValueError(f"{text!r} is not a duration such as 90d, 12h or 2w")
    return float(found[1]) * _UNITS.get(found[2] or "s", 1)


@dataclass(frozen=True)
class Pins:
    """What gc keeps whatever its age."""

    patterns: tuple[str, ...] = ()
    versions: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Pins:
        patterns: list[str] = []
        versions: set[tuple[str, str]] = set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            module, at, version = line.partition("@")
            try:
                if at:
                    check_path(module)
                    check_canonical_version(version)
                    versions.add((module, version))
                else:
                    patterns.append(module)
            except ValueError as exc:
                raise ValueError(f"pin file line {number}: {exc}") from None
        return cls(tuple(patterns), frozenset(versions))

    def keeps(self, module: str, version: str) -> bool:
        return (module, version) in self.versions or any(
            matches_pattern(p, module) for p in self.patterns
        )


@dataclass(frozen=True)
class VersionFacts:
    """What the catalog shows of a stored version (None: storage cannot tell)."""

    stored_at: float | None
    size: int | None
    has_zip: bool


def disk_root(storage: Backend) -> Path | None:
    """The root of a disk storage (None for any other backend)."""
    return storage.root if isinstance(storage, DiskStorage) else None


def version_facts(root: Path | None, module: str, version: str) -> VersionFacts:
    """Stored-at (the ``.info``'s time) and size (go.mod and zip) of a version in the disk
    storage at ``root`` (blocking); other storage (``root`` None) knows neither."""
    if root is None:
        return VersionFacts(None, None, False)
    stem = root / escape_path(module) / "@v" / escape_version(version)
    try:
        stored_at = stem.with_name(stem.name + ".info").stat().st_mtime
    except OSError:
        return VersionFacts(None, None, False)
    size, has_zip = 0, False
    for suffix in (".mod", ".zip"):
        try:
            size += stem.with_name(stem.name + suffix).stat().st_size
            has_zip = has_zip or suffix == ".zip"
        except OSError:
            pass
    return VersionFacts(stored_at, size, has_zip)


@dataclass
class GcStatistics:
    """How a gc went (a running tally)."""

    total: int = 0
    done: int = 0
    kept: int = 0
    pinned: int = 0
    #: Removed (with --dry-run: would be), ``module@version``, oldest use first.
    removed: list[str] = field(default_factory=list)
    #: Of them, how many bytes.
    removed_bytes: int = 0

    def progress(self) -> Progress:
        return Progress(self.done, self.total, f"{len(self.removed)} unused, {self.kept} kept")


async def collect(
    storage: Backend,
    root: Path | None,
    last_served: LastServed,
    *,
    unused_for: float,
    now: float,
    pins: Pins,
    dry_run: bool,
    stats: GcStatistics,
) -> GcStatistics:
    """Remove every version neither served nor stored within ``unused_for`` seconds
    before ``now``, unless pinned (``dry_run``: only count them).  ``root`` is the disk
    storage's, where the stored-at times are (None: every version counts as just
    stored).  A removal takes the version's ``.info`` first: never seen half there."""
    entries = [entry async for entry in storage.catalog()]
    recorded = (
        await trio.to_thread.run_sync(all_recorded, last_served.directory)
        if last_served.directory is not None
        else {}
    )
    stats.total = len(entries)
    unused: list[tuple[float, str, str, int]] = []
    for module, version in entries:
        facts = await trio.to_thread.run_sync(version_facts, root, module, version)
        last = max(recorded.get((module, version), 0.0), facts.stored_at or now)
        if pins.keeps(module, version):
            stats.pinned += 1
            stats.kept += 1
        elif now - last >= unused_for:
            unused.append((last, module, version, facts.size or 0))
        else:
            stats.kept += 1
        stats.done += 1
    deleted: dict[str, list[str]] = defaultdict(list)
    for _last, module, version, size in sorted(unused):
        if not dry_run:
            # Read again just before: a run is long, and a version served since it
            # began (by a server flushing its marks) is in use again.
            served = (await last_served.served(module)).get(version, 0.0)
            if now - served < unused_for:
                stats.kept += 1
                continue
            with contextlib.suppress(NotFoundError):  # removed meanwhile: gone either way
                await storage.delete(module, version)
            deleted[module].append(version)
        stats.removed.append(f"{module}@{version}")
        stats.removed_bytes += size
    for module, versions in deleted.items():
        await last_served.forget(module, sort_versions(versions))
    return stats


def pins_from_file(path: Path | None) -> Pins:
    """The pins in ``path`` (none if None); ValueError/OSError if it is unreadable."""
    return Pins.parse(path.read_text()) if path is not None else Pins()
