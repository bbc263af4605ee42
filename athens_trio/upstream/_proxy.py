"""Fetcher and Lister over upstream GOPROXYs, every download proven by the checksum database.

:class:`ProxyFetcher` and :class:`ProxyLister` ask the proxies of a :class:`GoproxyClient`
and hand over to the go-based fetcher and lister given to them (run with
``GOPROXY=direct``) where go would fetch from the VCS itself: the module matches
GONOPROXY/GOPRIVATE, or the walk of the GOPROXY list reaches ``direct``.

What a proxy serves is only as good as the proxy, so every go.mod and zip taken from
one passes a :class:`SumCheck` before it is returned: its ``h1:`` hash must be the one
the checksum database proves (GOSUMDB; GONOSUMDB/GOPRIVATE modules and ``GOSUMDB=off``
are not checked, as in go).  What fails is never returned: the error (an
:class:`UpstreamError`, a 502) names the module version.  Go itself checks what it
fetches directly, with the same environment.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import trio

from .. import _semver as semver
from .._exceptions import UpstreamError
from .._module import check_path, check_version_query, is_pseudo_version
from .._ziphash import mod_h1, zip_h1
from ..sumdb import ChecksumMismatchError, GoSumLines, SumDBClient, SumDBError, check_mod
from ._fetcher import FetchedMod, FetchedVersion, Fetcher, VersionInfo, encode_info
from ._goproxy import GoproxyClient, UpstreamInfo, UseDirect
from ._lister import Lister, UpstreamVersions

__all__ = ["ProxyFetcher", "ProxyLister", "SumCheck"]


class SumCheck:
    """Checks downloads against a checksum database; ``client`` None means no checks
    (``GOSUMDB=off``)."""

    def __init__(self, client: SumDBClient | None) -> None:
        self._client = client

    async def lines(self, module: str, version: str) -> GoSumLines | None:
        """What the database proves for ``module@version``; None when it is not checked."""
        if self._client is None or self._client.skips(module):
            return None
        try:
            return await self._client.lookup(module, version)
        except SumDBError as exc:
            what = f"{module}@{version}"
            if what in str(exc):
                raise
            # Errors about the database as a whole (its tree, a tile) do not name the
            # version that could not be verified; the client's error should.
            raise UpstreamError(f"{what}: not verified by checksum database: {exc}") from exc


def _info_bytes(info: UpstreamInfo) -> bytes:
    return encode_info(VersionInfo(Version=info.version, Time=info.time))


def _zip_sum(module: str, version: str, path: Path) -> str:
    try:
        return zip_h1(path)
    except (zipfile.BadZipFile, ValueError) as exc:
        raise UpstreamError(f"{module}@{version}: the upstream's zip is not valid: {exc}") from None


class ProxyFetcher(Fetcher):
    """Fetches from the GOPROXYs of ``client``, checked by ``sums``; ``direct`` fetches
    what goes direct.  Zips are written under a temporary directory in ``temp_root``
    (None: the system's), removed when the fetch's block exits."""

    def __init__(
        self,
        client: GoproxyClient,
        direct: Fetcher,
        sums: SumCheck,
        *,
        temp_root: str | Path | None = None,
    ) -> None:
        self._client = client
        self._direct = direct
        self._sums = sums
        self._temp_root = temp_root

    async def _mod(
        self, module: str, version: str
    ) -> tuple[UpstreamInfo, bytes, str, GoSumLines | None]:
        """The .info and go.mod of ``module@version`` from the proxies, the go.mod checked,
        and the database's lines for it (None: not checked)."""
        check_path(module)
        check_version_query(version)
        info = await self._client.info(module, version)
        mod = await self._client.mod(module, info.version)
        lines = await self._sums.lines(module, info.version)
        if lines is not None:
            check_mod(lines, mod)
        return info, mod, mod_h1(mod), lines

    async def fetch_mod(self, module: str, version: str) -> FetchedMod:
        if not self._client.plan.goes_direct(module):
            try:
                info, mod, mod_sum, _ = await self._mod(module, version)
            except UseDirect:
                pass
            else:
                return FetchedMod(module, info.version, _info_bytes(info), mod, mod_sum)
        return await self._direct.fetch_mod(module, version)

    @contextlib.asynccontextmanager
    async def fetch(self, module: str, version: str) -> AsyncIterator[FetchedVersion]:
        if not self._client.plan.goes_direct(module):
            temp = Path(tempfile.mkdtemp(prefix="athens-upstream-", dir=self._temp_root))
            try:
                try:
                    fetched = await self._fetch(module, version, temp)
                except UseDirect:
                    pass
                else:
                    yield fetched
                    return
            finally:
                # Synchronous, so that it also runs while being cancelled.
                shutil.rmtree(temp, ignore_errors=True)
        async with self._direct.fetch(module, version) as fetched:
            yield fetched

    async def _fetch(self, module: str, version: str, temp: Path) -> FetchedVersion:
        info, mod, mod_sum, lines = await self._mod(module, version)
        zip_file = temp / "module.zip"
        await self._client.download_zip(module, info.version, zip_file)
        zip_sum = await trio.to_thread.run_sync(_zip_sum, module, info.version, zip_file)
        if lines is not None and zip_sum != lines.zip_hash:
            raise ChecksumMismatchError(module, info.version, lines.zip_hash, zip_sum)
        return FetchedVersion(
            module=module,
            version=info.version,
            info=_info_bytes(info),
            mod=mod,
            zip_file=zip_file,
            zip_sum=zip_sum,
            mod_sum=mod_sum,
        )


class ProxyLister(Lister):
    """Lists from the GOPROXYs of ``client``: versions as the upstream lists them
    (retracted ones included); ``latest`` as go's query picks it from them (the highest
    release, else the highest pre-release, else the upstream's ``@latest``) and other
    queries as the upstream's ``.info`` answers them; ``direct`` lists what goes direct."""

    def __init__(self, client: GoproxyClient, direct: Lister) -> None:
        self._client = client
        self._direct = direct

    async def list(self, module: str) -> UpstreamVersions:
        if not self._client.plan.goes_direct(module):
            try:
                versions = await self._client.list(module)
                latest = await self._latest(module, versions)
            except UseDirect:
                pass
            else:
                return UpstreamVersions(versions, latest)
        return await self._direct.list(module)

    async def resolve(self, module: str, query: str) -> VersionInfo:
        if not self._client.plan.goes_direct(module):
            try:
                if query == "latest":
                    return await self._latest(module, await self._client.list(module))
                # A proxy resolves a branch or a commit in .info, as proxy.golang.org.
                info = await self._client.info(module, query)
            except UseDirect:
                pass
            else:
                return VersionInfo(info.version, info.time)
        return await self._direct.resolve(module, query)

    async def _latest(self, module: str, versions: Sequence[str]) -> VersionInfo:
        tagged = [v for v in versions if not is_pseudo_version(v)]
        releases = [v for v in tagged if not semver.prerelease(v)]
        if candidates := releases or tagged:
            info = await self._client.info(module, max(candidates, key=semver.sort_key))
        else:
            info = await self._client.latest(module)
        return VersionInfo(info.version, info.time)
