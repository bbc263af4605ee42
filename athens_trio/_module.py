"""Module paths and versions as the go command sees them: a port of golang.org/x/mod/module.

Every request's module path and version passes through here before anything else acts on
it, so these rules are also what keeps hostile input out of storage keys and file names.
The ports are faithful to ``CheckPath``, ``SplitPathVersion``, ``CheckPathMajor``,
``CanonicalVersion``, ``EscapePath``/``UnescapePath``, ``EscapeVersion``/
``UnescapeVersion`` and the pseudo-version helpers, except where we are deliberately
stricter than Go:

* A module path is at most :data:`MAX_PATH_BYTES` (1024) bytes, and each element of its
  *escaped* form at most :data:`MAX_ESCAPED_ELEMENT_BYTES` (255) bytes, because each
  escaped element becomes a directory name and most file systems stop at 255 bytes.
* A version or version query may use only ASCII letters, digits and ``. - + _ ~``. Go
  accepts any valid file name element, which adds spaces, Unicode letters and
  ``! # $ % & ( ) , = @ [ ] ^ { }``; no semantic version, pseudo-version, commit hash or
  sensible branch name needs them, and each is a quoting hazard somewhere (shells, URLs,
  object store keys).
* A version may not start with ``-`` (it would read as an option to ``go`` or ``git``) or
  ``.`` (a hidden file, and ``..`` is a parent directory). Go forbids only ``.``/``..``.
* An escaped version is at most :data:`MAX_ESCAPED_VERSION_BYTES` (250) bytes, so that
  ``<version>.info`` and friends still fit in a 255-byte file name.
* Python strings are code points, not bytes: a string holding a lone surrogate (what
  ``surrogateescape`` makes of undecodable bytes) counts as invalid UTF-8.
* :func:`pseudo_version_time` cannot represent year 0000, which Go's ``time`` can; such a
  pseudo-version's time is reported as malformed.

Errors are :class:`~athens_trio._exceptions.InvalidPathError` and
:class:`~athens_trio._exceptions.InvalidVersionError`; their messages quote the offending
input with :func:`repr`, cut to :data:`_QUOTE_LIMIT` characters, so a hostile request
cannot smuggle control characters into, or blow up, a log line.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable
from datetime import UTC, datetime

from athens_trio import _semver
from athens_trio._exceptions import InvalidPathError, InvalidVersionError

__all__ = [
    "MAX_ESCAPED_ELEMENT_BYTES",
    "MAX_ESCAPED_VERSION_BYTES",
    "MAX_PATH_BYTES",
    "canonical_version",
    "check_canonical_version",
    "check_module_version",
    "check_path",
    "check_path_major",
    "check_version_query",
    "escape_path",
    "escape_version",
    "is_canonical_version",
    "is_pseudo_version",
    "match_path_major",
    "pseudo_version_base",
    "pseudo_version_rev",
    "pseudo_version_time",
    "split_path_version",
    "unescape_path",
    "unescape_version",
]

MAX_PATH_BYTES = 1024
"""Longest module path accepted, in bytes (Go has no limit)."""

MAX_ESCAPED_ELEMENT_BYTES = 255
"""Longest element of an escaped module path, in bytes: it becomes a directory name."""

MAX_ESCAPED_VERSION_BYTES = 250
"""Longest escaped version, in bytes: it becomes a file name with a suffix like ``.info``."""

_QUOTE_LIMIT = 100

# Reserved device names on Windows; a path element whose part before the first dot is
# one of these, in any case, cannot be a file or directory name there.
_BAD_WINDOWS_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{digit}" for digit in range(1, 10)]
    + [f"LPT{digit}" for digit in range(1, 10)]
)

# Module path elements: ASCII letters and digits plus "-._~" (Go's modPathOK).
_MODULE_PATH_CHARS = frozenset(string.ascii_letters + string.digits + "-._~")
# The first element is a domain name, lower case to avoid case ambiguity (firstPathOK).
_FIRST_ELEMENT_CHARS = frozenset(string.ascii_lowercase + string.digits + "-.")
# Versions and queries: our own, stricter replacement for Go's fileNameOK.
_VERSION_CHARS = frozenset(string.ascii_letters + string.digits + ".-+_~")

_UPPERCASE = re.compile("[A-Z]")

# Go's pseudoVersionRE. re.ASCII keeps \d to 0-9 as in RE2, and fullmatch stands in for
# ^...$ because Python's $ also matches before a trailing newline.
_PSEUDO_VERSION = re.compile(
    r"v[0-9]+\.(0\.0-|\d+\.\d+-([^+]*\.)?0\.)\d{14}-[A-Za-z0-9]+"
    r"(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?",
    re.ASCII,
)


def _quote(text: str) -> str:
    """Quote untrusted *text* for an error message: escaped by repr and cut short."""
    if len(text) <= _QUOTE_LIMIT:
        return repr(text)
    return f"{text[:_QUOTE_LIMIT]!r}... ({len(text)} characters)"


# ---------------------------------------------------------------------------------------
# Module paths
# ---------------------------------------------------------------------------------------


def _windows_short_name(element: str) -> str:
    dot = element.find(".")
    return element if dot < 0 else element[:dot]


def _element_problem(
    element: str,
    *,
    char_ok: Callable[[str], bool],
    check_short_names: bool,
    upper: Callable[[str], str] = str.upper,
) -> str:
    """Return why *element* is not a valid path element, or ``""`` (Go's checkElem).

    *char_ok* says which characters may appear; *check_short_names* rejects a trailing
    tilde and digits, which look like Windows 8.3 short names (Go skips that for file
    names); *upper* is the case folding the Windows device names are compared under
    (plain ``str.upper`` where only ASCII passes *char_ok*; a module zip's file names,
    ``_modzip``, fold as go's EqualFold).  The leading-dot rule differs between
    callers, so they apply it themselves.
    """
    if not element:
        return "empty path element"
    if element.count(".") == len(element):
        return f"invalid path element {_quote(element)}"
    if element[-1] == ".":
        return "trailing dot in path element"
    for char in element:
        if not char_ok(char):
            return f"invalid char {_quote(char)}"
    short = _windows_short_name(element)
    if upper(short) in _BAD_WINDOWS_NAMES:
        return f"{_quote(short)} disallowed as path element component on Windows"
    if check_short_names:
        tilde = short.rfind("~")
        if 0 <= tilde < len(short) - 1 and all("0" <= c <= "9" for c in short[tilde + 1 :]):
            return "trailing tilde and digits in path element"
    return ""


def _path_problem(path: str) -> str:
    """Return why *path* is not a valid module path, or ``""`` (Go's CheckPath, and more)."""
    # Cheap bound first, so that a huge hostile string costs nothing more to refuse.
    if len(path) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"
    # A request's path is checked at each layer it crosses (a dozen times for a miss);
    # the answer depends on the string alone, and the same modules come back all day.
    # Only ASCII is kept (a valid path is ASCII): at most MAX_PATH_BYTES per entry.
    if path.isascii():
        return _cached_path_problem(path)
    return _checked_path_problem(path)


def _checked_path_problem(path: str) -> str:
    try:
        path_bytes = path.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid UTF-8"
    if len(path_bytes) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"

    # Go's checkPath(path, modulePath).
    if not path:
        return "empty string"
    if path[0] == "-":
        return "leading dash"
    if "//" in path:
        return "double slash"
    if path[-1] == "/":
        return "trailing slash"
    elements = path.split("/")
    for element in elements:
        problem = _element_problem(
            element, char_ok=_MODULE_PATH_CHARS.__contains__, check_short_names=True
        )
        if problem:
            return problem
        if element[0] == ".":
            return "leading dot in path element"

    # CheckPath's rules for the first element, a domain name.
    # (Go's "leading slash" test here is unreachable: the empty first element failed above.)
    first = elements[0]
    if "." not in first:
        return "missing dot in first path element"
    if first[0] == "-":
        return "leading dash in first path element"
    for char in first:
        if char not in _FIRST_ELEMENT_CHARS:
            return f"invalid char {_quote(char)} in first path element"
    if not split_path_version(path)[2]:
        return "invalid version"

    # Ours: each escaped element becomes a directory name. Escaping adds a "!" per
    # upper-case letter, and the path is ASCII by now, so characters are bytes.
    for element in elements:
        escaped_length = len(element) + len(_UPPERCASE.findall(element))
        if escaped_length > MAX_ESCAPED_ELEMENT_BYTES:
            return f"escaped path element longer than {MAX_ESCAPED_ELEMENT_BYTES} bytes"
    return ""


_cached_path_problem = functools.lru_cache(maxsize=4096)(_checked_path_problem)


def check_path(path: str) -> None:
    """Check that *path* is a valid module path, or raise :class:`InvalidPathError`.

    This is ``module.CheckPath``: slash-separated elements of ASCII letters, digits and
    ``-._~``, none empty, all dots, or starting or ending with a dot, none a Windows
    device name or ending in ``~`` and digits; the first element is a lower-case domain
    name with a dot in it; a final ``/vN`` (or gopkg.in ``.vN``) must be well formed.
    Also at most :data:`MAX_PATH_BYTES` bytes, and :data:`MAX_ESCAPED_ELEMENT_BYTES` per
    escaped element.
    """
    problem = _path_problem(path)
    if problem:
        raise InvalidPathError(f"malformed module path {_quote(path)}: {problem}")


def split_path_version(path: str) -> tuple[str, str, bool]:
    """Split *path* into ``(prefix, path_major, ok)`` with ``prefix + path_major == path``.

    ``path_major`` is ``""`` or ``"/vN"`` with N >= 2; for gopkg.in paths it is ``".vN"``
    for any N (optionally followed by ``-unstable``), which gopkg.in paths require. *ok*
    is false for a final element that looks like a malformed major version, such as
    ``/v1``, ``/v0``, ``/v02`` or ``/v1.2`` (``module.SplitPathVersion``).
    """
    if path.startswith("gopkg.in/"):
        return _split_gopkg_in(path)

    index = len(path)
    saw_dot = False
    while index > 0 and ("0" <= path[index - 1] <= "9" or path[index - 1] == "."):
        if path[index - 1] == ".":
            saw_dot = True
        index -= 1
    if index <= 1 or index == len(path) or path[index - 1] != "v" or path[index - 2] != "/":
        return path, "", True
    prefix, path_major = path[: index - 2], path[index - 2 :]
    if saw_dot or len(path_major) <= 2 or path_major[2] == "0" or path_major == "/v1":
        return path, "", False
    return prefix, path_major, True


def _split_gopkg_in(path: str) -> tuple[str, str, bool]:
    if not path.startswith("gopkg.in/"):
        return path, "", False
    index = len(path)
    if path.endswith("-unstable"):
        index -= len("-unstable")
    while index > 0 and "0" <= path[index - 1] <= "9":
        index -= 1
    if index <= 1 or path[index - 1] != "v" or path[index - 2] != ".":
        # Every gopkg.in path ends in .vN for some N.
        return path, "", False
    prefix, path_major = path[: index - 2], path[index - 2 :]
    if len(path_major) <= 2 or (path_major[2] == "0" and path_major != ".v0"):
        return path, "", False
    return prefix, path_major, True


def check_path_major(version: str, path_major: str) -> None:
    """Check that *version* fits the path's major suffix, or raise :class:`InvalidVersionError`.

    ``module.CheckPathMajor``: a path without a suffix takes v0, v1, or any major version
    marked ``+incompatible``; ``/vN`` and ``.vN`` take exactly vN; gopkg.in ``.v1`` also
    takes the ``v0.0.0-`` pseudo-versions that early vgo generated for it.
    """
    if path_major.startswith(".v") and path_major.endswith("-unstable"):
        path_major = path_major.removesuffix("-unstable")
    if version.startswith("v0.0.0-") and path_major == ".v1":
        return
    version_major = _semver.major(version)
    if path_major == "":
        if version_major in ("v0", "v1") or _semver.build(version) == "+incompatible":
            return
        expected = "v0 or v1"
    elif path_major[0] in "/.":
        if version_major == path_major[1:]:
            return
        expected = path_major[1:]
    else:
        expected = path_major
    raise InvalidVersionError(
        f"invalid version {_quote(version)}: should be {expected}, not {version_major or '?'}"
    )


def match_path_major(version: str, path_major: str) -> bool:
    """Report whether :func:`check_path_major` accepts *version* for *path_major*."""
    try:
        check_path_major(version, path_major)
    except InvalidVersionError:
        return False
    return True


def check_module_version(path: str, version: str) -> None:
    """Check a path and semantic version pair as ``module.Check`` does.

    The path must be valid (:class:`InvalidPathError` otherwise); the version must be a
    semantic version whose major version fits the path (:class:`InvalidVersionError`).
    """
    check_path(path)
    if not _semver.is_valid(version):
        raise InvalidVersionError(f"invalid version {_quote(version)}: not a semantic version")
    check_path_major(version, split_path_version(path)[1])


# ---------------------------------------------------------------------------------------
# Case escaping
# ---------------------------------------------------------------------------------------


def _escape_string(text: str) -> str:
    # Callers have checked text: ASCII and no "!", so the encoding is unambiguous.
    return _UPPERCASE.sub(lambda match: "!" + match.group().lower(), text)


def _unescape_string(escaped: str) -> str | None:
    """Undo :func:`_escape_string`, or return None if *escaped* is not in escaped form."""
    chars: list[str] = []
    after_bang = False
    for char in escaped:
        if char >= "\x80":
            return None
        if after_bang:
            after_bang = False
            if not "a" <= char <= "z":
                return None
            chars.append(char.upper())
        elif char == "!":
            after_bang = True
        elif "A" <= char <= "Z":
            # An upper-case letter must be written "!" + lower case, never raw.
            return None
        else:
            chars.append(char)
    if after_bang:
        return None
    return "".join(chars)


def escape_path(path: str) -> str:
    """Return the case-escaped form of module path *path* (``module.EscapePath``).

    Each upper-case letter becomes ``!`` and its lower case, so
    ``"github.com/Azure"`` becomes ``"github.com/!azure"``. Raises
    :class:`InvalidPathError` if *path* is not valid.
    """
    check_path(path)
    return _escape_string(path)


def unescape_path(escaped: str) -> str:
    """Return the module path that *escaped* encodes (``module.UnescapePath``).

    Raises :class:`InvalidPathError` for a ``!`` not followed by a lower-case ASCII
    letter, a raw upper-case letter, a non-ASCII character, or a decoded path that
    :func:`check_path` refuses.
    """
    # An escaped path is at most twice as long as a valid path can be.
    if len(escaped) > 2 * MAX_PATH_BYTES:
        raise InvalidPathError(
            f"invalid escaped module path {_quote(escaped)}: longer than {MAX_PATH_BYTES} bytes"
        )
    path = _unescape_string(escaped)
    if path is None:
        raise InvalidPathError(f"invalid escaped module path {_quote(escaped)}")
    problem = _path_problem(path)
    if problem:
        raise InvalidPathError(f"invalid escaped module path {_quote(escaped)}: {problem}")
    return path


def _version_problem(version: str) -> str:
    """Return why *version* may not be asked for or stored, or ``""``."""
    # Go: EscapeVersion's checkElem(v, filePath) and its ban on "!"; here with a
    # narrower character set, so "!" is already out.
    if len(version) > MAX_ESCAPED_VERSION_BYTES:
        return f"longer than {MAX_ESCAPED_VERSION_BYTES} bytes"
    problem = _element_problem(
        version, char_ok=_VERSION_CHARS.__contains__, check_short_names=False
    )
    if problem:
        return problem
    # Ours: "-" would read as a command-line option, "." as a hidden or parent name.
    if version[0] in "-.":
        return f"leading {_quote(version[0])}"
    escaped_length = len(version) + len(_UPPERCASE.findall(version))
    if escaped_length > MAX_ESCAPED_VERSION_BYTES:
        return f"escaped form longer than {MAX_ESCAPED_VERSION_BYTES} bytes"
    return ""


def check_version_query(version: str) -> None:
    """Check what a client may ask for as a version, or raise :class:`InvalidVersionError`.

    Anything the go command can put in ``@v/<version>.info`` passes: canonical and
    shorthand semantic versions, pseudo-versions, commit hashes, branch and tag names,
    ``latest``, ``upgrade``. It must be a valid file name element of ASCII letters,
    digits and ``.-+_~``, not start with ``-`` or ``.``, not end with ``.``, not be a
    Windows device name, and escape to at most :data:`MAX_ESCAPED_VERSION_BYTES` bytes.
    """
    problem = _version_problem(version)
    if problem:
        raise InvalidVersionError(f"invalid version {_quote(version)}: {problem}")


def escape_version(version: str) -> str:
    """Return the case-escaped form of *version* (``module.EscapeVersion``, stricter).

    ``"v1.0.0-RC1"`` becomes ``"v1.0.0-!r!c1"``. Raises :class:`InvalidVersionError`
    for anything :func:`check_version_query` refuses.
    """
    check_version_query(version)
    return _escape_string(version)


def unescape_version(escaped: str) -> str:
    """Return the version that *escaped* encodes (``module.UnescapeVersion``, stricter).

    Raises :class:`InvalidVersionError` for a malformed escape or a decoded version that
    :func:`check_version_query` refuses.
    """
    if len(escaped) > MAX_ESCAPED_VERSION_BYTES:
        raise InvalidVersionError(
            f"invalid escaped version {_quote(escaped)}: "
            f"longer than {MAX_ESCAPED_VERSION_BYTES} bytes"
        )
    version = _unescape_string(escaped)
    if version is None:
        raise InvalidVersionError(f"invalid escaped version {_quote(escaped)}")
    problem = _version_problem(version)
    if problem:
        raise InvalidVersionError(f"invalid escaped version {_quote(escaped)}: {problem}")
    return version


# ---------------------------------------------------------------------------------------
# Canonical versions
# ---------------------------------------------------------------------------------------


def canonical_version(version: str) -> str:
    """Return the canonical form of *version*, keeping ``+incompatible``.

    ``module.CanonicalVersion``: like :func:`athens_trio._semver.canonical`, which drops
    all other build metadata, and ``""`` for an invalid version.
    """
    canonical = _semver.canonical(version)
    if _semver.build(version) == "+incompatible":
        canonical += "+incompatible"
    return canonical


def is_canonical_version(version: str) -> bool:
    """Report whether *version* is a valid version in canonical form.

    That is what ``.mod`` and ``.zip`` requests need: ``v1.2.3``, ``v1.2.3-pre``,
    ``v2.0.0+incompatible``, but not ``v1.2``, ``v1.2.3+meta`` or ``master``.
    """
    return bool(version) and version == canonical_version(version)


def check_canonical_version(version: str) -> None:
    """Raise :class:`InvalidVersionError` unless *version* is an acceptable, canonical version.

    Combines :func:`check_version_query` with :func:`is_canonical_version`.
    """
    check_version_query(version)
    if not is_canonical_version(version):
        hint = canonical_version(version)
        reason = f"not canonical (use {hint!r})" if hint else "not a semantic version"
        raise InvalidVersionError(f"invalid version {_quote(version)}: {reason}")


# ---------------------------------------------------------------------------------------
# Pseudo-versions
# ---------------------------------------------------------------------------------------


def is_pseudo_version(version: str) -> bool:
    """Report whether *version* is a pseudo-version (``module.IsPseudoVersion``).

    For example ``v0.0.0-20191109021931-daa7c04131f5`` or
    ``v1.2.4-0.20191109021931-daa7c04131f5``.
    """
    return (
        version.count("-") >= 2
        and _semver.is_valid(version)
        and _PSEUDO_VERSION.fullmatch(version) is not None
    )


def _parse_pseudo_version(version: str) -> tuple[str, str, str, str]:
    """Split a pseudo-version into ``(base, timestamp, rev, build)``."""
    if not is_pseudo_version(version):
        raise InvalidVersionError(f"invalid pseudo-version {_quote(version)}: syntax error")
    build = _semver.build(version)
    rest = version[: len(version) - len(build)]
    dash = rest.rfind("-")
    rest, rev = rest[:dash], rest[dash + 1 :]
    dash = rest.rfind("-")
    dot = rest.rfind(".")
    if dot > dash:
        base, timestamp = rest[:dot], rest[dot + 1 :]  # "vX.Y.Z-pre.0" or "vX.Y.(Z+1)-0"
    else:
        base, timestamp = rest[:dash], rest[dash + 1 :]  # "vX.0.0"
    return base, timestamp, rev, build


def _decrement_decimal(decimal: str) -> str:
    """Return *decimal* minus one, or ``""`` if it is zero (Go's decDecimal)."""
    digits = list(decimal)
    index = len(digits) - 1
    while index >= 0 and digits[index] == "0":
        digits[index] = "9"
        index -= 1
    if index < 0:
        return ""
    if index == 0 and digits[index] == "1" and len(digits) > 1:
        del digits[0]
    else:
        digits[index] = chr(ord(digits[index]) - 1)
    return "".join(digits)


def pseudo_version_base(version: str) -> str:
    """Return the tagged version a pseudo-version builds on, or ``""`` if none.

    ``module.PseudoVersionBase``: ``v1.2.4-0.2006...-hash`` gives ``v1.2.3``,
    ``v1.2.3-pre.0.2006...-hash`` gives ``v1.2.3-pre``, ``v0.0.0-2006...-hash`` gives
    ``""``; build metadata such as ``+incompatible`` carries over. Raises
    :class:`InvalidVersionError` if *version* is not a pseudo-version or is inconsistent.
    """
    base, _timestamp, _rev, build = _parse_pseudo_version(version)
    base_prerelease = _semver.prerelease(base)
    if base_prerelease == "":
        # vX.0.0-yyyymmddhhmmss-hash: no tag before it. "+incompatible" here would claim
        # an incompatible parent tag that the "vX.0.0-" form says does not exist.
        if build:
            raise InvalidVersionError(
                f"invalid pseudo-version {_quote(version)}: "
                f"lacks base version, but has build metadata {build!r}"
            )
        return ""
    if base_prerelease == "-0":
        # vX.Y.(Z+1)-0.yyyymmddhhmmss-hash: the base is vX.Y.Z.
        release = base.removesuffix(base_prerelease)
        dot = release.rfind(".")
        patch = _decrement_decimal(release[dot + 1 :])
        if not patch:
            raise InvalidVersionError(
                f"invalid pseudo-version {_quote(version)}: "
                f"version before {base} would have negative patch number"
            )
        return release[: dot + 1] + patch + build
    # vX.Y.Z-pre.0.yyyymmddhhmmss-hash: the base is vX.Y.Z-pre (the pattern ends in ".0").
    return base.removesuffix(".0") + build


def pseudo_version_time(version: str) -> datetime:
    """Return the commit time (UTC) recorded in a pseudo-version (``module.PseudoVersionTime``).

    Raises :class:`InvalidVersionError` if *version* is not a pseudo-version or its
    timestamp is not a real time (month 13, February 30, and so on).
    """
    _base, timestamp, _rev, _build = _parse_pseudo_version(version)
    try:
        return datetime(
            int(timestamp[0:4]),
            int(timestamp[4:6]),
            int(timestamp[6:8]),
            int(timestamp[8:10]),
            int(timestamp[10:12]),
            int(timestamp[12:14]),
            tzinfo=UTC,
        )
    except ValueError:
        raise InvalidVersionError(
            f"invalid pseudo-version {_quote(version)}: malformed time {timestamp!r}"
        ) from None


def pseudo_version_rev(version: str) -> str:
    """Return the revision (commit hash prefix) in a pseudo-version (``module.PseudoVersionRev``).

    Raises :class:`InvalidVersionError` if *version* is not a pseudo-version.
    """
    return _parse_pseudo_version(version)[2]
