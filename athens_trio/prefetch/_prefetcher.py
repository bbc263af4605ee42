"""Prefetch: when a go.mod is served, fetch the go.mod parts the client will ask for next.

The go command walks a module graph a level at a time, with few requests in flight, and
each level waits on the go.mod files of the one above: the proxy, serving a go.mod, knows
what comes next.  :class:`Prefetcher` takes the requirements of each go.mod served (and,
as they land, of the ones it fetched, down to ``depth`` levels) where go will read them,
that is where the go.mod is not pruned (below go 1.17: see :mod:`._gomod`), and asks the
download protocol for their go.mod, so that each goes through the same filter,
DownloadMode, validator hook, single-flight and checksum verification as a client's
request, and a client asking meanwhile joins the fetch in flight.  Never a zip.

Clients first: ``workers`` prefetches at most run at once, each only while the fetch
pool (GoGetWorkers) has a free slot and nobody waiting for one; the queue is bounded
(what does not fit is dropped) and a module version is queued again only when a client
came nearer to it (the depth counts from the go.mod a client was served).  Nearest
first: the queue hands out the smallest depth, then the oldest, so the requirements of a
go.mod just served to a client (what go asks next) pass the deeper ones queued by
earlier prefetches (what go may ask later); when it is full, a nearer one takes the
place of the newest of the deepest.  A worker takes its entry only once a fetch slot is
free, so the entry is the nearest at that moment.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .._exceptions import AthensTrioError, NotFoundError
from .._module import is_canonical_version
from ..download import DownloadProtocol
from ..storage import Backend, StoredZip
from ._gomod import parse_go_mod, surely_pruned

__all__ = ["PrefetchStatistics", "Prefetcher", "with_prefetch"]

log = logging.getLogger("athens_trio.prefetch")

#: Versions waiting at most; beyond, new ones are dropped.
QUEUE = 10_000
#: Versions remembered as queued once, and as prefetched and not yet asked for.
REMEMBERED = 100_000
#: How long a prefetch waits before looking again for a free fetch slot.
_ROOM_POLL = 0.01


@dataclass(frozen=True)
class PrefetchStatistics:
    """What :meth:`Prefetcher.statistics` returns."""

    queued: int  # waiting now
    in_flight: int  # being fetched now
    dropped: int  # not queued: the queue was full
    prefetched: int  # go.mod parts fetched by prefetching (storage lacked them)
    asked: int  # of those, asked for by a client afterwards
    failed: int  # refused by policy, not found upstream, or failed

    @property
    def hit_ratio(self) -> float | None:
        """Prefetched go.mod parts a client asked for, over prefetched (None before any)."""
        return self.asked / self.prefetched if self.prefetched else None


class _Bounded:
    """Module versions with a number each (a depth), remembering the latest ``size``."""

    def __init__(self, size: int) -> None:
        self._keys: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._size = size

    def offer(self, key: tuple[str, str], depth: int = 0) -> bool:
        """Record ``key`` at ``depth`` unless it is there at that depth or less; whether
        it was recorded."""
        if self._keys.get(key, depth + 1) <= depth:
            return False
        self._keys[key] = depth
        self._keys.move_to_end(key)
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True

    def discard(self, key: tuple[str, str]) -> bool:
        """Remove ``key``; whether it was there."""
        return self._keys.pop(key, None) is not None


class _NearestFirst:
    """Module versions waiting, with their depths (1 to ``depth``): handed out nearest
    first, then oldest first; at most ``size``."""

    def __init__(self, depth: int, size: int) -> None:
        self._by_depth: list[deque[tuple[str, str]]] = [deque() for _ in range(depth + 1)]
        self._size = size
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: tuple[str, str], depth: int) -> tuple[bool, tuple[str, str] | None]:
        """Queue ``key`` at ``depth``; return whether it was taken, and what it pushed
        out to be taken (when full: the newest of the deepest, if deeper than it)."""
        if self._count < self._size:
            self._by_depth[depth].append(key)
            self._count += 1
            return True, None
        deepest = next(d for d in range(len(self._by_depth) - 1, 0, -1) if self._by_depth[d])
        if deepest <= depth:
            return False, None
        pushed_out = self._by_depth[deepest].pop()
        self._by_depth[depth].append(key)
        return True, pushed_out

    def take(self) -> tuple[tuple[str, str], int]:
        """The nearest, oldest entry, and its depth (there is one)."""
        depth = next(d for d, waiting in enumerate(self._by_depth) if waiting)
        self._count -= 1
        return self._by_depth[depth].popleft(), depth


class Prefetcher:
    """Fetches, through ``protocol``, the go.mod parts of what served go.mod files
    require; ``storage`` says what is there already and ``room()`` whether a fetch slot
    is free for it.  :meth:`run` is its workers (in the pipeline's nursery)."""

    def __init__(
        self,
        protocol: DownloadProtocol,
        storage: Backend,
        room: Callable[[], bool],
        *,
        workers: int,
        depth: int,
    ) -> None:
        self._protocol = protocol
        self._storage = storage
        self._room = room
        self._workers = workers
        self._depth = depth
        # The queue, nearest first; the channel carries one token per entry, so that a
        # worker wakes for each (and takes whichever is nearest then).
        self._waiting = _NearestFirst(depth, QUEUE)
        self._send, self._receive = trio.open_memory_channel[None](QUEUE)
        self._queued = _Bounded(REMEMBERED)
        self._unasked = _Bounded(REMEMBERED)  # prefetched (or being), not yet asked for
        self._fetched = _Bounded(REMEMBERED)  # prefetched (or being)
        self._pending = 0  # queued or in flight (a handed-over item is in neither buffer)
        self._in_flight = 0
        self._dropped = 0
        self._prefetched = 0
        self._asked = 0
        self._failed = 0

    def statistics(self) -> PrefetchStatistics:
        return PrefetchStatistics(
            queued=self._pending - self._in_flight,
            in_flight=self._in_flight,
            dropped=self._dropped,
            prefetched=self._prefetched,
            asked=self._asked,
            failed=self._failed,
        )

    def asked(self, module: str, version: str) -> None:
        """A client asked for ``module@version``'s go.mod or .info: a hit if prefetched."""
        if self._unasked.discard((module, version)):
            self._asked += 1

    def served(self, go_mod: bytes, depth: int = 0) -> None:
        """A go.mod was served (``depth`` 0) or prefetched at ``depth``: queue what go
        will read next, unless go prunes the graph there or the depth is reached."""
        if depth >= self._depth or surely_pruned(go_mod):
            return
        parsed = parse_go_mod(go_mod)
        if parsed.pruned:
            return
        for module, version in parsed.requires:
            # Queued once, unless nearer a client now (its frontier moved on): then once
            # more, to look further ahead from there (a stored one costs a read).
            key = (module, version)
            if not self._queued.offer(key, depth + 1):
                continue
            taken, pushed_out = self._waiting.add(key, depth + 1)
            if not taken or pushed_out is not None:
                self._dropped += 1
                self._queued.discard(pushed_out or key)  # it may be queued again later
            if taken and pushed_out is None:
                self._send.send_nowait(None)  # never full: no more tokens than entries
                self._pending += 1

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self._workers):
                    nursery.start_soon(self._work)
        finally:
            stats = self.statistics()
            log.info(
                "prefetch: %d go.mod parts prefetched, %d of them asked for since, %d failed",
                stats.prefetched,
                stats.asked,
                stats.failed,
                extra={"fields": {"prefetched": stats.prefetched, "asked": stats.asked}},
            )

    async def _work(self) -> None:
        async for _ in self._receive:
            # Clients first.  A CapacityLimiter tells no one when a slot frees, so look.
            while not self._room():  # noqa: ASYNC110
                await trio.sleep(_ROOM_POLL)
            (module, version), depth = self._waiting.take()
            self._in_flight += 1
            try:
                await self._prefetch(module, version, depth)
            except AthensTrioError as exc:  # nobody waits for it: the log is the answer
                self._failed += 1
                log.debug("prefetch of %s@%s: %s", module, version, exc)
            finally:
                self._in_flight -= 1
                self._pending -= 1

    async def _prefetch(self, module: str, version: str, depth: int) -> None:
        key = (module, version)
        try:
            go_mod = await self._storage.go_mod(module, version)
        except NotFoundError:
            # Counted once per version; a client asking while it is in flight (joining
            # it) asked for a prefetched one.
            first = self._fetched.offer(key)
            if first:
                self._unasked.offer(key)
            try:
                go_mod = await self._protocol.go_mod(module, version)
            except BaseException:
                if first:
                    self._fetched.discard(key)
                    if not self._unasked.discard(key):
                        self._asked -= 1  # asked for, but not prefetched after all
                raise
            if first:
                self._prefetched += 1
        self.served(go_mod, depth)


class _Prefetching(DownloadProtocol):
    def __init__(self, inner: DownloadProtocol, prefetcher: Prefetcher) -> None:
        self._inner = inner
        self._prefetcher = prefetcher

    async def list(self, module: str) -> list[str]:
        return await self._inner.list(module)

    async def latest(self, module: str) -> bytes:
        return await self._inner.latest(module)

    async def info(self, module: str, version: str) -> bytes:
        if is_canonical_version(version):
            self._prefetcher.asked(module, version)
        return await self._inner.info(module, version)

    async def go_mod(self, module: str, version: str) -> bytes:
        self._prefetcher.asked(module, version)
        go_mod = await self._inner.go_mod(module, version)
        self._prefetcher.served(go_mod)
        return go_mod

    async def zip(self, module: str, version: str) -> StoredZip:
        return await self._inner.zip(module, version)


def with_prefetch(prefetcher: Prefetcher) -> Callable[[DownloadProtocol], DownloadProtocol]:
    """A protocol wrapper telling ``prefetcher`` of every go.mod served and of what
    clients ask for (give it the protocol the prefetcher does not fetch through)."""
    return lambda inner: _Prefetching(inner, prefetcher)
