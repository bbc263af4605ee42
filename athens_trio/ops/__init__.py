"""Operators' tools over storage and the pipeline: warming a project's module graph
(``_warm``), offline bundles (``_bundle``), retention (``_retention``), with their
progress shown by ``_progress``; go.mod and go.sum read by ``_gomod``."""

from __future__ import annotations

from ._activity import FLUSH_INTERVAL, LAST_SERVED_DIR, Activity, Failure, LastServed
from ._bundle import STORED, BundleStatistics, export_bundle, import_bundle, open_sum_check
from ._gomod import GoMod, Need, parse_go_mod, parse_go_sum
from ._progress import Progress, show_progress
from ._retention import (
    GcStatistics,
    Pins,
    VersionFacts,
    collect,
    disk_root,
    parse_duration,
    pins_from_file,
    version_facts,
)
from ._warm import DEFAULT_WARM_CONCURRENCY, Warm, WarmStatistics, parse_module_version

__all__ = [
    "FLUSH_INTERVAL",
    "LAST_SERVED_DIR",
    "Activity",
    "Failure",
    "GcStatistics",
    "LastServed",
    "Pins",
    "VersionFacts",
    "collect",
    "disk_root",
    "parse_duration",
    "pins_from_file",
    "version_facts",
    "STORED",
    "BundleStatistics",
    "export_bundle",
    "import_bundle",
    "open_sum_check",
    "DEFAULT_WARM_CONCURRENCY",
    "GoMod",
    "Need",
    "Progress",
    "Warm",
    "WarmStatistics",
    "parse_go_mod",
    "parse_go_sum",
    "parse_module_version",
    "show_progress",
]
