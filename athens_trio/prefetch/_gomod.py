"""What a served go.mod says the client will ask for next: its requirements, read with
go.mod's own syntax (cmd/go's modfile), and whether go walks past them.

Only ``require`` lines (single or in a block) are requirements; ``// indirect`` and other
comments change nothing; ``exclude``, ``replace``, ``retract``, ``tool`` and the rest are
not requirements (a dependency's replace and exclude lines are ignored by go too).
Tokens may be quoted (``"..."`` with Go escapes, or raw with backquotes).  A line this
reader cannot make sense of is skipped: what it returns is a hint, never a decision.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .._exceptions import InvalidRequestError
from .._module import check_module_version, is_canonical_version

__all__ = ["GoMod", "parse_go_mod", "surely_pruned"]

#: From this go version on, a module's go.mod lists every module its packages need and
#: go prunes the graph below it: the client reads none of its requirements' go.mod
#: files on its account (module graph pruning, go 1.17).
PRUNED_FROM = (1, 17)

_GO_VERSION = re.compile(r"(\d+)\.(\d+)")
# A go line at the start of a line (the go directive: go.mod has no block of them, and a
# comment starts with //), for the quick look before any parsing.
_GO_LINE = re.compile(rb"^[ \t]*go[ \t]+(\d+)\.(\d+)", re.MULTILINE)


def surely_pruned(data: bytes) -> bool:
    """Whether ``data``'s go line says go prunes the graph there, found without parsing
    the go.mod (a few microseconds; a parse of a large go.mod takes milliseconds, and
    most go.mod files served today are go 1.17 or later).  False when unsure."""
    lines = _GO_LINE.findall(data)
    return len(lines) == 1 and (int(lines[0][0]), int(lines[0][1])) >= PRUNED_FROM


@dataclass(frozen=True)
class GoMod:
    """A go.mod as the prefetcher sees it."""

    #: ``(module path, canonical version)`` of each requirement, in file order.
    requires: tuple[tuple[str, str], ...]
    #: The ``go`` line's version ("" when there is none: go then assumes 1.16).
    go: str = ""

    @property
    def pruned(self) -> bool:
        """Whether go stops at this module's requirements (it reads their go.mod files
        only where the go.mod is below 1.17, or has no go line)."""
        found = _GO_VERSION.match(self.go)
        return found is not None and (int(found[1]), int(found[2])) >= PRUNED_FROM


def _quoted(line: str, start: int) -> tuple[str, int]:
    """The quoted token at ``start`` and the index past it (ValueError if unterminated)."""
    quote = line[start]
    index = start + 1
    while index < len(line):
        if line[index] == "\\" and quote == '"':
            index += 2
            continue
        if line[index] == quote:
            raw = line[start : index + 1]
            text = raw[1:-1] if quote == "`" else json.loads(raw)
            if not isinstance(text, str):
                raise ValueError(raw)
            return text, index + 1
        index += 1
    raise ValueError(f"unterminated {quote}")


def _tokens(line: str) -> list[str]:
    """A line's tokens up to its ``//`` comment; ``(`` and ``)`` are tokens of their own."""
    tokens: list[str] = []
    index = 0
    while index < len(line):
        char = line[index]
        if char.isspace():
            index += 1
        elif line.startswith("//", index):
            break
        elif char in "()":
            tokens.append(char)
            index += 1
        elif char in '"`':
            token, index = _quoted(line, index)
            tokens.append(token)
        else:
            end = index
            while (
                end < len(line)
                and not line[end].isspace()
                and line[end] not in '()"`'
                and not line.startswith("//", end)
            ):
                end += 1
            tokens.append(line[index:end])
            index = end
    return tokens


def _requirement(tokens: list[str]) -> tuple[str, str] | None:
    if len(tokens) != 2:
        return None
    path, version = tokens
    try:
        check_module_version(path, version)
    except InvalidRequestError:
        return None
    return (path, version) if is_canonical_version(version) else None


def parse_go_mod(data: bytes) -> GoMod:
    """The requirements and the go version of the go.mod ``data``."""
    requires: list[tuple[str, str]] = []
    go = ""
    block: str | None = None  # the verb of the block we are in
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            tokens = _tokens(line)
        except ValueError:
            continue
        if not tokens:
            continue
        if block is not None:
            if tokens == [")"]:
                block = None
            elif block == "require" and (found := _requirement(tokens)):
                requires.append(found)
            continue
        verb, rest = tokens[0], tokens[1:]
        if rest == ["("]:
            block = verb
        elif verb == "require" and (found := _requirement(rest)):
            requires.append(found)
        elif verb == "go" and len(rest) == 1:
            go = rest[0]
    return GoMod(tuple(requires), go)
