"""Lister: what versions exist upstream, and which one ``latest`` is."""

from __future__ import annotations

import abc

import msgspec
import trio

from ._fetcher import VersionInfo
from ._gocmd import GoRunner
from ._golist import go_list_module

__all__ = ["GoLister", "Lister", "PooledLister", "UpstreamVersions"]


class UpstreamVersions(msgspec.Struct, frozen=True):
    """The tagged versions upstream has, and what ``latest`` resolves to there where the
    listing told it too (None: ask ``resolve(module, "latest")``; an upstream proxy's
    list does not say, and a list must not cost a second request nor fail with it)."""

    versions: list[str]
    latest: VersionInfo | None


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


class GoLister(Lister):
    """Asks ``go list -m -json <module>@<query>`` under ``timeout`` seconds (Timeout):
    with ``-versions -retracted`` to list, so retracted versions are listed as upstream
    proxies list them (go hides them from ``latest`` and from its own choices)."""

    def __init__(self, runner: GoRunner, *, timeout: float) -> None:
        self._runner = runner
        self._timeout = timeout

    async def list(self, module: str) -> UpstreamVersions:
        listed = await go_list_module(
            self._runner,
            module,
            "latest",
            flags=("-versions", "-retracted"),
            timeout=self._timeout,
        )
        latest = VersionInfo(listed.version, listed.time)
        if listed.retracted:
            # -retracted lets @latest pick a retracted version too; ask again without it.
            latest = await self.resolve(module, "latest")
        return UpstreamVersions(versions=listed.versions, latest=latest)

    async def resolve(self, module: str, query: str) -> VersionInfo:
        listed = await go_list_module(self._runner, module, query, timeout=self._timeout)
        return VersionInfo(listed.version, listed.time)


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
