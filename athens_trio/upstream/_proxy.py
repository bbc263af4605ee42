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

A cold version costs round trips, not bytes, so for a canonical version the requests
one fetch needs (``.info``, ``.mod``, the database lookup, and for a whole version the
zip) go out at once, and the error is the one asking them in that order would have
given.  A client walking a module graph asks for a version's go.mod first and for its
zip later: the go.mod part fetched then (its ``.info``, go.mod and proven go.sum lines)
is remembered for a while (a bounded number of entries and bytes), so the zip fetch
asks the upstream for the zip alone and the database nothing.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import trio

from .. import _semver as semver
from .._exceptions import UpstreamError
from .._module import check_path, check_version_query, is_canonical_version, is_pseudo_version
from .._modzip import check_module_zip
from .._ziphash import mod_h1, zip_h1
from ..sumdb import ChecksumMismatchError, GoSumLines, SumDBClient, SumDBError
from ._fetcher import FetchedMod, FetchedVersion, Fetcher, VersionInfo, encode_info
from ._goproxy import GoproxyClient, UpstreamInfo, UseDirect
from ._lister import Lister, UpstreamVersions

__all__ = ["ProxyFetcher", "ProxyLister", "SumCheck"]

_T = TypeVar("_T")

#: How many go.mod parts a ProxyFetcher remembers for the zip fetches that follow, and
#: their go.mod bytes in all (a go.mod bigger than a sixteenth of that is not kept).
RECENT_PARTS = 4096
RECENT_BYTES = 16 << 20


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


# What zipfile raises for a zip it cannot read: a broken archive or member header, a
# corrupt (zlib.error) or cut-off (EOFError) deflate stream, an encrypted member
# (RuntimeError); ValueError covers InvalidModuleZipError and MemberSizeError.
_BAD_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, ValueError)


def _zip_sum(module: str, version: str, path: Path) -> str:
    """The ``h1:`` hash of an upstream's zip of ``module@version``, once it has the
    structure go requires: go checks that before it accepts a proxy's zip, and a
    checksum database may be off (a zip no client can unzip would then be stored for
    good); it also bounds what hashing decompresses."""
    try:
        check_module_zip(path, module, version)
        return zip_h1(path)
    except _BAD_ZIP as exc:
        raise UpstreamError(f"{module}@{version}: the upstream's zip is not valid: {exc}") from None


class _Call(Generic[_T]):
    """One of the calls :func:`_in_order` runs at once: its value once it returned."""

    def __init__(self, call: Callable[[], Awaitable[_T]]) -> None:
        self._call = call
        self._scope = trio.CancelScope()
        self._result: tuple[_T] | None = None
        self.error: Exception | None = None

    @property
    def value(self) -> _T:
        assert self._result is not None, "read after _in_order returned"
        return self._result[0]

    async def run(self, later: Sequence[_Call[Any]]) -> None:
        with self._scope:
            try:
                self._result = (await self._call(),)
            except Exception as exc:  # raised by _in_order, in the calls' order
                self.error = exc
                for call in later:
                    call._scope.cancel()  # moot: this error comes first


async def _in_order(*calls: _Call[Any]) -> None:
    """Run ``calls`` at once, to the outcome of running them one after the other: the
    first call (in order) that fails raises its error.  The calls after a failed one
    are cancelled (nothing they say could come first); the ones before it finish."""
    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(call.run, calls[index + 1 :])
    for call in calls:
        if call.error is not None:
            raise call.error


@dataclass(frozen=True)
class _ModPart:
    """A version's go.mod part as fetched from the proxies, checked: its ``.info``, its
    go.mod and that go.mod's ``h1:`` hash, and what the database proved for the version
    (None: not checked)."""

    info: UpstreamInfo
    mod: bytes
    mod_sum: str
    lines: GoSumLines | None


class _RecentParts:
    """The go.mod parts fetched lately, by module and version, the oldest dropped first
    past ``entries`` parts or ``size`` bytes of go.mod.  A part is taken, not read: the
    zip fetch it serves comes once."""

    def __init__(self, entries: int, size: int) -> None:
        self._parts: OrderedDict[tuple[str, str], _ModPart] = OrderedDict()
        self._entries = entries
        self._size = size
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._parts)

    def put(self, module: str, part: _ModPart) -> None:
        if len(part.mod) > self._size // 16:
            return
        self._drop((module, part.info.version))
        self._parts[module, part.info.version] = part
        self._bytes += len(part.mod)
        while len(self._parts) > self._entries or self._bytes > self._size:
            self._drop(next(iter(self._parts)))

    def take(self, module: str, version: str) -> _ModPart | None:
        return self._drop((module, version))

    def _drop(self, key: tuple[str, str]) -> _ModPart | None:
        part = self._parts.pop(key, None)
        if part is not None:
            self._bytes -= len(part.mod)
        return part


class ProxyFetcher(Fetcher):
    """Fetches from the GOPROXYs of ``client``, checked by ``sums``; ``direct`` fetches
    what goes direct.  Zips are written under a temporary name in ``temp_root``
    (None: the system's), removed when the fetch's block exits.  The go.mod parts of the
    last ``recent_parts`` versions fetched (at most ``recent_bytes`` of go.mod) are kept
    for their zip fetches."""

    def __init__(
        self,
        client: GoproxyClient,
        direct: Fetcher,
        sums: SumCheck,
        *,
        temp_root: str | Path | None = None,
        recent_parts: int = RECENT_PARTS,
        recent_bytes: int = RECENT_BYTES,
    ) -> None:
        self._client = client
        self._direct = direct
        self._sums = sums
        self._temp_root = temp_root
        self._recent = _RecentParts(recent_parts, recent_bytes)

    async def _mod(self, module: str, version: str) -> _ModPart:
        """The .info and go.mod of ``module@version`` from the proxies, the go.mod checked
        against the database's lines for it (if it is checked); remembered for its zip."""
        check_path(module)
        check_version_query(version)
        if is_canonical_version(version):
            info = _Call(lambda: self._client.info(module, version))
            mod = _Call(lambda: self._client.mod(module, version))
            lines = _Call(lambda: self._sums.lines(module, version))
            await _in_order(info, mod, lines)
        else:  # a query: the version it names comes first
            info = _Call(lambda: self._client.info(module, version))
            await _in_order(info)
            resolved = info.value.version
            mod = _Call(lambda: self._client.mod(module, resolved))
            lines = _Call(lambda: self._sums.lines(module, resolved))
            await _in_order(mod, lines)
        mod_sum = mod_h1(mod.value)
        if lines.value is not None and mod_sum != lines.value.mod_hash:
            raise ChecksumMismatchError(
                module, f"{info.value.version}/go.mod", lines.value.mod_hash, mod_sum
            )
        part = _ModPart(info.value, mod.value, mod_sum, lines.value)
        self._recent.put(module, part)
        return part

    def whole_for_go_mod(self, module: str) -> bool:
        # Over HTTP a go.mod alone is one small request; from a VCS (GOPRIVATE, a
        # "direct" entry) it is as dear as the whole (see GoFetcher).
        return self._client.plan.goes_direct(module)

    async def fetch_mod(self, module: str, version: str) -> FetchedMod:
        if not self._client.plan.goes_direct(module):
            try:
                part = await self._mod(module, version)
            except UseDirect:
                pass
            else:
                return FetchedMod(
                    module, part.info.version, _info_bytes(part.info), part.mod, part.mod_sum
                )
        return await self._direct.fetch_mod(module, version)

    @contextlib.asynccontextmanager
    async def fetch(self, module: str, version: str) -> AsyncIterator[FetchedVersion]:
        if not self._client.plan.goes_direct(module):
            # A name of its own rather than a directory: no mkdir and rmdir blocking the
            # event loop on every fetch (the download writes it under a temporary name
            # and renames it; a save takes it by renaming it into storage).
            zip_file = Path(self._temp_root or tempfile.gettempdir()) / (
                f"athens-upstream-{secrets.token_hex(8)}.zip"
            )
            try:
                try:
                    fetched = await self._fetch(module, version, zip_file)
                except UseDirect:
                    pass
                else:
                    yield fetched
                    return
            finally:
                # Synchronous, so that it also runs while being cancelled.
                with contextlib.suppress(OSError):
                    zip_file.unlink()
        async with self._direct.fetch(module, version) as fetched:
            yield fetched

    async def _fetch(self, module: str, version: str, zip_file: Path) -> FetchedVersion:
        part = self._recent.take(module, version)
        if part is not None:
            await self._client.download_zip(module, version, zip_file)
        elif is_canonical_version(version):
            mod_part = _Call(lambda: self._mod(module, version))
            download = _Call(lambda: self._client.download_zip(module, version, zip_file))
            await _in_order(mod_part, download)
            part = mod_part.value
        else:
            part = await self._mod(module, version)
            await self._client.download_zip(module, part.info.version, zip_file)
        self._recent.take(module, part.info.version)  # its zip is here: no longer needed
        resolved = part.info.version
        zip_sum = await trio.to_thread.run_sync(_zip_sum, module, resolved, zip_file)
        if part.lines is not None and zip_sum != part.lines.zip_hash:
            raise ChecksumMismatchError(module, resolved, part.lines.zip_hash, zip_sum)
        return FetchedVersion(
            module=module,
            version=resolved,
            info=_info_bytes(part.info),
            mod=part.mod,
            zip_file=zip_file,
            zip_sum=zip_sum,
            mod_sum=part.mod_sum,
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
            except UseDirect:
                pass
            else:
                # latest would be another request (the .info of the highest version),
                # which a list does not need: resolve(module, "latest") asks it.
                return UpstreamVersions(versions, None)
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
