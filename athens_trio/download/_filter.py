"""Athens' FilterFile: which modules (and versions) this proxy serves at all.

Rules decide per module before anything else (and again, for a query, on the version
it resolved to: :class:`FilterCheck` is also the protocol's ``version_check``):
``-`` excludes (403), ``+`` includes,
``D`` sends the client to ``GlobalEndpoint`` (303 See Other); the deepest matching path
prefix that says something wins, a bare sign sets the default, and a rule may be limited
to versions (``- github.com/a v1,~v2.1.0,<v0.5.0``).  The semantics are those of
gomods/athens pkg/module/filter.go, quirks included, so a filter file moves over as is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from .._endpoints import INFO, LATEST, LIST, MOD, ZIP, Endpoint
from .._exceptions import ConfigError, ForbiddenError, Redirected
from ..storage import StoredZip
from ._protocol import DownloadProtocol, ProtocolWrapper

__all__ = ["FilterCheck", "FilterRule", "ModuleFilter", "with_filter"]


class FilterRule(enum.Enum):
    DEFAULT = "default"  # says nothing; a parent's rule applies
    INCLUDE = "+"
    EXCLUDE = "-"
    DIRECT = "D"


@dataclass
class _Node:
    rule: FilterRule = FilterRule.DEFAULT
    qualifiers: list[str] = field(default_factory=list)
    children: dict[str, _Node] = field(default_factory=dict)


class ModuleFilter:
    """Athens' FilterFile, with its semantics (gomods/athens pkg/module/filter.go)."""

    def __init__(self) -> None:
        self._root = _Node()

    @classmethod
    def from_file(cls, path: str | Path) -> ModuleFilter:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ConfigError("FilterFile", f"cannot read {path}: {exc.strerror}") from exc
        return cls.from_lines(lines, str(path))

    @classmethod
    def from_lines(cls, lines: list[str], where: str = "filter") -> ModuleFilter:
        module_filter = cls()
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split(" ")
            sign = fields[0].strip()
            if len(fields) > 3 or sign not in ("+", "-", "D"):
                raise ConfigError("FilterFile", f"{where}, line {number}: {raw!r} is not a rule")
            rule = FilterRule(sign)
            if len(fields) == 1:
                module_filter._root.rule = rule
                continue
            qualifiers = _qualifiers(fields[2]) if len(fields) == 3 else []
            module_filter.add_rule(fields[1].strip(), rule, qualifiers)
        return module_filter

    def add_rule(self, path: str, rule: FilterRule, qualifiers: list[str] | None = None) -> None:
        node = self._root
        for segment in _segments(path):
            node = node.children.setdefault(segment, _Node())
        node.rule = rule
        node.qualifiers = list(qualifiers or [])

    def rule(self, module: str, version: str = "") -> FilterRule:
        """The rule for ``module`` at ``version`` ("" for list and latest): the deepest
        matching node that says something, else the default, else include."""
        found: list[FilterRule] = []
        node = self._root
        for segment in _segments(module):
            child = node.children.get(segment)
            if child is None:
                break
            node = child
            applies = not node.qualifiers or any(_matches(version, q) for q in node.qualifiers)
            if applies or not version:
                found.append(node.rule)
        for rule in reversed(found):
            if rule is not FilterRule.DEFAULT:
                return rule
        root = self._root.rule
        return FilterRule.INCLUDE if root is FilterRule.DEFAULT else root


def _segments(path: str) -> list[str]:
    path = path.strip().strip("/")
    return path.split("/") if path else []


def _qualifiers(text: str) -> list[str]:
    qualifiers = []
    for item in text.split(","):
        item = item.rstrip("*")
        # "v1" and "v1.2" mean every version starting "v1." / "v1.2.".
        if item and item[-1] != "." and item.count(".") < 2:
            item += "."
        if item:
            qualifiers.append(item)
    return qualifiers


def _version_numbers(text: str) -> list[int] | None:
    parts = text.strip().strip(".").split(".")
    try:
        return [int(p) for p in parts]
    except ValueError:
        return None


def _matches(version: str, qualifier: str) -> bool:
    """``v1.2.`` a prefix; ``~v1.2.3`` 1.2.x from 1.2.3; ``^v1.2.3`` 1.x.x from 1.2.3;
    ``<v1.2.3`` up to and including 1.2.3 (Athens' reading of "lower than")."""
    if len(qualifier) < 2 or not version:
        return False
    prefix, first = qualifier[0], qualifier[1]
    if prefix == "v" and first.isdigit():
        return version.startswith(qualifier)
    have, want = _version_numbers(version[1:]), _version_numbers(qualifier[2:])
    if have is None or want is None or len(have) != 3 or len(want) != 3:
        return False
    if prefix == "~":
        return have[:2] == want[:2] and have[2] >= want[2]
    if prefix == "^":
        return have[0] == want[0] and (
            have[1] > want[1] or (have[1] == want[1] and have[2] >= want[2])
        )
    if prefix == "<":
        return have <= want
    return False


class FilterCheck:
    """The filter applied: ``check(module, version, endpoint, asked)`` returns if the
    filter serves ``module`` at ``version`` ("" for list and latest), else raises
    ForbiddenError (403) or Redirected (303 to ``global_endpoint``, for what the client
    ``asked``).  A :data:`~athens_trio.download.VersionCheck`."""

    def __init__(self, module_filter: ModuleFilter, global_endpoint: str) -> None:
        self._filter = module_filter
        self._global_endpoint = global_endpoint.rstrip("/")

    def __call__(self, module: str, version: str, endpoint: Endpoint, asked: str = "") -> None:
        rule = self._filter.rule(module, version)
        if rule is FilterRule.EXCLUDE:
            what = f"{module}@{version}" if version else module
            raise ForbiddenError(f"{what} is excluded by this proxy's filter")
        if rule is FilterRule.DIRECT:
            location = self._global_endpoint + endpoint.path(module, asked or version or None)
            raise Redirected(location, 303, f"{module} is served by the global endpoint")


class _FilteredProtocol(DownloadProtocol):
    def __init__(self, inner: DownloadProtocol, check: FilterCheck) -> None:
        self._inner = inner
        self._check = check

    async def list(self, module: str) -> list[str]:
        self._check(module, "", LIST)
        return await self._inner.list(module)

    async def latest(self, module: str) -> bytes:
        self._check(module, "", LATEST)
        return await self._inner.latest(module)

    async def info(self, module: str, version: str) -> bytes:
        self._check(module, version, INFO)
        return await self._inner.info(module, version)

    async def go_mod(self, module: str, version: str) -> bytes:
        self._check(module, version, MOD)
        return await self._inner.go_mod(module, version)

    async def zip(self, module: str, version: str) -> StoredZip:
        self._check(module, version, ZIP)
        return await self._inner.zip(module, version)


def with_filter(
    module_filter: ModuleFilter | FilterCheck, global_endpoint: str = ""
) -> ProtocolWrapper:
    """Refuse (403) or redirect (303 to ``global_endpoint``) as the filter says, before
    anything is looked up.  (A query's resolved version is checked by the protocol:
    give it the same :class:`FilterCheck` as ``version_check``.)"""
    check = (
        module_filter
        if isinstance(module_filter, FilterCheck)
        else FilterCheck(module_filter, global_endpoint)
    )

    def wrap(inner: DownloadProtocol) -> DownloadProtocol:
        return _FilteredProtocol(inner, check)

    return wrap
