"""Stasher: fetch a version, then save it.  Wrappers add the pool and single-flight."""

from __future__ import annotations

import abc
from collections.abc import Callable

from ..storage import Backend
from ..upstream import Fetcher

__all__ = ["Stasher", "Wrapper", "new"]


class Stasher(abc.ABC):
    @abc.abstractmethod
    async def stash(self, module: str, version: str) -> str:
        """Make ``module`` at ``version`` (a version or a query) present in storage and
        return the canonical version it resolved to."""


Wrapper = Callable[[Stasher], Stasher]


class _FetchAndSave(Stasher):
    """The plain stasher: the Fetcher and the Backend never meet except here."""

    def __init__(self, fetcher: Fetcher, storage: Backend) -> None:
        self._fetcher = fetcher
        self._storage = storage

    async def stash(self, module: str, version: str) -> str:
        async with self._fetcher.fetch(module, version) as fetched:
            # A query may resolve to a version someone stored already: keep theirs.
            if not await self._storage.exists(module, fetched.version):
                await self._storage.save(
                    module,
                    fetched.version,
                    info=fetched.info,
                    mod=fetched.mod,
                    zip_file=fetched.zip_file,
                    zip_sum=fetched.zip_sum,
                    mod_sum=fetched.mod_sum or None,
                )
            return fetched.version


def new(fetcher: Fetcher, storage: Backend, *wrappers: Wrapper) -> Stasher:
    """A stasher of ``fetcher`` into ``storage``, wrapped by each wrapper in turn: the
    last one given is the outermost, as in Athens' ``stash.New``."""
    stasher: Stasher = _FetchAndSave(fetcher, storage)
    for wrap in wrappers:
        stasher = wrap(stasher)
    return stasher
