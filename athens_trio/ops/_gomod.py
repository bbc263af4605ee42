"""What a project's go.mod and go.sum say it needs, as (module, version, part).

Pure functions over text: no I/O, no go.  Only what warming and exporting need is read:
``require``, ``replace`` and ``exclude`` of a go.mod; the lines of a go.sum.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

from .._module import check_canonical_version, check_path

__all__ = ["GoMod", "Need", "parse_go_mod", "parse_go_sum"]


@dataclass(frozen=True, order=True)
class Need:
    """A version a build needs: its zip (``part == "zip"``) or its go.mod alone."""

    module: str
    version: str
    part: str  # "mod" | "zip"


@dataclass
class GoMod:
    """The parts of a go.mod that say which versions the module graph holds."""

    requires: list[tuple[str, str]] = field(default_factory=list)
    #: (module, version or "") -> (module, version), or None for a local directory.
    replaces: dict[tuple[str, str], tuple[str, str] | None] = field(default_factory=dict)
    excludes: set[tuple[str, str]] = field(default_factory=set)

    def replaced(self, module: str, version: str) -> tuple[str, str] | None:
        """What go fetches for ``module@version``: itself, its replacement, or None (a
        directory on disk, nothing to fetch)."""
        for key in ((module, version), (module, "")):
            if key in self.replaces:
                return self.replaces[key]
        return module, version


def _words(line: str) -> list[str]:
    """A go.mod line's words, its comment dropped, quoted paths unquoted (no module path
    or version holds ``//``)."""
    return shlex.split(line.split("//", 1)[0])


def _directives(text: str) -> Iterator[tuple[str, list[str]]]:
    """(verb, words) for each directive, blocks (``require ( ... )``) unrolled."""
    block: str | None = None
    for raw in text.splitlines():
        words = _words(raw)
        if not words:
            continue
        if block is not None:
            if words == [")"]:
                block = None
            else:
                yield block, words
        elif len(words) == 2 and words[1] == "(":
            block = words[0]
        else:
            yield words[0], words[1:]


def parse_go_mod(text: str) -> GoMod:
    """The requirements, replacements and exclusions of a go.mod (ValueError if one is
    malformed)."""
    parsed = GoMod()
    for verb, words in _directives(text):
        if verb == "require" and len(words) >= 2:
            parsed.requires.append(_checked(words[0], words[1]))
        elif verb == "exclude" and len(words) >= 2:
            parsed.excludes.add(_checked(words[0], words[1]))
        elif verb == "replace" and "=>" in words:
            arrow = words.index("=>")
            old, new = words[:arrow], words[arrow + 1 :]
            key = (old[0], old[1] if len(old) > 1 else "")
            if len(new) >= 2 and not new[0].startswith((".", "/")):
                parsed.replaces[key] = _checked(new[0], new[1])
            else:
                parsed.replaces[key] = None
    return parsed


def _checked(module: str, version: str) -> tuple[str, str]:
    check_path(module)
    check_canonical_version(version)
    return module, version


def parse_go_sum(text: str) -> list[Need]:
    """Every version a go.sum names: its zip where it has a zip hash, its go.mod alone
    where it has only a ``/go.mod`` line (what ``go mod download`` needs of it)."""
    parts: dict[tuple[str, str], str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) != 3 or not words[2].startswith("h1:"):
            raise ValueError(f"go.sum line {number}: not `module version h1:hash`")
        module, version = words[0], words[1]
        part = "zip"
        if version.endswith("/go.mod"):
            version, part = version[: -len("/go.mod")], "mod"
        _checked(module, version)
        if parts.get((module, version)) != "zip":
            parts[(module, version)] = part
    return sorted(Need(m, v, p) for (m, v), p in parts.items())
