"""``python -m athens_trio``: the ``athens-trio`` command."""

from __future__ import annotations

from ._cli import entry

raise SystemExit(entry())
