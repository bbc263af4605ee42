"""Hashes of one signed tree, read from the database's tiles and authenticated.

A tile is trusted only once it hashes up to the signed root: the partial tiles at the
right edge of the tree (one per level at most) together yield the root hash; a full tile
hashes to one entry of its parent tile.  So every hash handed out is bound to the signed
tree, and a tile that does not fit is an :class:`InconsistentTileError`, never a fork.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from ._errors import InconsistentTileError, MalformedResponseError
from ._tlog import HASH_SIZE, TILE_HEIGHT, Tile, Tree, fold_range, node_hash, range_nodes

__all__ = ["TileCache", "TreeHashes"]

#: Fetches a tile's bytes by its path; :class:`LookupError` if the server has no such tile.
TileFetcher = Callable[[Tile], Awaitable[bytes]]

_FULL = 1 << TILE_HEIGHT


class TileCache:
    """The raw bytes of tiles that were authenticated once, least recently used first."""

    def __init__(self, max_tiles: int) -> None:
        self._max = max_tiles
        self._tiles: OrderedDict[Tile, bytes] = OrderedDict()
        self.hits = 0

    def get(self, tile: Tile) -> bytes | None:
        data = self._tiles.get(tile)
        if data is not None:
            self._tiles.move_to_end(tile)
            self.hits += 1
        return data

    def put(self, tile: Tile, data: bytes) -> None:
        self._tiles[tile] = data
        self._tiles.move_to_end(tile)
        while len(self._tiles) > self._max:
            self._tiles.popitem(last=False)

    def clear(self) -> None:
        self._tiles.clear()

    def __len__(self) -> int:
        return len(self._tiles)


class TreeHashes:
    """Authenticated node hashes of ``tree``, from tiles ``fetch`` reads (and ``cache``
    remembers; ``cache`` None reads every tile from the server).

    Each authenticated tile is kept with the hashes of all its complete subtrees, which
    authenticating it computes anyway, so a node's hash is looked up, never recomputed;
    at most ``keep`` tiles are kept (the oldest dropped first; one needed again is read
    and authenticated again).  One instance may serve any number of lookups in
    ``tree``: what it holds is bound to the tree's signed root."""

    def __init__(
        self, tree: Tree, fetch: TileFetcher, cache: TileCache | None, *, keep: int = 256
    ) -> None:
        self.tree = tree
        self._fetch = fetch
        self._cache = cache
        self._keep = max(keep, 1)
        # (level, index) -> the tile's subtree hashes, level by level (see _subtrees)
        self._trusted: OrderedDict[tuple[int, int], list[list[bytes]]] = OrderedDict()
        self.used_cache = False

    async def range_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The Merkle hash of each range of records ``[lo, hi)``."""
        out = []
        for lo, hi in ranges:
            out.append(fold_range([await self.node(lv, n) for lv, n in range_nodes(lo, hi)]))
        return out

    async def node(self, level: int, index: int) -> bytes:
        """The hash of complete subtree ``(level, index)``, which must lie in the tree."""
        if (index + 1) << level > self.tree.size:
            raise ValueError("node outside the tree")
        tile_level, within = divmod(level, TILE_HEIGHT)
        first = index << within  # the node's first entry at the tile's level
        subtrees = await self._tile(tile_level, first // _FULL)
        return subtrees[within][(first % _FULL) >> within]

    def _width(self, level: int, index: int) -> int:
        return min(_FULL, (self.tree.size >> (level * TILE_HEIGHT)) - index * _FULL)

    async def _tile(self, level: int, index: int) -> list[list[bytes]]:
        trusted = self._trusted.get((level, index))
        if trusted is not None:
            self._trusted.move_to_end((level, index))
            if self._cache is not None:
                self._cache.hits += 1  # a tile served from memory, as the cache's are
            return trusted
        if self._width(level, index) < _FULL:
            return (await self._authenticate_edge())[(level, index)]
        tile = Tile(TILE_HEIGHT, level, index, _FULL)
        hashes = await self._read(tile)
        parent = await self.node((level + 1) * TILE_HEIGHT, index)
        subtrees = _subtrees(hashes)
        if subtrees[-1][0] != parent:
            raise InconsistentTileError(f"tile {tile.path} does not hash to the signed tree")
        self._accept(tile, hashes, subtrees)
        return subtrees

    async def _authenticate_edge(self) -> dict[tuple[int, int], list[list[bytes]]]:
        """Read the partial tiles at the tree's right edge and check that they, with
        the full tiles' entries above them, hash to the signed root; return their
        subtree hashes by (level, index)."""
        nodes = range_nodes(0, self.tree.size)
        edge: dict[Tile, tuple[list[bytes], list[list[bytes]]]] = {}
        node_hashes = []
        for level, index in nodes:
            tile_level, within = divmod(level, TILE_HEIGHT)
            first = index << within
            tile_index = first // _FULL
            tile = Tile(TILE_HEIGHT, tile_level, tile_index, self._width(tile_level, tile_index))
            if tile not in edge:
                hashes = await self._read(tile)
                edge[tile] = (hashes, _subtrees(hashes))
            node_hashes.append(edge[tile][1][within][(first % _FULL) >> within])
        if fold_range(node_hashes) != self.tree.hash:
            raise InconsistentTileError("the tiles at the tree's edge do not hash to its root")
        for tile, (hashes, subtrees) in edge.items():
            self._accept(tile, hashes, subtrees)
        return {(tile.level, tile.index): subtrees for tile, (_, subtrees) in edge.items()}

    def _accept(self, tile: Tile, hashes: list[bytes], subtrees: list[list[bytes]]) -> None:
        self._trusted[(tile.level, tile.index)] = subtrees
        self._trusted.move_to_end((tile.level, tile.index))
        while len(self._trusted) > self._keep:
            self._trusted.popitem(last=False)
        if self._cache is not None:
            self._cache.put(tile, b"".join(hashes))

    async def _read(self, tile: Tile) -> list[bytes]:
        data = self._cache.get(tile) if self._cache is not None else None
        if data is not None:
            self.used_cache = True
        else:
            data = await self._fetch(tile)
        if len(data) != tile.width * HASH_SIZE:
            raise MalformedResponseError(f"tile {tile.path} has the wrong length")
        return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def _subtrees(hashes: list[bytes]) -> list[list[bytes]]:
    """A tile's hashes, then level by level the hashes of its complete subtrees (each
    pair of the level below; an odd one out has no parent in the tile yet).  A full
    tile's last level is its one Merkle root."""
    levels = [hashes]
    row = hashes
    while len(row) > 1:
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        levels.append(row)
    return levels
