"""The download protocol: list, latest, info, mod and zip, storage first.

Every request is first made a canonical version: a canonical version is one already;
a query (a branch, a commit, ``latest``, ``v1.2``) is resolved by the lister.  Then
policy is checked on that version (the filter's version rules for a query; the
filter's check of a canonical version ran before anything; DownloadMode on a miss; the
validator hook inside the fetch).  Then a stored version is served from storage (a
stored branch target costs no fetch); on a miss the stasher fetches and saves only the
part asked for (``.info``/``.mod``: the go.mod part; ``.zip``: the whole version), and
it is served from storage, so what a client gets is always what storage holds.
``list`` and ``latest`` ask upstream through the lister and merge what storage has, as
``NetworkMode`` says.  Where nothing may be asked upstream (NetworkMode ``offline``, or
DownloadMode ``none`` for the module: a read-only mirror), ``list``, ``latest`` and
queries are answered from storage alone.

What storage answers alone never waits for upstream work: with the protocol pool
(:meth:`StorageFirst.pool_misses`), only the calls that go upstream (a fetch, a
repair, a list, a query's resolution) take one of its slots, so a stored version is
served whatever the misses are doing.  The async modes' background fetches are
bounded apart (``background_queue``): beyond it a miss starts none (logged, counted).
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

import trio

from .._endpoints import INFO, MOD, ZIP, Endpoint
from .._exceptions import (
    AthensTrioError,
    DamagedVersionError,
    FetchStoppedError,
    FetchTimeoutError,
    InvalidVersionError,
    NotFoundError,
    Redirected,
    UpstreamError,
)
from .._module import (
    check_path,
    check_path_major,
    check_version_query,
    is_canonical_version,
    is_pseudo_version,
    split_path_version,
)
from .._semver import sort_versions
from ..stash import Part, Slots, Stasher
from ..storage import Backend, StoredZip
from ..upstream import Lister, UpstreamVersions, encode_info
from ._mode import DownloadPolicy
from ._repair import Repair
from ._resolution import latest_stored, resolve_stored

__all__ = [
    "DownloadProtocol",
    "LookupStatistics",
    "NetworkMode",
    "ProtocolWrapper",
    "StorageFirst",
    "VersionCheck",
    "new",
    "wrap",
]

NetworkMode = Literal["strict", "offline", "fallback"]

log = logging.getLogger("athens_trio.download")

T = TypeVar("T")


#: A policy check of a resolved version: ``check(module, version, endpoint, asked)``
#: raises ForbiddenError or Redirected (towards ``asked``, what the client asked for)
#: where the version may not be served here.
VersionCheck = Callable[[str, str, Endpoint, str], None]


def _part_of(endpoint: Endpoint) -> Part:
    return "zip" if endpoint is ZIP else "mod"


@dataclass(frozen=True)
class LookupStatistics:
    """What :meth:`StorageFirst.statistics` returns: storage lookups of info, mod and
    zip by endpoint name, of the canonical version asked for or resolved to.  A hit
    was served as stored; a miss went to DownloadMode (a fetch, joined or started).  An
    endpoint appears once it was looked up.  And the async modes' background fetches."""

    hits: Mapping[str, int]
    misses: Mapping[str, int]
    #: Background fetches (DownloadMode async, async_redirect) queued or running now.
    background: int = 0
    #: Background fetches not started because ``background_queue`` were pending.
    background_dropped: int = 0


class DownloadProtocol(abc.ABC):
    """What a GOPROXY serves, for one module path (unescaped) and version."""

    @abc.abstractmethod
    async def list(self, module: str) -> list[str]:
        """Tagged versions, upstream's merged with storage's, in semver order."""

    @abc.abstractmethod
    async def latest(self, module: str) -> bytes:
        """The ``.info`` JSON of the latest version."""

    @abc.abstractmethod
    async def info(self, module: str, version: str) -> bytes:
        """The ``.info`` JSON of a version, or of what a query resolves to."""

    @abc.abstractmethod
    async def go_mod(self, module: str, version: str) -> bytes:
        """The ``go.mod`` of a canonical version."""

    @abc.abstractmethod
    async def zip(self, module: str, version: str) -> StoredZip:
        """The zip of a canonical version, as a stream."""


ProtocolWrapper = Callable[[DownloadProtocol], DownloadProtocol]


def _check_canonical(module: str, version: str) -> None:
    check_path(module)
    check_version_query(version)
    if not is_canonical_version(version):
        raise InvalidVersionError(
            f"{version!r} is not a canonical version; .mod and .zip need one (ask .info)"
        )
    _, path_major, _ = split_path_version(module)
    try:
        check_path_major(version, path_major)
    except InvalidVersionError as exc:
        # Well formed, but no such version can exist at this path: that is a 404.
        raise NotFoundError(f"{module}@{version}: {exc}") from None


class StorageFirst(DownloadProtocol):
    """The download protocol itself (the wrappers add its pool and policies)."""

    def __init__(
        self,
        storage: Backend,
        stasher: Stasher,
        lister: Lister,
        network_mode: NetworkMode,
        policy: DownloadPolicy,
        background: trio.Nursery | None,
        version_check: VersionCheck | None = None,
        background_queue: int | None = None,
        whole_for_go_mod: Callable[[str], bool] | None = None,
    ) -> None:
        self._storage = storage
        self._whole_for_go_mod = whole_for_go_mod
        self._version_check = version_check
        self._hits: Counter[str] = Counter()
        self._misses: Counter[str] = Counter()
        self._stasher = stasher
        self._lister = lister
        self._network_mode = network_mode
        self._policy = policy
        self._background = background
        self._background_queue = background_queue
        self._background_pending = 0
        self._background_dropped = 0
        self._repair = Repair(storage, stasher)
        self._miss_slots: Slots | None = None

    def statistics(self) -> LookupStatistics:
        """Storage hits and misses so far, by endpoint, and the background fetches."""
        return LookupStatistics(
            hits=dict(self._hits),
            misses=dict(self._misses),
            background=self._background_pending,
            background_dropped=self._background_dropped,
        )

    def pool_misses(self, slots: Slots) -> None:
        """From now on, what goes upstream (a fetch, a repair, a list, a resolution)
        holds one of ``slots`` (OverloadedError when they and their queue are full);
        what storage answers alone takes none.  The protocol pool calls this."""
        self._miss_slots = slots

    @contextlib.asynccontextmanager
    async def _upstream_turn(self) -> AsyncIterator[None]:
        """A slot of the protocol pool (if any) for a call that goes upstream."""
        if self._miss_slots is None:
            yield
            return
        async with self._miss_slots.slot():
            yield

    def _looked_up(self, endpoint: Endpoint, hit: bool) -> None:
        (self._hits if hit else self._misses)[endpoint.name] += 1

    async def _upstream_or_storage(self, module: str) -> tuple[UpstreamVersions | None, list[str]]:
        """Upstream's answer (None where NetworkMode lets storage answer alone) and the
        stored versions.  (One after the other: storage answers in a blink next to go,
        and callers get a plain exception rather than a group.)"""
        check_path(module)
        stored = await self._storage.list_versions(module)
        upstream: UpstreamVersions | None = None
        error: NotFoundError | UpstreamError | None = None
        storage_only = self._storage_only(module)
        if storage_only is None:
            try:
                async with self._upstream_turn():
                    upstream = await self._lister.list(module)
            except (NotFoundError, UpstreamError) as exc:
                error = exc

        if error is not None:
            if not self._storage_may_answer(error, stored):
                raise error
        elif upstream is None and not stored:
            raise NotFoundError(f"{module}: no versions in storage ({storage_only})")
        return upstream, stored

    def _storage_may_answer(self, error: NotFoundError | UpstreamError, stored: list[str]) -> bool:
        """Whether what storage holds answers where upstream failed with ``error``:
        in NetworkMode strict, only where it said "does not exist"."""
        if not stored:
            return False
        return self._network_mode != "strict" or isinstance(error, NotFoundError)

    def _storage_only(self, module: str) -> str | None:
        """Why nothing about ``module`` may be asked upstream (then storage answers
        alone), or None: NetworkMode offline, or DownloadMode none, a read-only mirror,
        whose list or query must not name a version it would refuse to fetch."""
        if self._network_mode == "offline":
            return "NetworkMode offline"
        if self._policy.mode_for(module) == "none":
            return "DownloadMode none"
        return None

    async def list(self, module: str) -> list[str]:
        upstream, stored = await self._upstream_or_storage(module)
        tagged = [v for v in stored if not is_pseudo_version(v)]
        if upstream is None and not tagged:
            return sort_versions(stored)  # storage holds only pseudo-versions
        merged = set(tagged) | set(upstream.versions if upstream else ())
        return sort_versions(list(merged))

    async def latest(self, module: str) -> bytes:
        upstream, stored = await self._upstream_or_storage(module)
        if upstream is not None:
            if upstream.latest is not None:
                return encode_info(upstream.latest)
            try:
                async with self._upstream_turn():  # the listing did not say
                    return encode_info(await self._lister.resolve(module, "latest"))
            except (NotFoundError, UpstreamError) as exc:
                if not self._storage_may_answer(exc, stored):
                    raise
        latest = latest_stored(stored)
        assert latest is not None, "storage answers alone only when it holds versions"
        return await self._storage.info(module, latest)

    async def info(self, module: str, version: str) -> bytes:
        check_path(module)
        check_version_query(version)
        if is_canonical_version(version):
            _check_canonical(module, version)
            return await self._read_or_fetch(self._storage.info, module, version, INFO)
        # A query: resolved first, then checked and served as its canonical version.
        storage_only = self._storage_only(module)
        if storage_only is None:
            async with self._upstream_turn():
                resolved = (await self._lister.resolve(module, version)).Version
        else:
            stored = await self._storage.list_versions(module)
            resolved = resolve_stored(module, version, stored, storage_only)
        if self._version_check is not None:
            self._version_check(module, resolved, INFO, version)
        return await self._read_or_fetch(self._storage.info, module, resolved, INFO, version)

    async def _read_or_fetch(
        self,
        read: Callable[[str, str], Awaitable[T]],
        module: str,
        version: str,
        endpoint: Endpoint,
        asked: str | None = None,
    ) -> T:
        """Storage first (one read, no separate existence check); on a miss, DownloadMode.
        ``version`` is canonical; ``asked`` is what the client asked for (a query)."""
        try:
            found = await read(module, version)
        except NotFoundError:
            pass
        else:
            self._looked_up(endpoint, True)
            return found
        self._looked_up(endpoint, False)
        await self._on_miss(module, version, endpoint, asked or version)
        return await read(module, version)

    async def _on_miss(self, module: str, version: str, endpoint: Endpoint, asked: str) -> None:
        """Stash the part of the canonical ``version`` that ``endpoint`` serves, as
        DownloadMode says; raise NotFoundError / Redirected (towards what the client
        ``asked``) when the mode answers without waiting for it."""
        mode = self._policy.mode_for(module)
        if mode == "sync":
            async with self._upstream_turn():
                await self._stash_for(module, version, endpoint)
            return
        if mode in ("async", "async_redirect"):
            self._stash_in_background(module, version, endpoint)
        if mode in ("redirect", "async_redirect"):
            location = self._policy.url_for(module).rstrip("/") + endpoint.path(module, asked)
            raise Redirected(location, 301, f"{module}@{asked} is not stored here")
        raise NotFoundError(
            f"{module}@{asked} is not stored here yet (DownloadMode {mode}"
            + (": fetching it now, ask again soon)" if mode == "async" else ")")
        )

    async def _stash_for(self, module: str, version: str, endpoint: Endpoint) -> None:
        """Stash what ``endpoint`` serves: the zip's part is the whole version; the
        go.mod part alone, or the whole version where the fetcher says a go.mod costs
        as much (from a VCS: then a .mod and a .zip of one version are one fetch, and
        the zip a client asks after the go.mod is stored already)."""
        part = _part_of(endpoint)
        if part == "zip" or self._whole_for_go_mod is None or not self._whole_for_go_mod(module):
            await self._stasher.stash(module, version, part)
            return
        try:
            await self._stasher.stash(module, version, "zip")
        except (FetchTimeoutError, FetchStoppedError):
            raise  # the go.mod alone would take as long, or nobody waits: this is the answer
        except UpstreamError:
            # The zip could not be had (it needs a go the proxy cannot have, go refuses
            # to build it, it is past MaxFetchBytes...): the go.mod part can be served
            # all the same, as go itself would (a proxy builds nothing).
            await self._stasher.stash(module, version, "mod")

    def _stash_in_background(self, module: str, version: str, endpoint: Endpoint) -> None:
        assert self._background is not None, "async download modes need a nursery"
        queue = self._background_queue
        if queue is not None and self._background_pending >= queue:
            # Dropped, not queued: the client was answered already, and asks again.
            self._background_dropped += 1
            log.warning(
                "background fetch of %s@%s dropped: %d are pending (BackgroundFetchQueue)",
                module,
                version,
                self._background_pending,
            )
            return

        async def stash_quietly() -> None:
            try:
                await self._stash_for(module, version, endpoint)
            except AthensTrioError as exc:  # nobody is waiting: the log is the answer
                log.warning("background fetch of %s@%s failed: %s", module, version, exc)
            finally:
                self._background_pending -= 1

        self._background_pending += 1
        self._background.start_soon(stash_quietly, name=f"background stash {module}@{version}")

    async def go_mod(self, module: str, version: str) -> bytes:
        return await self._read_intact(self._storage.go_mod, module, version, MOD)

    async def zip(self, module: str, version: str) -> StoredZip:
        return await self._read_intact(self._storage.zip, module, version, ZIP)

    async def _read_intact(
        self,
        read: Callable[[str, str], Awaitable[T]],
        module: str,
        version: str,
        endpoint: Endpoint,
    ) -> T:
        """As :meth:`_read_or_fetch`; a version that storage finds damaged after it was
        stored (a crash, a full disk, a hand) is never served: it is repaired first."""
        _check_canonical(module, version)
        try:
            return await self._read_or_fetch(read, module, version, endpoint)
        except DamagedVersionError as exc:
            damage = exc
        async with self._upstream_turn():  # a repair fetches again
            return await self._repair(read, module, version, _part_of(endpoint), damage)


def new(
    storage: Backend,
    stasher: Stasher,
    lister: Lister,
    *,
    network_mode: NetworkMode = "strict",
    policy: DownloadPolicy | None = None,
    background: trio.Nursery | None = None,
    version_check: VersionCheck | None = None,
    background_queue: int | None = None,
    whole_for_go_mod: Callable[[str], bool] | None = None,
) -> StorageFirst:
    """The download protocol over ``storage``; :func:`wrap` adds the pool and policies,
    as Athens' ``download.New(opts, addons.WithPool(n))``.

    ``storage`` wrapped by :func:`athens_trio.storage.with_integrity` (the pipeline's
    is) raises DamagedVersionError for a damaged go.mod or zip; the protocol then
    repairs the version (remove, fetch again) before serving it.
    ``policy`` is the DownloadMode (sync when None); the async modes start their fetches
    in ``background``, a nursery that outlives the request (the pipeline's).
    ``version_check`` (the filter's, :class:`~athens_trio.download.FilterCheck`) is
    asked about the version a query resolved to before it is served or fetched.
    ``lister`` answers queries too: give it a :class:`~athens_trio.download.CachedLister`.
    ``background_queue`` bounds the background fetches pending at once (None: no
    bound); beyond it a miss starts none.  ``whole_for_go_mod`` (the fetcher's) says
    for which modules a go.mod miss fetches the whole version.
    """
    policy = policy or DownloadPolicy()
    modes = {policy.mode, *(rule.mode for rule in policy.rules)}
    if modes & {"async", "async_redirect"} and background is None:
        raise ValueError("the async download modes need a background nursery")
    return StorageFirst(
        storage,
        stasher,
        lister,
        network_mode,
        policy,
        background,
        version_check,
        background_queue,
        whole_for_go_mod,
    )


def wrap(protocol: DownloadProtocol, *wrappers: ProtocolWrapper) -> DownloadProtocol:
    """``protocol`` wrapped by each wrapper in turn (the last one outermost)."""
    for wrapper in wrappers:
        protocol = wrapper(protocol)
    return protocol
