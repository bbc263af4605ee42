"""Fetcher: takes one module version from its VCS with ``go mod download -json``, or
only its go.mod with ``go list -m -json``."""

from __future__ import annotations

import abc
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec
import trio

from .._exceptions import FetchTimeoutError, NewerGoRequiredError, NotFoundError, UpstreamError
from .._module import check_path, check_version_query, is_canonical_version
from .._ziphash import mod_h1
from ._gocmd import GoResult, GoRunner, classify_go_error, scrub_paths
from ._golist import go_list_module
from ._toolchain import Toolchains, required_go

__all__ = ["FetchedMod", "FetchedVersion", "Fetcher", "GoFetcher", "VersionInfo", "encode_info"]


class VersionInfo(msgspec.Struct, frozen=True):
    """The ``.info`` document of the GOPROXY protocol."""

    Version: str
    Time: datetime


_info_encoder = msgspec.json.Encoder()


def encode_info(info: VersionInfo) -> bytes:
    return _info_encoder.encode(info)


@dataclass(frozen=True)
class FetchedVersion:
    """One fetched version, alive only inside :meth:`Fetcher.fetch`'s block."""

    module: str
    version: str  # canonical: what the query resolved to
    info: bytes  # {"Version", "Time"} JSON
    mod: bytes
    zip_file: Path  # may be moved away by storage
    zip_sum: str  # go's "h1:" hash of the zip
    mod_sum: str = ""  # go's "h1:" hash of the go.mod


@dataclass(frozen=True)
class FetchedMod:
    """A version's ``.info`` and ``go.mod``, fetched without its zip."""

    module: str
    version: str  # canonical
    info: bytes  # {"Version", "Time"} JSON
    mod: bytes
    mod_sum: str  # go's "h1:" hash of the go.mod


class Fetcher(abc.ABC):
    """Takes versions from upstream.  Callers resolve queries first (``Lister.resolve``)
    and hand a fetcher canonical versions; a query still works where the implementation
    can resolve it, but nothing relies on that."""

    @abc.abstractmethod
    def fetch(
        self, module: str, version: str
    ) -> contextlib.AbstractAsyncContextManager[FetchedVersion]:
        """Fetch the whole of ``module`` at ``version``: info, go.mod and zip.

        The files live until the block exits.  Raises NotFoundError when the module or
        version does not exist, UpstreamError (FetchTimeoutError) when fetching failed.
        """

    @abc.abstractmethod
    async def fetch_mod(self, module: str, version: str) -> FetchedMod:
        """Fetch only the ``.info`` and ``go.mod`` of a canonical ``version``: what a
        client walking the module graph needs, without building or downloading the
        zip.  Errors as :meth:`fetch`."""

    def whole_for_go_mod(self, module: str) -> bool:
        """Whether a go.mod of ``module`` is best fetched with its whole version: when
        fetching it alone costs about what the whole does, the zip is had for little
        more, and the client's request for it (which usually follows) costs nothing."""
        return False


class _GoModDownload(msgspec.Struct):
    """The fields of ``go mod download -json`` output that we use."""

    Path: str = ""
    Version: str = ""
    Error: str = ""
    Info: str = ""
    GoMod: str = ""
    Zip: str = ""
    Sum: str = ""
    GoModSum: str = ""


_download_decoder = msgspec.json.Decoder(_GoModDownload)
_info_decoder = msgspec.json.Decoder(VersionInfo)


class GoFetcher(Fetcher):
    """Runs ``go mod download -json <module>@<version>`` (in a temporary GOPATH, when
    ``runner`` is the real one) under ``timeout`` seconds (StashTimeout)."""

    def __init__(
        self, runner: GoRunner, *, timeout: float, toolchains: Toolchains | None = None
    ) -> None:
        self._runner = runner
        self._timeout = timeout
        # Where a zip needing a newer go than ours gets one; None: such a zip is a 502.
        self._toolchains = toolchains

    @contextlib.asynccontextmanager
    async def fetch(self, module: str, version: str) -> AsyncIterator[FetchedVersion]:
        # The gate again, whoever the caller: nothing unchecked reaches go's argv.
        check_path(module)
        check_version_query(version)
        what = f"fetching {module}@{version}"
        args = ["mod", "download", "-json", f"{module}@{version}"]
        async with self._runner.run(args, timeout=self._timeout, what=what) as result:
            download = _decode_download(result, what)
            failure = _download_failure(download, result, module, version)
            if failure is None:
                yield await _fetched(download, module, what)
                return
            need = None
            if download.Error:
                need = required_go(download.Error, module=module, query=version)
            if need is None:
                raise failure
            if self._toolchains is None:
                raise NewerGoRequiredError(str(failure)) from None
        # go refused the zip only for want of a newer go: once more, switching to one.
        try:
            runner = await self._toolchains.runner_for(need)
        except (NewerGoRequiredError, FetchTimeoutError):
            raise  # a timeout stays one (a 504, not a 502)
        except UpstreamError as exc:
            raise NewerGoRequiredError(str(exc)) from exc
        async with runner.run(args, timeout=self._timeout, what=what) as result:
            download = _decode_download(result, what)
            failure = _download_failure(download, result, module, version)
            if failure is not None:
                raise failure
            yield await _fetched(download, module, what)

    def whole_for_go_mod(self, module: str) -> bool:
        # From a VCS, go fetches the repository at the version's commit for a go.mod as
        # for a zip: fetched alone, the zip asked next would cost a second go run and
        # fetch (a cold graph: twice the go runs, 1.7x the time).  So, as Athens, the
        # whole version.
        return True

    async def fetch_mod(self, module: str, version: str) -> FetchedMod:
        # go list fetches the go.mod (and the .info's time) but not the zip; the go.mod
        # hash is go's /go.mod go.sum line, computed here as go would.
        listed = await go_list_module(
            self._runner, module, version, timeout=self._timeout, read_mod=True
        )
        assert listed.mod is not None
        return FetchedMod(
            module=module,
            version=listed.version,
            info=encode_info(VersionInfo(Version=listed.version, Time=listed.time)),
            mod=listed.mod,
            mod_sum=mod_h1(listed.mod),
        )


def _decode_download(result: GoResult, what: str) -> _GoModDownload:
    try:
        return _download_decoder.decode(result.stdout)
    except msgspec.DecodeError:
        stderr = result.stderr.decode(errors="replace").strip()
        tail = scrub_paths(stderr[-2000:], result.private_paths)
        raise UpstreamError(f"{what}: go exited {result.returncode} without JSON: {tail}") from None


def _download_failure(
    download: _GoModDownload, result: GoResult, module: str, version: str
) -> NotFoundError | UpstreamError | None:
    """Why go's download failed, None when it did not."""
    if download.Error or result.returncode != 0:
        return classify_go_error(
            download.Error or result.stderr.decode(errors="replace"),
            module=module,
            query=version,
            private_paths=result.private_paths,
        )
    return None


async def _fetched(download: _GoModDownload, module: str, what: str) -> FetchedVersion:
    if download.Path != module or not is_canonical_version(download.Version):
        raise UpstreamError(f"{what}: go reported {download.Path}@{download.Version} instead")
    info = _info_decoder.decode(await trio.Path(download.Info).read_bytes())
    zip_file = Path(download.Zip)
    # go leaves its cache read-only; storage may move the zip out of it.
    await trio.to_thread.run_sync(
        os.chmod, zip_file.parent, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP
    )
    return FetchedVersion(
        module=module,
        version=download.Version,
        info=encode_info(VersionInfo(Version=download.Version, Time=info.Time)),
        mod=await trio.Path(download.GoMod).read_bytes(),
        zip_file=zip_file,
        zip_sum=download.Sum,
        mod_sum=download.GoModSum,
    )
