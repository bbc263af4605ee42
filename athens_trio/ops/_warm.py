"""Warming: fetch a project's module graph into storage before anyone asks for it.

Everything goes through the download protocol, exactly as a client's requests do: the
filter, DownloadMode, the validator hook, the pools and the single-flight all apply,
and what is stored already costs no fetch (so a second warm fetches nothing).  Warm's
own :class:`trio.CapacityLimiter` bounds how many versions it asks for at once, so a
big graph never floods the GoGetWorkers queue ahead of clients.

What is fetched, like ``go mod download``:

- a **go.sum**: each version it names, its zip where go.sum has a zip hash, its go.mod
  alone where it has only a ``/go.mod`` line (versions go reads the go.mod of while
  building the module graph, never the code of);
- a **go.mod** (a project): the zip of each requirement (with the project's ``replace``
  and ``exclude`` applied), and the go.mod alone of every version further down the graph;
- a **module@version** (or a query such as ``@latest``): its zip, the zips of what its
  go.mod requires and the go.mod of the rest of the graph: what ``go install
  module@version`` needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from .._exceptions import AthensTrioError, NotFoundError
from .._module import check_path, check_version_query, is_canonical_version
from ..download import DownloadProtocol
from ..storage import Reader
from ._gomod import GoMod, Need, parse_go_mod
from ._progress import Progress

__all__ = ["DEFAULT_WARM_CONCURRENCY", "Warm", "WarmStatistics", "parse_module_version"]

#: Versions asked for at once by one warm.
DEFAULT_WARM_CONCURRENCY = 4
#: Failures a warm remembers word for word (the count is kept whole).
MAX_FAILURES_KEPT = 50


@dataclass(frozen=True)
class WarmStatistics:
    """What :meth:`Warm.statistics` returns."""

    #: Versions (parts) to warm, known so far: it grows as the graph is walked.
    total: int
    done: int
    #: Of ``done``: stored before the warm asked, stored by it, failed.
    already_stored: int
    fetched: int
    failed: int
    in_flight: int
    finished: bool
    seconds: float
    #: The first failures, ``module@version (part): reason``.
    failures: tuple[str, ...] = field(default=())

    def progress(self) -> Progress:
        return Progress(
            self.done,
            self.total,
            f"{self.fetched} fetched, {self.already_stored} already stored, {self.failed} failed",
        )


def parse_module_version(target: str) -> tuple[str, str]:
    """``module@version`` (or ``module@query``), checked (ValueError if malformed)."""
    module, at, version = target.partition("@")
    if not at:
        raise ValueError(f"{target!r}: expected module@version")
    check_path(module)
    check_version_query(version)
    return module, version


@dataclass(frozen=True)
class _Item:
    need: Need
    #: Walk the go.mod's requirements; ``main``: they are the main module's (zips).
    walk: bool
    main: bool
    #: The project's replace and exclude directives, which apply to the whole graph.
    project: GoMod


class Warm:
    """One warm: :meth:`run` it once; :meth:`statistics` any time, from any task."""

    def __init__(
        self,
        protocol: DownloadProtocol,
        storage: Reader,
        *,
        concurrency: int = DEFAULT_WARM_CONCURRENCY,
    ) -> None:
        self._protocol = protocol
        self._storage = storage
        self._limiter = trio.CapacityLimiter(concurrency)
        # (module, version) -> (part, walk) scheduled: a key comes back only to do more.
        self._scheduled: dict[tuple[str, str], tuple[str, bool]] = {}
        # Versions a query's resolution stored (from a VCS a go.mod miss stores the
        # whole version): fetched by this warm, not found stored.
        self._stored_resolving: set[tuple[str, str]] = set()
        self._total = self._done = self._already = self._fetched = self._failed = 0
        self._in_flight = 0
        self._failures: list[str] = []
        self._started = time.monotonic()
        self._ended: float | None = None
        self._nursery: trio.Nursery | None = None

    def statistics(self) -> WarmStatistics:
        end = self._ended if self._ended is not None else time.monotonic()
        return WarmStatistics(
            total=self._total,
            done=self._done,
            already_stored=self._already,
            fetched=self._fetched,
            failed=self._failed,
            in_flight=self._in_flight,
            finished=self._ended is not None,
            seconds=round(end - self._started, 3),
            failures=tuple(self._failures),
        )

    async def run(
        self,
        *,
        go_sums: Sequence[Sequence[Need]] = (),
        go_mods: Sequence[str] = (),
        modules: Sequence[tuple[str, str]] = (),
    ) -> WarmStatistics:
        """Warm what go.sums (parsed), go.mods (text) and module@version targets name;
        failures are counted, not raised (a malformed go.mod raises ValueError first)."""
        projects = [parse_go_mod(text) for text in go_mods]
        self._started = time.monotonic()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for needs in go_sums:
                    for need in needs:
                        self._schedule(_Item(need, walk=False, main=False, project=GoMod()))
                for project in projects:
                    self._require(project.requires, main=True, project=project)
                for module, query in modules:
                    nursery.start_soon(self._resolve_then_warm, module, query)
        finally:
            self._ended = time.monotonic()
        return self.statistics()

    def _require(self, requires: list[tuple[str, str]], *, main: bool, project: GoMod) -> None:
        for module, version in requires:
            if (module, version) in project.excludes:
                continue
            target = project.replaced(module, version)
            if target is not None:
                need = Need(*target, "zip" if main else "mod")
                self._schedule(_Item(need, walk=True, main=False, project=project))

    def _schedule(self, item: _Item) -> None:
        key = (item.need.module, item.need.version)
        before = self._scheduled.get(key)
        if before is not None:
            part, walked = before
            more_part = item.need.part == "zip" and part == "mod"
            if not more_part and (walked or not item.walk):
                return
        self._scheduled[key] = (
            "zip" if before and before[0] == "zip" else item.need.part,
            item.walk or bool(before and before[1]),
        )
        self._total += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._warm, item)

    async def _resolve_then_warm(self, module: str, query: str) -> None:
        version = query
        if not is_canonical_version(query):
            try:
                async with self._limiter:
                    before = set(await self._storage.list_versions(module))
                    version = json.loads(await self._protocol.info(module, query))["Version"]
                if version not in before:
                    self._stored_resolving.add((module, version))
            except AthensTrioError as exc:
                self._total += 1
                self._done += 1
                self._fail(f"{module}@{query}: {exc}")
                return
        self._schedule(_Item(Need(module, version, "zip"), walk=True, main=True, project=GoMod()))

    def _fail(self, message: str) -> None:
        self._failed += 1
        if len(self._failures) < MAX_FAILURES_KEPT:
            self._failures.append(message)

    async def _stored(self, need: Need) -> bool:
        if need.part == "zip":
            return await self._storage.exists(need.module, need.version)
        try:
            await self._storage.info(need.module, need.version)
        except NotFoundError:
            return False
        return True

    async def _warm(self, item: _Item) -> None:
        need = item.need
        async with self._limiter:
            self._in_flight += 1
            try:
                stored = await self._stored(need)
                if need.part == "zip":
                    await self._protocol.zip(need.module, need.version)
                mod = await self._protocol.go_mod(need.module, need.version)
                if stored and (need.module, need.version) not in self._stored_resolving:
                    self._already += 1
                else:
                    self._fetched += 1
            except AthensTrioError as exc:
                self._fail(f"{need.module}@{need.version} ({need.part}): {exc}")
                return
            finally:
                self._in_flight -= 1
                self._done += 1
        if not item.walk:
            return
        try:
            requires = parse_go_mod(mod.decode("utf-8", "replace")).requires
        except ValueError as exc:
            self._fail(f"{need.module}@{need.version}: its go.mod does not parse: {exc}")
            return
        self._require(requires, main=item.main, project=item.project)
