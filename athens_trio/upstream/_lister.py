"""Lister: what versions exist upstream, and which one ``latest`` is."""

from __future__ import annotations

import abc
from datetime import datetime

import msgspec
import trio

from .._exceptions import UpstreamError
from .._module import check_path, check_version_query, is_canonical_version
from ._fetcher import VersionInfo
from ._gocmd import GoRunner, classify_go_error

__all__ = ["GoLister", "Lister", "PooledLister", "UpstreamVersions"]


class UpstreamVersions(msgspec.Struct, frozen=True):
    """The tagged versions upstream has, and what ``latest`` resolves to there."""

    versions: list[str]
    latest: VersionInfo


class Lister(abc.ABC):
    @abc.abstractmethod
    async def list(self, module: str) -> UpstreamVersions:
        """Upstream's tagged versions and latest.  NotFoundError if the module does not
        exist upstream; UpstreamError if upstream could not be asked."""

    @abc.abstractmethod
    async def resolve(self, module: str, query: str) -> VersionInfo:
        """The canonical version (and its time) that ``query`` names upstream: a
        branch, a commit, ``latest``, ``v1.2``, ``>=v1.2.3`` or a canonical version
        itself (then: whether it exists, and when).  Errors as :meth:`list`."""


class _GoListModule(msgspec.Struct):
    Path: str = ""
    Version: str = ""
    Versions: list[str] = msgspec.field(default_factory=list)
    Time: datetime | None = None
    Error: dict[str, str] | None = None


_decoder = msgspec.json.Decoder(_GoListModule)


class GoLister(Lister):
    """Asks ``go list -m [-versions] -json <module>@<query>`` under ``timeout`` seconds
    (Timeout)."""

    def __init__(self, runner: GoRunner, *, timeout: float) -> None:
        self._runner = runner
        self._timeout = timeout

    async def _go_list(self, module: str, query: str) -> _GoListModule:
        check_path(module)
        check_version_query(query)
        what = f"listing {module}@{query}"
        args = ["list", "-m", "-versions", "-json", f"{module}@{query}"]
        async with self._runner.run(args, timeout=self._timeout, what=what) as result:
            pass  # go list answers on stdout alone: nothing in its GOPATH is needed
        stderr = result.stderr.decode(errors="replace").strip()
        if result.returncode != 0:
            # Without -e, go list reports failures on stderr only.
            raise classify_go_error(stderr or f"{what}: go exited {result.returncode}")
        try:
            listed = _decoder.decode(result.stdout)
        except msgspec.DecodeError:
            raise UpstreamError(f"{what}: go printed no JSON: {stderr[-2000:]}") from None
        if listed.Error:
            raise classify_go_error(listed.Error.get("Err", stderr))
        if listed.Path != module or not is_canonical_version(listed.Version) or not listed.Time:
            raise UpstreamError(f"{what}: go answered {listed.Path}@{listed.Version}")
        return listed

    async def list(self, module: str) -> UpstreamVersions:
        listed = await self._go_list(module, "latest")
        assert listed.Time is not None
        return UpstreamVersions(
            versions=listed.Versions, latest=VersionInfo(listed.Version, listed.Time)
        )

    async def resolve(self, module: str, query: str) -> VersionInfo:
        listed = await self._go_list(module, query)
        assert listed.Time is not None
        return VersionInfo(listed.Version, listed.Time)


class PooledLister(Lister):
    """A lister whose go runs take a slot of the fetcher's pool, so ``GoGetWorkers``
    bounds every go process the proxy starts, listing included (without it a burst of
    ``list``/``@latest`` requests could start ProtocolWorkers ``go list`` at once)."""

    def __init__(self, inner: Lister, limiter: trio.CapacityLimiter) -> None:
        self._inner = inner
        self._limiter = limiter

    async def list(self, module: str) -> UpstreamVersions:
        async with self._limiter:
            return await self._inner.list(module)

    async def resolve(self, module: str, query: str) -> VersionInfo:
        async with self._limiter:
            return await self._inner.resolve(module, query)
