"""Go toolchains for modules that need a newer go than the proxy's.

go (since 1.21) refuses to build the zip of a module whose go.mod asks for a newer go:
``requires go >= 1.27.0 (running go 1.26.8; GOTOOLCHAIN=local)``.  A proxy builds
nothing, so its own go must not limit what it serves.  go's own answer is a toolchain
switch: ``GOTOOLCHAIN=go1.27.0+path`` makes the installed go exec a ``go1.27.0`` it finds
in PATH (and unset GOROOT for it), never downloading one.  :class:`Toolchains` keeps
such toolchains in a persistent directory, obtains each once (by letting go itself
download and unpack it, from ``GoToolchainProxy``), and hands out a runner whose PATH
holds them:

    <dir>/go1.27.0/mod/golang.org/toolchain@v0.0.1-go1.27.0.<os>-<arch>/  (the toolchain)
    <dir>/bin/go1.27.0 -> that toolchain's bin/go                            (published)

A toolchain is unpacked in a staging directory and renamed into place whole; only then
is its bin/ link made, so a half download is never used, by this process or another.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from .._exceptions import UpstreamError
from .._ownership import remove_tree
from .._redact import redact_urls
from ._gocmd import GoProcessRunner, _message_proper, scrub_paths

__all__ = ["FAILURE_KEPT", "ToolchainStatistics", "Toolchains", "required_go"]

# go's TooNewError, as go words it for GOTOOLCHAIN=local: "<what> requires go >= V
# (running go L; GOTOOLCHAIN=local)".  Read on go's message proper only (without module
# path, query and server paths), so no part of a request can ask for a toolchain.
_TOO_NEW = re.compile(
    r"(?:^|\s)requires go >= (\S+) \(running go [0-9A-Za-z.]+; GOTOOLCHAIN=local\)"
)
# A go version (gover's syntax, since go 1.21): 1.N, 1.N.P, 1.NrcK, 1.NbetaK.
_GO_VERSION = re.compile(
    r"1\.(0|[1-9][0-9]{0,3})(?:\.(0|[1-9][0-9]{0,3})|(beta|rc)([1-9][0-9]{0,3}))?"
)
_STAGES = {"beta": 1, "rc": 2}
_TOOLCHAIN_MODULE = "golang.org/toolchain"
#: Seconds a toolchain that could not be had stays the answer (not asked for again).
FAILURE_KEPT = 60.0


def _version_key(version: str) -> tuple[int, int, int] | None:
    """``version``'s order as go's gover compares (1.27 < 1.27beta1 < 1.27rc1 <
    1.27.0 < 1.27.1); None when it is not a go version."""
    match = _GO_VERSION.fullmatch(version)
    if match is None:
        return None
    minor, patch, stage, number = match.groups()
    if patch is not None:
        return (int(minor), 3, int(patch))
    if stage is not None:
        return (int(minor), _STAGES[stage], int(number))
    return (int(minor), 0, 0)


def required_go(message: str, *, module: str, query: str) -> str | None:
    """The go version go's ``message`` (for ``module@query``) says the module needs,
    when that is why go failed; None otherwise or when it is not a well-formed version."""
    match = _TOO_NEW.search(_message_proper(scrub_paths(message), module, query))
    if match is None or _version_key(match.group(1)) is None:
        return None
    return match.group(1)


def _toolchain_for(need: str) -> str:
    """The toolchain to download for ``need``: itself, or a language version's first
    release (go 1.27's toolchain is go1.27.0)."""
    key = _version_key(need)
    assert key is not None
    _minor, stage, _number = key
    return f"{need}.0" if stage == 0 else need


@dataclass(frozen=True)
class ToolchainStatistics:
    #: Toolchains downloaded by this process.
    downloads: int
    #: The go versions of the toolchains at hand, oldest first.
    available: tuple[str, ...]


class Toolchains:
    """The toolchains in ``directory``; new ones come from the GOPROXY ``proxy``.

    ``runner`` is the fetcher's go: its environment (GOSUMDB, GONOSUMDB, credentials,
    HTTP proxies) is the download's, so go checks each toolchain's checksum as it
    would its own.  Each toolchain version is downloaded once: concurrent fetches
    needing it wait for one download (and a download that fails or is cancelled leaves
    nothing behind); processes sharing ``directory`` each rename theirs into place
    whole, the first one winning."""

    def __init__(
        self, runner: GoProcessRunner, directory: Path, *, proxy: str, timeout: float
    ) -> None:
        self._runner = runner
        self._directory = directory
        self._proxy = proxy
        self._timeout = timeout
        self._locks: dict[str, trio.Lock] = {}
        # A toolchain that could not be had: until when that is the answer, and which.
        self._failures: dict[str, tuple[float, UpstreamError]] = {}
        self._downloads = 0

    @property
    def _bin(self) -> Path:
        return self._directory / "bin"

    def statistics(self) -> ToolchainStatistics:
        return ToolchainStatistics(downloads=self._downloads, available=tuple(self._available()))

    def _available(self) -> list[str]:
        """The published toolchains' versions, oldest first."""
        try:
            names = os.listdir(self._bin)
        except FileNotFoundError:
            return []
        versions = [
            name[2:]
            for name in names
            if name.startswith("go")
            and _version_key(name[2:]) is not None
            and os.path.exists(self._bin / name)  # the link's toolchain is there
        ]
        return sorted(versions, key=lambda v: _version_key(v) or (0, 0, 0))

    def _check_private(self) -> None:
        """Refuse a directory (or bin/) someone else could write: a go1.N link planted
        there would run as this server.  (The default lies under the system temp dir.)"""
        for directory in (self._directory, self._bin):
            try:
                info = os.lstat(directory)
            except FileNotFoundError:
                continue  # made private when first needed
            if (
                not stat.S_ISDIR(info.st_mode)
                or info.st_uid != os.getuid()
                or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            ):
                raise UpstreamError(
                    "GoToolchainDir is not a directory private to this server: not using it"
                )

    def _best(self, need: str) -> str | None:
        """The oldest toolchain at hand that is at least ``need``."""
        need_key = _version_key(need)
        assert need_key is not None
        for version in self._available():
            key = _version_key(version)
            if key is not None and key >= need_key:
                return version
        return None

    async def runner_for(self, need: str) -> GoProcessRunner:
        """A runner whose go switches to a toolchain of at least go ``need`` (a version
        :func:`required_go` returned), downloading that toolchain first if none is at
        hand.  Raises UpstreamError when it cannot be had."""
        if _version_key(need) is None:  # the gate again: nothing unchecked reaches go
            raise ValueError(f"not a go version: {need!r}")
        await trio.to_thread.run_sync(self._check_private)
        version = self._best(need)
        if version is None:
            wanted = _toolchain_for(need)
            lock = self._locks.setdefault(wanted, trio.Lock())
            async with lock:
                version = self._best(need)
                if version is None:
                    await self._download_unless_failed(wanted)
                    version = wanted
        return self._runner.with_env({"GOTOOLCHAIN": f"go{version}+path"}, prepend_path=self._bin)

    async def _download_unless_failed(self, version: str) -> None:
        """:meth:`_download`, unless it failed less than :data:`FAILURE_KEPT` seconds
        ago: then that failure again.  The fetches that waited on a failing download
        (one at a time, behind its lock) fail with it, rather than each trying once more
        and waiting for its own timeout in turn."""
        failed = self._failures.pop(version, None)
        if failed is not None and trio.current_time() < failed[0]:
            self._failures[version] = failed
            # A copy each time (as single-flight shares a failure): one exception raised
            # in many tasks would gather their tracebacks and contexts.
            raise copy.copy(failed[1]).with_traceback(None)
        try:
            await self._download(version)
        except UpstreamError as exc:
            self._failures[version] = (trio.current_time() + FAILURE_KEPT, exc)
            raise

    async def _download(self, version: str) -> None:
        """Have go download and unpack toolchain ``version`` into a staging directory
        (go sets the commands' exec bits and restores its go.mod files), then rename it
        into place and publish its link."""
        if self._proxy.strip() == "off":
            raise UpstreamError(
                f"the go{version} toolchain is not at hand and GoToolchainProxy is off"
            )
        await trio.to_thread.run_sync(_make_private_dir, self._directory)
        await trio.to_thread.run_sync(_make_private_dir, self._bin)
        # What a killed process left: no download runs longer than its timeout.
        await trio.to_thread.run_sync(_remove_stale_staging, self._directory, 2 * self._timeout)
        staging = Path(
            await trio.to_thread.run_sync(
                lambda: tempfile.mkdtemp(prefix=".staging-", dir=self._directory)
            )
        )
        try:
            runner = self._runner.with_env(
                {
                    "GOMODCACHE": str(staging / "mod"),
                    "GOPROXY": self._proxy,
                    # Exactly this toolchain: go downloads it (PATH aside) and runs it.
                    "GOTOOLCHAIN": f"go{version}",
                }
            )
            what = f"obtaining the go{version} toolchain"
            async with runner.run(["version"], timeout=self._timeout, what=what) as result:
                output = result.stdout.decode(errors="replace")
                private = (*result.private_paths, str(self._directory))
                if result.returncode != 0 or f" go{version} " not in f" {output} ":
                    stderr = result.stderr.decode(errors="replace").strip()[-2000:]
                    raise UpstreamError(f"{what}: {self._public(stderr or output, private)}")
            await self._publish(version, staging)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(remove_tree, staging)
        self._downloads += 1

    def _public(self, text: str, private_paths: tuple[str, ...]) -> str:
        """go's ``text`` fit for a client: the toolchain proxies (a file:// one is a
        server path, an https one may carry credentials) named by their key, other URLs
        redacted, server paths scrubbed."""
        for entry in re.split(r"[,|]", self._proxy):
            if entry.strip():
                text = text.replace(entry.strip(), "$GoToolchainProxy")
        return scrub_paths(redact_urls(text), private_paths)

    async def _publish(self, version: str, staging: Path) -> None:
        unpacked = sorted(
            (staging / "mod" / _TOOLCHAIN_MODULE.replace("/", os.sep)).parent.glob(
                f"toolchain@v0.0.1-go{version}.*"
            )
        )
        if len(unpacked) != 1 or not (unpacked[0] / "bin" / "go").is_file():
            # e.g. a go{version} already in PATH ran instead: nothing was downloaded.
            raise UpstreamError(f"obtaining the go{version} toolchain: go unpacked none")
        relative = unpacked[0].relative_to(staging)
        await trio.to_thread.run_sync(remove_tree, staging / "mod" / "cache")
        home = self._directory / f"go{version}"
        await trio.to_thread.run_sync(_rename_unless_there, staging, home)
        await trio.to_thread.run_sync(
            _link, self._bin / f"go{version}", home / relative / "bin" / "go"
        )


def _make_private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _remove_stale_staging(directory: Path, older_than: float) -> None:
    now = time.time()
    for staging in directory.glob(".staging-*"):
        with contextlib.suppress(OSError):
            if now - staging.lstat().st_mtime > older_than:
                remove_tree(staging)


def _rename_unless_there(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError:
        if not (target / "mod").is_dir():  # not another process's finished toolchain
            raise


def _link(link: Path, target: Path) -> None:
    """``link`` -> ``target``, made atomically (replacing an identical one is harmless)."""
    temp = link.with_name(f".{link.name}.{os.getpid()}")
    temp.unlink(missing_ok=True)
    os.symlink(target, temp)
    os.replace(temp, link)
