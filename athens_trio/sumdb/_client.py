"""The checksum database client: lookups proven against signed, consistent trees."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import trio

from .._http import (
    IDENTITY,
    NOT_EXIST_STATUSES,
    RedirectRefused,
    aclose_shielded,
    content_encoding,
    raw_chunks,
    send_following,
)
from .._module import check_module_version, escape_path, escape_version
from ._env import GoSumDB, SumDBSettings
from ._errors import (
    ForkError,
    InconsistentTileError,
    MalformedResponseError,
    RecordNotFoundError,
    RecordProofError,
    SkippedModuleError,
    SumDBError,
    SumDBStateError,
    SumDBUnreachableError,
)
from ._note import open_note
from ._state import read_latest, write_latest
from ._sums import GoSumLines, parse_record_lines
from ._tiles import TileCache, TreeHashes
from ._tlog import (
    HASH_SIZE,
    TILE_HEIGHT,
    Tile,
    Tree,
    consistency_proof_ranges,
    inclusion_proof_ranges,
    parse_record,
    parse_tree,
    record_hash,
    root_from_inclusion,
    roots_from_consistency,
)

__all__ = [
    "FAILURE_KEPT",
    "AccessFinder",
    "Locate",
    "SumDBAccess",
    "SumDBClient",
    "SumDBStatistics",
]

_T = TypeVar("_T")

# A lookup answer is a record (two go.sum lines) and a signed note; a note's text and
# its signatures are small.  Anything bigger is not an answer.
_MAX_LOOKUP = 64 * 1024
_MAX_NOTE = 16 * 1024
_MAX_TILE = (1 << TILE_HEIGHT) * HASH_SIZE
#: At most this many authenticated tiles are kept hashed (see TreeHashes).
_KEPT_TILES = 64


class _Gone(Exception):
    """The database answered 404 or 410."""


@dataclass(frozen=True)
class SumDBStatistics:
    lookups: int
    tiles_fetched: int
    tile_cache_hits: int
    tiles_cached: int
    latest_size: int  # size of the newest verified tree (0 before the first)


@dataclass(frozen=True)
class _Signed:
    tree: Tree
    note: bytes


@dataclass(frozen=True)
class SumDBAccess:
    """Where a database's requests go: a base URL, and the credentials a proxy serving
    it gets (its userinfo in GOPROXY, or its netrc login), never part of the URL."""

    url: str
    auth: httpx.Auth | None = field(default=None, repr=False)


#: Finds the proxy that serves a database (by its name), as go walks GOPROXY before
#: its first request to it; None: no proxy does, reach the database directly.
Locate = Callable[[str], Awaitable[SumDBAccess | None]]

#: Seconds a failure to find out where a database is reached stays the answer.
FAILURE_KEPT = 5.0


class AccessFinder:
    """Where database ``name`` is reached: ``direct``, unless ``locate`` (None: never
    asked) finds a proxy serving it.  Found out once, one look at a time, within
    ``timeout`` seconds; a failure (:class:`SumDBUnreachableError`) is the answer of
    those who waited on that look and of those who ask within :data:`FAILURE_KEPT`
    seconds, so a dead upstream costs one timeout, not one per waiting request."""

    def __init__(
        self, name: str, direct: SumDBAccess, locate: Locate | None, *, timeout: float
    ) -> None:
        self._name = name
        self._direct = direct
        self._locate = locate
        self._timeout = timeout
        self._found: SumDBAccess | None = direct if locate is None else None
        self._failure: tuple[float, str] | None = None
        self._lock = trio.Lock()

    def found(self) -> SumDBAccess | None:
        """Where the database is reached, if found out already."""
        return self._found

    async def get(self) -> SumDBAccess:
        if (found := self.found()) is not None:
            return found
        async with self._lock:
            if (found := self.found()) is not None:
                return found  # by the look this one waited on
            if self._failure is not None and self._failure[0] > trio.current_time():
                raise SumDBUnreachableError(self._failure[1])
            assert self._locate is not None  # (else found from the start)
            try:
                with trio.fail_after(self._timeout):
                    located = await self._locate(self._name)
            except trio.TooSlowError:
                message = (
                    f"{self._name}: the GOPROXY list did not say in time whether it "
                    "serves the checksum database"
                )
            except SumDBUnreachableError as exc:
                message = str(exc)
            else:
                self._found = located or self._direct
                return self._found
            self._failure = (trio.current_time() + FAILURE_KEPT, message)
            raise SumDBUnreachableError(message)


class SumDBClient:
    """Looks module versions up in one checksum database.

    Every answer is trusted only once its signed tree head verifies with the key, the
    tree is consistent with the newest tree seen before (kept in ``state_dir``; a fork
    is a :class:`ForkError`), and the record is proven included in that tree from tiles
    authenticated against it.  Each HTTP request is bounded by ``timeout`` seconds and
    a size cap; at most ``max_tiles`` authenticated tiles are kept in memory.

    Where GOSUMDB names no URL, ``locate`` is asked once, before the first request, for
    a proxy serving the database (as go asks GOPROXY's ``/sumdb/<name>/supported``;
    :class:`AccessFinder`); a failure to find out is the request's failure.
    """

    def __init__(
        self,
        settings: SumDBSettings,
        http: httpx.AsyncClient,
        state_dir: Path,
        *,
        timeout: float = 30.0,
        max_tiles: int = 256,
        locate: Locate | None = None,
    ) -> None:
        if settings.database is None:
            raise ValueError("GOSUMDB is off: there is no database to ask")
        self._settings = settings
        self._db: GoSumDB = settings.database
        self._where = AccessFinder(
            self._db.name,
            SumDBAccess(self._db.url),
            None if self._db.url_given else locate,
            timeout=timeout,
        )
        self._http = http
        self._state_dir = state_dir
        self._timeout = timeout
        # Authenticated tiles kept with their subtree hashes (~40 KB each): the upper
        # levels every proof climbs, and the latest leaf tiles.
        self._kept_tiles = min(max_tiles, _KEPT_TILES)
        self._cache = TileCache(max_tiles)
        # The hashes of the tree last used, kept for the lookups in it that follow: a
        # tile authenticated once is not hashed again while the tree stays the same.
        self._hashes: TreeHashes | None = None
        self._merge_lock = trio.Lock()
        self._latest: _Signed | None = None
        self._lookups = 0
        self._tiles_fetched = 0

    @property
    def name(self) -> str:
        return self._db.name

    def skips(self, module: str) -> bool:
        """Whether GONOSUMDB/GOPRIVATE exclude ``module`` from lookups."""
        return self._settings.skips(module)

    def statistics(self) -> SumDBStatistics:
        return SumDBStatistics(
            lookups=self._lookups,
            tiles_fetched=self._tiles_fetched,
            tile_cache_hits=self._cache.hits,
            tiles_cached=len(self._cache),
            latest_size=self._latest.tree.size if self._latest else 0,
        )

    async def lookup(self, module: str, version: str) -> GoSumLines:
        """The go.sum lines of ``module@version``, proven included in a signed tree."""
        check_module_version(module, version)
        if self.skips(module):
            raise SkippedModuleError(f"{module}: GONOSUMDB/GOPRIVATE exclude it from {self.name}")
        self._lookups += 1
        what = f"{module}@{version}"
        try:
            answer = await self._get(
                f"lookup/{escape_path(module)}@{escape_version(version)}", _MAX_LOOKUP
            )
        except _Gone:
            raise RecordNotFoundError(f"{what}: not in checksum database {self.name}") from None
        try:
            record_id, text, note = parse_record(answer)
        except ValueError:
            raise MalformedResponseError(f"{what}: {self.name} answered no record") from None
        latest = await self._merge(self._open(note))
        if record_id >= latest.tree.size:
            raise RecordProofError(
                f"{what}: record {record_id} is outside {self.name}'s tree of {latest.tree.size}"
            )
        leaf = record_hash(text)

        async def root(hashes: TreeHashes) -> bytes:
            proof = await hashes.range_hashes(inclusion_proof_ranges(record_id, latest.tree.size))
            return root_from_inclusion(record_id, latest.tree.size, leaf, proof)

        if await self._with_tiles(latest.tree, root) != latest.tree.hash:
            raise RecordProofError(
                f"{what}: the record {self.name} served is not the one in its signed tree"
            )
        return parse_record_lines(module, version, text)

    async def latest(self) -> Tree:
        """Fetch the database's newest signed tree and merge it (consistency-checked)."""
        try:
            note = await self._get("latest", _MAX_NOTE)
        except _Gone:
            raise SumDBUnreachableError(f"{self.name} has no latest tree") from None
        return (await self._merge(self._open(note))).tree

    def _open(self, note: bytes) -> _Signed:
        if self._latest is not None and note == self._latest.note:
            return self._latest  # these very bytes verified already (lookups repeat it)
        text = open_note(note, self._db.verifier)
        try:
            return _Signed(parse_tree(text), note)
        except ValueError:
            raise MalformedResponseError(f"{self.name} signed a note that is no tree") from None

    async def _merge(self, new: _Signed) -> _Signed:
        """Check ``new`` against the newest tree seen; return whichever is newer."""
        async with self._merge_lock:
            stored = await self._load_latest()
            if stored is None:
                await self._store(new)
                return new
            if new.tree.size > stored.tree.size:
                await self._check_consistent(stored, new)
                await self._store(new)
                return new
            await self._check_consistent(new, stored)
            return stored

    async def _check_consistent(self, older: _Signed, newer: _Signed) -> None:
        old, new = older.tree, newer.tree
        if old.size == new.size:
            consistent = old.hash == new.hash
        elif old.size == 0:
            consistent = True
        else:

            async def roots(hashes: TreeHashes) -> tuple[bytes, bytes]:
                proof = await hashes.range_hashes(consistency_proof_ranges(old.size, new.size))
                return roots_from_consistency(old.size, new.size, old.hash, proof)

            old_root, new_root = await self._with_tiles(new, roots)
            if new_root != new.hash:  # cannot be: the tiles hash to new.hash
                raise InconsistentTileError(f"{self.name}: tiles disagree with tree {new.size}")
            consistent = old_root == old.hash
        if not consistent:
            raise ForkError(
                f"SECURITY ERROR: checksum database {self.name} signed a tree of size "
                f"{new.size} that is inconsistent with its tree of size {old.size}",
                older.note,
                newer.note,
            )

    async def _with_tiles(self, tree: Tree, use: Callable[[TreeHashes], Awaitable[_T]]) -> _T:
        """Run ``use`` on ``tree``'s hashes; tiles cached from an earlier tree that fail
        to authenticate against this one are dropped and read again once, so that the
        answer reflects what the server now serves (a fork, or a bad tile)."""
        hashes = self._hashes
        if hashes is None or hashes.tree != tree:
            hashes = TreeHashes(tree, self._fetch_tile, self._cache, keep=self._kept_tiles)
            self._hashes = hashes
        try:
            return await use(hashes)
        except InconsistentTileError:
            if not hashes.used_cache:
                raise
        self._cache.clear()
        if self._hashes is hashes:
            self._hashes = None
        return await use(TreeHashes(tree, self._fetch_tile, None, keep=self._kept_tiles))

    async def _fetch_tile(self, tile: Tile) -> bytes:
        self._tiles_fetched += 1
        try:
            return await self._get(tile.path, _MAX_TILE)
        except _Gone:
            pass
        # The server may already have completed the tile; its prefix is the partial one.
        full = Tile(tile.height, tile.level, tile.index, 1 << tile.height)
        if full == tile:
            raise SumDBUnreachableError(f"{self.name} has no tile {tile.path}")
        self._tiles_fetched += 1
        try:
            return (await self._get(full.path, _MAX_TILE))[: tile.width * HASH_SIZE]
        except _Gone:
            raise SumDBUnreachableError(f"{self.name} has no tile {tile.path}") from None

    async def _get(self, path: str, limit: int) -> bytes:
        """GET ``path`` below the database URL: at most ``limit`` bytes, within the timeout."""
        access = await self._where.get()
        url = f"{access.url}/{path}"
        body = bytearray()
        try:
            with trio.fail_after(self._timeout):
                # Redirects followed as go follows them (never from https to http).
                request = self._http.build_request("GET", url, headers=IDENTITY)
                response = await send_following(self._http, request, access.auth)
                async with contextlib.AsyncExitStack() as stack:
                    stack.push_async_callback(aclose_shielded, response)
                    if response.status_code in NOT_EXIST_STATUSES:
                        raise _Gone
                    if response.status_code != 200:
                        raise SumDBUnreachableError(
                            f"{self.name} answered {response.status_code} for /{path}"
                        )
                    if encoding := content_encoding(response):
                        raise MalformedResponseError(
                            f"{self.name} answered /{path} with Content-Encoding "
                            f"{encoding!r} though asked for identity"
                        )
                    # Raw: counted against the limit as they come, never decoded (see
                    # _http), and every iterator under them finished when leaving early.
                    async with raw_chunks(response) as chunks:
                        async for chunk in chunks:
                            body += chunk
                            if len(body) > limit:
                                raise MalformedResponseError(
                                    f"{self.name} answered more than {limit} bytes for /{path}"
                                )
        except RedirectRefused as exc:
            raise SumDBUnreachableError(f"{self.name} for /{path}: {exc}") from None
        except trio.TooSlowError:
            raise SumDBUnreachableError(f"{self.name} did not answer /{path} in time") from None
        except httpx.HTTPError as exc:
            # httpx's message names the URL, which may carry credentials.
            raise SumDBUnreachableError(
                f"{self.name} unreachable for /{path}: {type(exc).__name__}"
            ) from None
        return bytes(body)

    async def _load_latest(self) -> _Signed | None:
        """The newest verified tree: on disk (another client may have advanced it),
        else the one in memory."""
        note = await trio.to_thread.run_sync(read_latest, self._state_dir, self.name)
        if note is None:
            return self._latest
        if self._latest is not None and note == self._latest.note:
            return self._latest
        try:
            signed = self._open(note)
        except SumDBError:
            raise SumDBStateError(
                f"the stored latest tree of {self.name} does not verify with its key"
            ) from None
        if self._latest is not None:
            # Another client advanced the file (or it went back): either way the two
            # trees must be consistent, and the newer one wins.
            older, newer = sorted((signed, self._latest), key=lambda s: s.tree.size)
            await self._check_consistent(older, newer)
            if newer is self._latest:
                return self._latest
        self._latest = signed
        return signed

    async def _store(self, signed: _Signed) -> None:
        await trio.to_thread.run_sync(write_latest, self._state_dir, self.name, signed.note)
        self._latest = signed
