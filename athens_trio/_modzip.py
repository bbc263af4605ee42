"""The structure go requires of a module zip before it accepts one (golang.org/x/mod/zip).

go checks every zip it downloads from a proxy (``CheckZip``) before it hashes or unzips
it; a zip taken from an upstream GOPROXY must pass the same rules here, or a zip no go
client can unzip would be stored for good (storage never replaces a version):

* every entry's name starts with ``<module>@<version>/``, exactly;
* the rest of the name is clean (no ``.``/``..`` elements, doubled or leading slashes)
  and a valid file path (``module.CheckFilePath``): valid UTF-8, elements of letters,
  digits and ``!#$%&()+,-.=@[]^_{}~`` and space, none all dots, ending in a dot, or a
  Windows device name;
* no two names are equal under case folding, and no name is both a file and a directory;
* ``go.mod`` appears only at the root, spelled in lower case;
* files are stored or deflated, the only methods go's archive/zip reads;
* the zip, and the declared uncompressed sizes of its files together, are at most
  :data:`MAX_ZIP_FILE` bytes; ``go.mod`` and ``LICENSE`` at most :data:`MAX_GO_MOD` and
  :data:`MAX_LICENSE` bytes.

Only the central directory is read, so checking costs no decompression; what the check
bounds (the declared sizes) is what :func:`~athens_trio._ziphash.zip_h1` then holds
every member to.
"""

from __future__ import annotations

import os
import posixpath
import unicodedata
import zipfile
from collections.abc import Iterable

# One path-element check for module paths and file paths, as go's checkElem is one.
from ._module import _QUOTE_LIMIT, _quote
from ._module import _element_problem as _checked_element
from ._ziphash import raw_name

__all__ = [
    "MAX_GO_MOD",
    "MAX_LICENSE",
    "MAX_ZIP_FILE",
    "InvalidModuleZipError",
    "check_module_zip",
    "check_zip_entries",
]

MAX_ZIP_FILE = 500 << 20
"""Largest module zip, and largest total uncompressed size of its files (go's MaxZipFile)."""

MAX_GO_MOD = 16 << 20
"""Largest go.mod in a module zip (go's MaxGoMod)."""

MAX_LICENSE = 16 << 20
"""Largest LICENSE in a module zip (go's MaxLICENSE)."""

#: The compression methods go's archive/zip reads: a zip using another (LZMA, bzip2)
#: would hash the same and pass a checksum database, and no client could unzip it.
_READABLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

# The ASCII punctuation go allows in a file name (fileNameOK): no shell quoting hazards
# (" ' * < > ? ` |) and no separators (/ : \).
_FILE_NAME_PUNCTUATION = frozenset("!#$%&()+,-.=@[]^_{}~ ")

# Python upper-cases the dotless i to "I", but go folds it with nothing else.
_UNFOLDED = frozenset("\u0131")


class InvalidModuleZipError(ValueError):
    """A module zip breaks one of go's structure rules; the message says which."""


def _go_name(info: zipfile.ZipInfo) -> str:
    """The entry's name as go reads it: its raw bytes, which must be UTF-8.

    Python decodes a name without the UTF-8 flag as code page 437 and cuts it at a NUL;
    go takes the bytes as they are, so the bytes are what is checked.
    """
    raw = raw_name(info)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidModuleZipError(f"{raw[:_QUOTE_LIMIT]!r}: invalid UTF-8") from None


def _fold(text: str) -> str:
    """A key equal for two names when go's strings.EqualFold says they are equal.

    go folds one character to one character (simple folding: "K", "k" and the Kelvin
    sign are one; "ß" and "ss" are not), so a character whose case mapping is longer
    stays as it is.  Python has no simple folding: upper then lower case stands in for
    it, which agrees with go's orbits but for the exceptions in :data:`_UNFOLDED`.
    """
    folded = []
    for char in text:
        if char in _UNFOLDED:
            folded.append(char)
            continue
        upper = char.upper()
        if len(upper) != 1:
            upper = char
        lower = upper.lower()
        folded.append(lower if len(lower) == 1 else upper)
    return "".join(folded)


def _file_name_char_ok(char: str) -> bool:
    if char.isascii():
        return char.isalnum() or char in _FILE_NAME_PUNCTUATION
    return unicodedata.category(char).startswith("L")  # go's unicode.IsLetter


def _element_problem(element: str) -> str:
    """Why ``element`` cannot be an element of a file path in a module, or ``""``."""
    return _checked_element(
        element,
        char_ok=_file_name_char_ok,
        check_short_names=False,
        upper=lambda short: _fold(short).upper(),
    )


def _file_path_problem(path: str) -> str:
    """Why ``path`` (relative to the module root) is not a valid file path, or ``""``.

    The path is clean already, so a leading slash shows as an empty first element.
    """
    if posixpath.normpath(path) != path or path.startswith("//"):
        return "file path is not clean"
    for element in path.split("/"):
        problem = _element_problem(element)
        if problem:
            return problem
    return ""


class _Collisions:
    """Names seen so far, keyed by their case folding, and whether each is a directory:
    a zip unzipped on a case-insensitive file system must not overwrite itself."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, bool]] = {}

    def problem(self, path: str, is_dir: bool) -> str:
        """Add ``path``, and each directory above it; why it collides, or ``""``."""
        while True:
            key = _fold(path)
            other = self._seen.get(key)
            if other is None:
                self._seen[key] = (path, is_dir)
            elif other[0] != path:
                return (
                    f"case-insensitive file name collision: {_quote(other[0])} and {_quote(path)}"
                )
            elif other[1] != is_dir:
                return f"entry {_quote(path)} is both a file and a directory"
            elif not is_dir:
                return f"multiple entries for file {_quote(path)}"
            parent = posixpath.dirname(path)
            if not parent:
                return ""
            path, is_dir = parent, True


def _go_mod_problem(path: str) -> str:
    base = posixpath.basename(path)
    if _fold(base) != "go.mod":
        return ""
    if base != path:
        return "go.mod file not in module root directory"
    if path != "go.mod":
        return "go.mod files must have lowercase names"
    return ""


def check_zip_entries(entries: Iterable[zipfile.ZipInfo], module: str, version: str) -> None:
    """Check the entries of ``module@version``'s zip against go's rules (the module
    docstring), or raise :class:`InvalidModuleZipError` naming the first entry that
    breaks one.  ``module`` and ``version`` must be valid, the version canonical."""
    prefix = f"{module}@{version}/"
    collisions = _Collisions()
    total = 0
    for info in entries:
        name = _go_name(info)
        if not name.startswith(prefix):
            raise InvalidModuleZipError(f"{_quote(name)}: path does not have prefix {prefix!r}")
        path = name[len(prefix) :]
        if not path:
            continue  # the root directory itself
        is_dir = path.endswith("/")
        if is_dir:
            path = path[:-1]
        problem = (
            _file_path_problem(path)
            or collisions.problem(path, is_dir)
            or ("" if is_dir else _go_mod_problem(path))
        )
        if problem:
            raise InvalidModuleZipError(f"{_quote(name)}: {problem}")
        if is_dir:
            continue
        if info.compress_type not in _READABLE:
            raise InvalidModuleZipError(
                f"{_quote(name)}: compressed with method {info.compress_type}, which go "
                "cannot read (only stored and deflated)"
            )
        size = info.file_size
        total += size
        if total > MAX_ZIP_FILE:
            raise InvalidModuleZipError(
                "total uncompressed size of module contents too large "
                f"(max size is {MAX_ZIP_FILE} bytes)"
            )
        if path == "go.mod" and size > MAX_GO_MOD:
            raise InvalidModuleZipError(f"go.mod file too large (max size is {MAX_GO_MOD} bytes)")
        if path == "LICENSE" and size > MAX_LICENSE:
            raise InvalidModuleZipError(f"LICENSE file too large (max size is {MAX_LICENSE} bytes)")


def check_module_zip(path: str | os.PathLike[str], module: str, version: str) -> None:
    """Check the zip at ``path`` as go checks ``module@version``'s zip before accepting it
    (blocking: run it in a thread).  Raises :class:`InvalidModuleZipError` for a broken
    rule, :class:`zipfile.BadZipFile` for what is no zip at all."""
    size = os.stat(path).st_size
    if size > MAX_ZIP_FILE:
        raise InvalidModuleZipError(
            f"module zip file is too large ({size} bytes; limit is {MAX_ZIP_FILE} bytes)"
        )
    with zipfile.ZipFile(path) as archive:
        check_zip_entries(archive.infolist(), module, version)
