"""Prefetch: the go.mod parts a client walking a module graph will ask for next, fetched
while it reads the go.mod that names them."""

from __future__ import annotations

from ._gomod import GoMod, parse_go_mod
from ._prefetcher import Prefetcher, PrefetchStatistics, with_prefetch

__all__ = ["GoMod", "PrefetchStatistics", "Prefetcher", "parse_go_mod", "with_prefetch"]
