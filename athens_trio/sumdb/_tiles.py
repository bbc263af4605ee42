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
from ._tlog import HASH_SIZE, TILE_HEIGHT, Tile, Tree, fold_range, merkle_root, range_nodes

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
    remembers; ``cache`` None reads every tile from the server)."""

    def __init__(self, tree: Tree, fetch: TileFetcher, cache: TileCache | None) -> None:
        self._tree = tree
        self._fetch = fetch
        self._cache = cache
        self._trusted: dict[tuple[int, int], list[bytes]] = {}  # (level, index) -> hashes
        self.used_cache = False

    async def range_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The Merkle hash of each range of records ``[lo, hi)``."""
        out = []
        for lo, hi in ranges:
            out.append(fold_range([await self.node(lv, n) for lv, n in range_nodes(lo, hi)]))
        return out

    async def node(self, level: int, index: int) -> bytes:
        """The hash of complete subtree ``(level, index)``, which must lie in the tree."""
        if (index + 1) << level > self._tree.size:
            raise ValueError("node outside the tree")
        tile_level, within = divmod(level, TILE_HEIGHT)
        first = index << within  # the node's first entry at the tile's level
        hashes = await self._tile(tile_level, first // _FULL)
        start = first % _FULL
        return merkle_root(hashes[start : start + (1 << within)])

    def _width(self, level: int, index: int) -> int:
        return min(_FULL, (self._tree.size >> (level * TILE_HEIGHT)) - index * _FULL)

    async def _tile(self, level: int, index: int) -> list[bytes]:
        trusted = self._trusted.get((level, index))
        if trusted is not None:
            return trusted
        if self._width(level, index) < _FULL:
            await self._authenticate_edge()
            return self._trusted[(level, index)]
        tile = Tile(TILE_HEIGHT, level, index, _FULL)
        hashes = await self._read(tile)
        parent = await self.node((level + 1) * TILE_HEIGHT, index)
        if merkle_root(hashes) != parent:
            raise InconsistentTileError(f"tile {tile.path} does not hash to the signed tree")
        self._accept(tile, hashes)
        return hashes

    async def _authenticate_edge(self) -> None:
        """Read the partial tiles at the tree's right edge and check that they, with
        the full tiles' entries above them, hash to the signed root."""
        nodes = range_nodes(0, self._tree.size)
        edge: dict[Tile, list[bytes]] = {}
        node_hashes = []
        for level, index in nodes:
            tile_level, within = divmod(level, TILE_HEIGHT)
            first = index << within
            tile_index = first // _FULL
            tile = Tile(TILE_HEIGHT, tile_level, tile_index, self._width(tile_level, tile_index))
            if tile not in edge:
                edge[tile] = await self._read(tile)
            start = first % _FULL
            node_hashes.append(merkle_root(edge[tile][start : start + (1 << within)]))
        if fold_range(node_hashes) != self._tree.hash:
            raise InconsistentTileError("the tiles at the tree's edge do not hash to its root")
        for tile, hashes in edge.items():
            self._accept(tile, hashes)

    def _accept(self, tile: Tile, hashes: list[bytes]) -> None:
        self._trusted[(tile.level, tile.index)] = hashes
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
