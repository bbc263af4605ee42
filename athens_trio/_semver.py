"""Semantic versions as the go command sees them: a port of golang.org/x/mod/semver.

A version here always starts with ``v``. The accepted form is::

    vMAJOR[.MINOR[.PATCH[-PRERELEASE][+BUILD]]]

MAJOR, MINOR and PATCH are decimal integers without leading zeros; PRERELEASE and BUILD
are non-empty, dot-separated identifiers of ``[0-9A-Za-z-]``, and all-numeric
PRERELEASE identifiers have no leading zeros. ``vMAJOR`` and ``vMAJOR.MINOR`` (with no
suffixes) are shorthands for ``vMAJOR.0.0`` and ``vMAJOR.MINOR.0``.

The behaviour is Go's, including its treatment of invalid versions: they compare below
every valid version and equal to each other, and every accessor returns ``""`` for them.
Go works on bytes and Python on code points; the two agree because every character this
grammar accepts is ASCII, and digit tests here are ASCII-only (``str.isdigit`` would
accept Arabic-Indic and other Unicode digits, which Go never does).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "Precedence",
    "SortKey",
    "build",
    "canonical",
    "compare",
    "is_valid",
    "major",
    "major_minor",
    "max_version",
    "prerelease",
    "sort_key",
    "sort_versions",
]


class _Parsed(NamedTuple):
    major: str
    minor: str
    patch: str
    # What canonical() appends to a shorthand: ".0.0" for vN, ".0" for vN.M, else "".
    short: str
    prerelease: str  # with its leading "-", or ""
    build: str  # with its leading "+", or ""


def _is_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _is_ident_char(char: str) -> bool:
    return "A" <= char <= "Z" or "a" <= char <= "z" or "0" <= char <= "9" or char == "-"


def _is_num(ident: str) -> bool:
    # As Go's isNum, the empty string counts as numeric.
    return all(_is_digit(char) for char in ident)


def _is_bad_num(ident: str) -> bool:
    """Report an all-digit identifier with a leading zero, which semver forbids."""
    return len(ident) > 1 and ident[0] == "0" and _is_num(ident)


def _scan_int(v: str, start: int) -> int:
    """Return the end of the decimal integer at ``v[start:]``, or -1 if there is none."""
    if start >= len(v) or not _is_digit(v[start]):
        return -1
    end = start + 1
    while end < len(v) and _is_digit(v[end]):
        end += 1
    if v[start] == "0" and end != start + 1:
        return -1
    return end


def _scan_prerelease(v: str, start: int) -> int:
    """Return the end of the ``-PRERELEASE`` at ``v[start]``, or -1 if it is malformed."""
    end = start + 1
    ident_start = end
    while end < len(v) and v[end] != "+":
        char = v[end]
        if not _is_ident_char(char) and char != ".":
            return -1
        if char == ".":
            if ident_start == end or _is_bad_num(v[ident_start:end]):
                return -1
            ident_start = end + 1
        end += 1
    if ident_start == end or _is_bad_num(v[ident_start:end]):
        return -1
    return end


def _scan_build(v: str, start: int) -> int:
    """Return the end of the ``+BUILD`` at ``v[start]``, or -1 if it is malformed."""
    end = start + 1
    ident_start = end
    while end < len(v):
        char = v[end]
        if not _is_ident_char(char) and char != ".":
            return -1
        if char == ".":
            if ident_start == end:
                return -1
            ident_start = end + 1
        end += 1
    if ident_start == end:
        return -1
    return end


def _parse(v: str) -> _Parsed | None:
    if not v or v[0] != "v":
        return None
    end = _scan_int(v, 1)
    if end < 0:
        return None
    major_part = v[1:end]
    if end == len(v):
        return _Parsed(major_part, "0", "0", ".0.0", "", "")
    if v[end] != ".":
        return None

    start = end + 1
    end = _scan_int(v, start)
    if end < 0:
        return None
    minor_part = v[start:end]
    if end == len(v):
        return _Parsed(major_part, minor_part, "0", ".0", "", "")
    if v[end] != ".":
        return None

    start = end + 1
    end = _scan_int(v, start)
    if end < 0:
        return None
    patch_part = v[start:end]

    position = end
    prerelease_part = ""
    if position < len(v) and v[position] == "-":
        end = _scan_prerelease(v, position)
        if end < 0:
            return None
        prerelease_part = v[position:end]
        position = end
    build_part = ""
    if position < len(v) and v[position] == "+":
        end = _scan_build(v, position)
        if end < 0:
            return None
        build_part = v[position:end]
        position = end
    if position != len(v):
        return None
    return _Parsed(major_part, minor_part, patch_part, "", prerelease_part, build_part)


def is_valid(v: str) -> bool:
    """Report whether *v* is a valid semantic version string (``semver.IsValid``)."""
    return _parse(v) is not None


def canonical(v: str) -> str:
    """Return the canonical form of *v*, or ``""`` if it is invalid (``semver.Canonical``).

    Missing ``.MINOR``/``.PATCH`` are filled in and build metadata is dropped, so
    ``canonical("v1.2") == "v1.2.0"`` and ``canonical("v1.2.3+meta") == "v1.2.3"``.
    """
    parsed = _parse(v)
    if parsed is None:
        return ""
    if parsed.build:
        return v[: len(v) - len(parsed.build)]
    return v + parsed.short


def major(v: str) -> str:
    """Return the major version prefix, ``major("v2.1.0") == "v2"``; ``""`` if invalid."""
    parsed = _parse(v)
    if parsed is None:
        return ""
    return v[: 1 + len(parsed.major)]


def major_minor(v: str) -> str:
    """Return the ``vMAJOR.MINOR`` prefix, ``major_minor("v2") == "v2.0"``; ``""`` if invalid."""
    parsed = _parse(v)
    if parsed is None:
        return ""
    minor_start = 1 + len(parsed.major)
    minor_end = minor_start + 1 + len(parsed.minor)
    if (
        minor_end <= len(v)
        and v[minor_start] == "."
        and v[minor_start + 1 : minor_end] == parsed.minor
    ):
        return v[:minor_end]
    return v[:minor_start] + "." + parsed.minor


def prerelease(v: str) -> str:
    """Return the ``-PRERELEASE`` suffix (with its dash), or ``""``."""
    parsed = _parse(v)
    return "" if parsed is None else parsed.prerelease


def build(v: str) -> str:
    """Return the ``+BUILD`` suffix (with its plus sign), or ``""``."""
    parsed = _parse(v)
    return "" if parsed is None else parsed.build


#: A version's semver precedence: what :func:`compare` compares (build metadata and
#: the spelling of a shorthand are not part of it).
Precedence = tuple[int, tuple[int, int, int], int, tuple[tuple[int, int, str], ...]]
#: A version's place in ``semver.Sort`` order: its precedence, then its spelling.
SortKey = tuple[Precedence, str]


def _prerelease_key(pre: str) -> tuple[tuple[int, int, str], ...]:
    # semver.org: identifiers compare left to right, numerically when both are numbers
    # (no leading zeros, so value order is Go's length-then-bytes order), numbers below
    # alphanumerics, otherwise in ASCII order; a longer list wins once one runs out.
    return tuple(
        (0, int(ident), "") if _is_num(ident) else (1, 0, ident) for ident in pre[1:].split(".")
    )


def _precedence(v: str) -> Precedence:
    parsed = _parse(v)
    if parsed is None:
        return (0, (0, 0, 0), 0, ())  # below every valid version, equal to each other
    # A version without a prerelease (1) is greater than every prerelease of it (0).
    return (
        1,
        (int(parsed.major), int(parsed.minor), int(parsed.patch)),
        0 if parsed.prerelease else 1,
        _prerelease_key(parsed.prerelease) if parsed.prerelease else (),
    )


def compare(v: str, w: str) -> int:
    """Compare two versions by semver precedence: -1 if v < w, 0 if equal, +1 if v > w.

    An invalid version is less than every valid one, and all invalid versions are equal.
    Build metadata is ignored, so ``compare("v1.0.0+a", "v1.0.0+b") == 0``.
    """
    x, y = _precedence(v), _precedence(w)
    return (x > y) - (x < y)


def max_version(v: str, w: str) -> str:
    """Canonicalize both versions and return the greater (``semver.Max``).

    On a tie the second wins, as in Go; if both are invalid the result is ``""``.
    """
    v = canonical(v)
    w = canonical(w)
    return v if compare(v, w) > 0 else w


def sort_key(v: str) -> SortKey:
    """A key that orders versions as ``semver.Sort`` does: by :func:`compare`, then as
    strings (Go's bytes order is code point order in UTF-8); invalid versions first.
    Each version is parsed once, however many it is compared with."""
    return (_precedence(v), v)


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Return *versions* sorted as ``semver.Sort`` does: by :func:`compare`, then as strings.

    Invalid versions come first, among themselves in string order.
    """
    return sorted(versions, key=sort_key)
