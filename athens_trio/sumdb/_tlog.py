"""Transparency-log arithmetic (golang.org/x/mod/sumdb/tlog), without any I/O.

The log is a Merkle tree over records (RFC 6962 hashing: a leaf is SHA-256 of ``0x00 +
record``, an interior node SHA-256 of ``0x01 + left + right``).  A *node* ``(level, n)``
is the hash of the complete subtree over records ``n*2**level .. (n+1)*2**level - 1``.
A *tile* of height ``H`` at level ``L`` and index ``N`` holds the hashes of the nodes
``(L*H, N*2**H + i)`` for ``i < W``; a data tile (level -1) holds the records instead.

Proofs here are lists of record ranges whose Merkle hashes the verifier needs; the tile
reader turns each range into nodes and nodes into hashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "HASH_SIZE",
    "TILE_HEIGHT",
    "Tile",
    "Tree",
    "consistency_proof_ranges",
    "fold_range",
    "format_tree",
    "inclusion_proof_ranges",
    "merkle_root",
    "node_hash",
    "parse_record",
    "parse_tile_path",
    "parse_tree",
    "range_nodes",
    "record_hash",
    "root_from_inclusion",
    "roots_from_consistency",
]

HASH_SIZE = 32
#: The tile height every Go checksum database serves (x/mod's client uses only 8).
TILE_HEIGHT = 8
_PATH_BASE = 1000
_TREE_HEADER = "go.sum database tree\n"

Range = tuple[int, int]
Node = tuple[int, int]


def record_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True)
class Tree:
    """A tree head: the log's size and its root hash."""

    size: int
    hash: bytes


def format_tree(tree: Tree) -> str:
    return f"{_TREE_HEADER}{tree.size}\n{base64.b64encode(tree.hash).decode()}\n"


def parse_tree(text: str) -> Tree:
    """Parse a tree note's text; extra lines after the hash are allowed, as in x/mod."""
    if not text.startswith(_TREE_HEADER) or text.count("\n") < 3 or len(text) > 1_000_000:
        raise ValueError("malformed tree note")
    size_text, hash_text = text.split("\n", 3)[1:3]
    if not size_text.isascii() or not size_text.isdigit() or str(int(size_text)) != size_text:
        raise ValueError("malformed tree note")
    try:
        root = base64.b64decode(hash_text, validate=True)
    except binascii.Error:
        raise ValueError("malformed tree note") from None
    if len(root) != HASH_SIZE:
        raise ValueError("malformed tree note")
    return Tree(int(size_text), root)


def _valid_record_text(text: bytes) -> bool:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return (
        decoded.endswith("\n")
        and "\n\n" not in decoded
        and not any(ord(c) < 0x20 and c != "\n" for c in decoded)
    )


def parse_record(msg: bytes) -> tuple[int, bytes, bytes]:
    """Split a lookup answer into record id, record text and what follows (the signed
    tree note).  The record is its id on a line, its text, then a blank line."""
    first, sep, rest = msg.partition(b"\n")
    if not sep or not first.isdigit() or str(int(first)).encode() != first:
        raise ValueError("malformed record")
    end = rest.find(b"\n\n")
    if end < 0:
        raise ValueError("malformed record")
    text = rest[: end + 1]
    if not _valid_record_text(text):
        raise ValueError("malformed record")
    return int(first), text, rest[end + 2 :]


@dataclass(frozen=True)
class Tile:
    """A tile's coordinates; ``level`` -1 is a data tile."""

    height: int
    level: int
    index: int
    width: int

    @property
    def path(self) -> str:
        """The tile's path below the database URL, as x/mod's ``Tile.Path`` spells it:
        the index in 3-digit groups, all but the last prefixed ``x``; ``.p/W`` for a
        partial tile."""
        groups = [f"{self.index % _PATH_BASE:03d}"]
        n = self.index // _PATH_BASE
        while n > 0:
            groups.append(f"x{n % _PATH_BASE:03d}")
            n //= _PATH_BASE
        level = "data" if self.level == -1 else str(self.level)
        partial = "" if self.width == 1 << self.height else f".p/{self.width}"
        return f"tile/{self.height}/{level}/{'/'.join(reversed(groups))}{partial}"


def parse_tile_path(path: str) -> Tile:
    """The tile that ``path`` names; only x/mod's own spelling of it is accepted."""
    parts = path.split("/")
    if len(parts) < 4 or parts[0] != "tile" or not parts[1].isdigit():
        raise ValueError("malformed tile path")
    height = int(parts[1])
    level = -1 if parts[2] == "data" else int(parts[2]) if parts[2].isdigit() else None
    if level is None or not 1 <= height <= 30:
        raise ValueError("malformed tile path")
    width = 1 << height
    groups = parts[3:]
    if len(groups) >= 2 and groups[-2].endswith(".p"):
        if not groups[-1].isdigit() or not 0 < int(groups[-1]) < width:
            raise ValueError("malformed tile path")
        width = int(groups[-1])
        groups = [*groups[:-2], groups[-2][:-2]]
    index = 0
    for group in groups:
        digits = group.removeprefix("x")
        if len(digits) != 3 or not digits.isdigit():
            raise ValueError("malformed tile path")
        index = index * _PATH_BASE + int(digits)
    tile = Tile(height, level, index, width)
    if tile.path != path:
        raise ValueError("malformed tile path")
    return tile


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (>= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def range_nodes(lo: int, hi: int) -> list[Node]:
    """The complete subtrees that make up records ``lo..hi-1``, left to right, each the
    largest aligned one that fits."""
    nodes: list[Node] = []
    while lo < hi:
        level = (lo & -lo).bit_length() - 1 if lo else (hi - lo).bit_length() - 1
        while lo + (1 << level) > hi:
            level -= 1
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """The Merkle hash of a range from its nodes' hashes (left to right)."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """The Merkle hash over ``hashes`` as leaves of a (possibly incomplete) tree."""
    return fold_range(
        [_complete_root(hashes[lo : lo + (1 << lv)], lv) for lv, lo in _spans(len(hashes))]
    )


def _spans(count: int) -> list[tuple[int, int]]:
    return [(level, n << level) for level, n in range_nodes(0, count)]


def _complete_root(hashes: Sequence[bytes], level: int) -> bytes:
    row = list(hashes)
    for _ in range(level):
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
    return row[0]


def inclusion_proof_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes prove record ``index`` in a tree of ``size`` records
    (RFC 6962 audit path), deepest first."""
    if not 0 <= index < size:
        raise ValueError("record not in tree")
    out: list[Range] = []

    def walk(lo: int, hi: int) -> None:
        if hi - lo == 1:
            return
        mid = lo + _split(hi - lo)
        if index < mid:
            walk(lo, mid)
            out.append((mid, hi))
        else:
            walk(mid, hi)
            out.append((lo, mid))

    walk(0, size)
    return out


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` (from :func:`inclusion_proof_ranges`) and ``leaf`` imply."""
    remaining = list(proof)

    def walk(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaf
        sibling = remaining.pop()
        mid = lo + _split(hi - lo)
        if index < mid:
            return node_hash(walk(lo, mid), sibling)
        return node_hash(sibling, walk(mid, hi))

    if len(remaining) != len(inclusion_proof_ranges(index, size)):
        raise ValueError("inclusion proof of the wrong length")
    return walk(0, size)


def consistency_proof_ranges(old: int, new: int) -> list[Range]:
    """The ranges whose hashes prove a tree of ``old`` records is a prefix of one of
    ``new`` records (RFC 6962 consistency proof), deepest first."""
    if not 0 < old <= new:
        raise ValueError("no consistency proof between these sizes")
    out: list[Range] = []

    def walk(lo: int, hi: int, whole: bool) -> None:
        if old == hi:
            if not whole:
                out.append((lo, hi))
            return
        mid = lo + _split(hi - lo)
        if old <= mid:
            walk(lo, mid, whole)
            out.append((mid, hi))
        else:
            walk(mid, hi, False)
            out.append((lo, mid))

    walk(0, new, True)
    return out


def roots_from_consistency(
    old: int, new: int, old_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """The (old, new) roots that a consistency ``proof`` implies, given the old root."""
    if len(proof) != len(consistency_proof_ranges(old, new)):
        raise ValueError("consistency proof of the wrong length")
    remaining = list(proof)

    def walk(lo: int, hi: int, whole: bool) -> tuple[bytes, bytes]:
        if old == hi:
            if whole:
                return old_root, old_root
            own = remaining.pop()
            return own, own
        sibling = remaining.pop()
        mid = lo + _split(hi - lo)
        if old <= mid:
            older, newer = walk(lo, mid, whole)
            return older, node_hash(newer, sibling)
        older, newer = walk(mid, hi, False)
        return node_hash(sibling, older), node_hash(sibling, newer)

    return walk(0, new, True)
