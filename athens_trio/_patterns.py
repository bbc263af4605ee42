"""Module path patterns as GOPRIVATE, GONOSUMDB and Athens' DownloadMode use them.

A pattern matches a module path when it matches (with ``path.Match`` globbing: ``*``
and ``?`` never cross a ``/``) the path's first as-many-elements as the pattern has:
``github.com/corp`` and ``github.com/*`` both match ``github.com/corp/tool/v2``.
"""

from __future__ import annotations

import functools
import re

__all__ = ["matches_any", "matches_pattern"]


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append(f"[{body}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


def matches_pattern(pattern: str, module: str) -> bool:
    """Whether ``module``'s leading elements match the glob ``pattern``."""
    elements = pattern.count("/") + 1
    parts = module.split("/")
    if len(parts) < elements:
        return False
    try:
        return _compile(pattern).fullmatch("/".join(parts[:elements])) is not None
    except re.error:
        return False  # a malformed class: Go's path.Match reports ErrBadPattern, no match


def matches_any(patterns: list[str] | tuple[str, ...], module: str) -> bool:
    return any(matches_pattern(p, module) for p in patterns if p)


def split_patterns(value: str) -> tuple[str, ...]:
    """The globs of a GOPRIVATE-style list (GONOPROXY, GONOSUMDB): comma-separated,
    a trailing slash ignored, empty entries skipped, as go reads them."""
    return tuple(p.rstrip("/") for p in value.split(",") if p.rstrip("/"))
