"""What makes a cold fetch cheaper keeps its guarantees: work done once is reused only
where it is bound to what was verified, and saves still flush before they link."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from athens_trio.storage import DiskStorage
from athens_trio.sumdb import SumDBClient, _client, _note, settings_from_env
from athens_trio.sumdb._tiles import TreeHashes
from athens_trio.sumdb._tlog import (
    TILE_HEIGHT,
    Tile,
    Tree,
    inclusion_proof_ranges,
    merkle_root,
    root_from_inclusion,
)

from .sumdbfixtures import fake_record, run_sumdb_server
from .test_sumdb_client import _tiles_of


@pytest.mark.parametrize("keep", [1, 2, 256])
async def test_tree_hashes_serve_many_lookups_and_fetch_each_tile_once(keep: int) -> None:
    size = 65536 + 256 * 3 + 5
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size)]
    tiles = _tiles_of(leaves)
    tree = Tree(size, merkle_root(leaves))
    fetched: list[str] = []

    async def fetch(tile: Tile) -> bytes:
        fetched.append(tile.path)
        return tiles[tile.path]

    hashes = TreeHashes(tree, fetch, None, keep=keep)
    indexes = [0, 1, 255, 256, 4097, size // 2, size - 6, size - 1]
    for _ in range(2):
        for index in indexes:
            assert await hashes.node(0, index) == leaves[index]
            proof = await hashes.range_hashes(inclusion_proof_ranges(index, size))
            assert root_from_inclusion(index, size, leaves[index], proof) == tree.hash
    if keep == 256:
        # Everything kept: the second round read nothing, the first no tile twice.
        assert len(fetched) == len(set(fetched))
    # A tile that does not hash to the tree is refused, kept tiles or not.
    bad = dict(tiles)
    path = Tile(TILE_HEIGHT, 0, 3, 1 << TILE_HEIGHT).path
    bad[path] = b"\x00" * len(bad[path])

    async def fetch_bad(tile: Tile) -> bytes:
        return bad[tile.path]

    wrong = TreeHashes(tree, fetch_bad, None, keep=keep)
    with pytest.raises(Exception, match="does not hash"):
        await wrong.node(0, 3 * 256 + 7)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


async def test_a_signed_tree_is_verified_once_and_its_tiles_authenticated_once(
    sumdb_binary: Path,
    tmp_path: Path,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [fake_record(f"example.com/m{i}", "v1.0.0") for i in range(600)]
    verified: list[bytes] = []
    real_open_note = _note.open_note

    def counting_open_note(note: bytes, verifier: _note.Verifier) -> str:
        verified.append(note)
        return real_open_note(note, verifier)

    monkeypatch.setattr(_client, "open_note", counting_open_note)
    async with run_sumdb_server(sumdb_binary, tmp_path, records) as server:
        client = SumDBClient(
            settings_from_env({"GOSUMDB": server.gosumdb}), http, tmp_path / "state"
        )
        for i in (0, 300, 599, 1, 301):
            lines = await client.lookup(f"example.com/m{i}", "v1.0.0")
            assert f"{lines.lines[0]}\n{lines.lines[1]}\n" == records[i]
        assert len(verified) == 1  # every answer carried the same signed tree
        fetched = client.statistics().tiles_fetched
        await client.lookup("example.com/m2", "v1.0.0")  # in a tile authenticated before
        assert client.statistics().tiles_fetched == fetched
        # The tree grows: the new one is verified (once) and proven consistent.
        more = [fake_record(f"example.com/n{i}", "v0.1.0") for i in range(300)]
        await server.add(more)
        assert (await client.lookup("example.com/n299", "v0.1.0")).zip_hash in more[299]
        assert (await client.lookup("example.com/m5", "v1.0.0")).zip_hash in records[5]
        assert len(verified) == 2
        assert client.statistics().latest_size == 900


async def test_a_save_removes_its_temporary_names_and_flushes_before_linking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: set[int] = set()
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        real_fsync(fd)
        flushed.add(os.fstat(fd).st_ino)

    def link(src: str | Path, dst: str | Path) -> None:
        if not Path(dst).name.startswith(".tmp-"):
            assert os.stat(src).st_ino in flushed, f"{dst} linked before it was flushed"
        real_link(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    storage = DiskStorage(tmp_path / "root")
    zip_file = tmp_path / "v.zip"
    zip_file.write_bytes(b"PK\x05\x06" + bytes(18))
    module = "example.com/m"
    info, mod = b'{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}', b"module example.com/m\n"
    assert await storage.save_mod(module, "v1.0.0", info=info, mod=mod, mod_sum="h1:m")
    assert await storage.save(
        module, "v1.0.0", info=info, mod=mod, zip_file=zip_file, zip_sum="h1:z", mod_sum="h1:m"
    )
    directory = tmp_path / "root" / "example.com" / "m" / "@v"
    assert sorted(p.name for p in directory.iterdir()) == [
        "list",
        "v1.0.0.info",
        "v1.0.0.mod",
        "v1.0.0.modhash",
        "v1.0.0.zip",
        "v1.0.0.ziphash",
    ]
    assert (directory / "list").read_text() == "v1.0.0\n"
    assert not zip_file.exists()
    # Saved again: nothing stored anew, nothing left behind.
    assert not await storage.save_mod(module, "v1.0.0", info=info, mod=mod)
    assert len(list(directory.iterdir())) == 6
