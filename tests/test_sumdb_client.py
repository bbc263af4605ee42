"""The checksum database client against x/mod's own sumdb server, and its pure parts."""

from __future__ import annotations

import base64
import gzip
import hashlib
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from athens_trio import ConfigError, UpstreamError
from athens_trio._ziphash import mod_h1, zip_h1
from athens_trio.sumdb import (
    SUM_GOLANG_ORG_KEY,
    ChecksumMismatchError,
    ForkError,
    MalformedResponseError,
    RecordNotFoundError,
    RecordProofError,
    SignatureError,
    SkippedModuleError,
    SumDBClient,
    SumDBError,
    SumDBSettings,
    SumDBUnreachableError,
    Tile,
    check_mod,
    check_zip,
    parse_gosumdb,
    parse_tile_path,
    parse_verifier_key,
    settings_from_env,
)
from athens_trio.sumdb._note import key_hash, open_note
from athens_trio.sumdb._tiles import TreeHashes
from athens_trio.sumdb._tlog import (
    TILE_HEIGHT,
    Tree,
    consistency_proof_ranges,
    format_tree,
    inclusion_proof_ranges,
    merkle_root,
    node_hash,
    parse_tree,
    record_hash,
    root_from_inclusion,
    roots_from_consistency,
)

from .staticproxy import static_proxy
from .sumdbfixtures import SumDBServer, fake_record, run_sumdb_server

# ---------------------------------------------------------------------------------------
# Tile paths: the values x/mod's tile.go documents and its tests feed ParseTilePath.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(3, 4, 1234067, 1), "tile/3/4/x001/x234/067.p/1"),
        (Tile(3, 4, 1234067, 8), "tile/3/4/x001/x234/067"),
        (Tile(8, 0, 123456789, 256), "tile/8/0/x123/x456/789"),
        (Tile(4, 0, 1, 16), "tile/4/0/001"),
        (Tile(4, 0, 1, 5), "tile/4/0/001.p/5"),
        (Tile(3, 5, 123456078, 2), "tile/3/5/x123/x456/078.p/2"),
        (Tile(1, 0, 3057500, 2), "tile/1/0/x003/x057/500"),
        (Tile(1, -1, 3057500, 2), "tile/1/data/x003/x057/500"),
        (Tile(8, -1, 0, 2), "tile/8/data/000.p/2"),
        (Tile(8, 2, 1000, 256), "tile/8/2/x001/000"),
    ],
)
def test_tile_paths(tile: Tile, path: str) -> None:
    assert tile.path == path
    assert parse_tile_path(path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/3/5/123/456/078",  # inner groups need their x
        "tile/3/-1/123/456/078",
        "tile/8/0/001.p/256",  # a full tile has no .p
        "tile/8/0/001.p/0",
        "tile/8/0/1",
        "tile/0/0/001",
        "tiles/8/0/001",
    ],
)
def test_bad_tile_paths(path: str) -> None:
    with pytest.raises(ValueError, match="malformed tile path"):
        parse_tile_path(path)


# ---------------------------------------------------------------------------------------
# Proofs, against a Merkle tree computed the plain way.
# ---------------------------------------------------------------------------------------


def _mth(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _leaves(count: int) -> list[bytes]:
    return [record_hash(f"record {i}\n".encode()) for i in range(count)]


def test_proofs_match_plain_merkle_trees() -> None:
    leaves = _leaves(40)
    for size in range(1, 41):
        root = _mth(leaves[:size])
        assert merkle_root(leaves[:size]) == root
        for index in range(size):
            proof = [_mth(leaves[lo:hi]) for lo, hi in inclusion_proof_ranges(index, size)]
            assert root_from_inclusion(index, size, leaves[index], proof) == root
            if proof:
                bad = [proof[0][::-1], *proof[1:]]
                assert root_from_inclusion(index, size, leaves[index], bad) != root
        for old in range(1, size + 1):
            proof = [_mth(leaves[lo:hi]) for lo, hi in consistency_proof_ranges(old, size)]
            old_root = _mth(leaves[:old])
            assert roots_from_consistency(old, size, old_root, proof) == (old_root, root)
            forked = _mth([*leaves[: old - 1], record_hash(b"other\n")])
            assert roots_from_consistency(old, size, forked, proof) != (forked, root)


def test_proof_lengths_are_checked() -> None:
    with pytest.raises(ValueError, match="wrong length"):
        root_from_inclusion(0, 4, b"\0" * 32, [])
    with pytest.raises(ValueError, match="wrong length"):
        roots_from_consistency(3, 4, b"\0" * 32, [])


def _tiles_of(leaves: list[bytes]) -> dict[str, bytes]:
    """Every tile (full and partial) of a tree over ``leaves``, by path."""
    full = 1 << TILE_HEIGHT
    tiles: dict[str, bytes] = {}
    level, row = 0, leaves
    while row:
        for index in range((len(row) + full - 1) // full):
            chunk = row[index * full : (index + 1) * full]
            for width in range(1, len(chunk) + 1):
                tiles[Tile(TILE_HEIGHT, level, index, width).path] = b"".join(chunk[:width])
        row = [merkle_root(row[i : i + full]) for i in range(0, len(row) - full + 1, full)]
        level += 1
    return tiles


@pytest.mark.parametrize("size", [1, 255, 256, 257, 700, 65536, 65536 + 256 * 3 + 5])
async def test_tree_hashes_authenticate_tiles(size: int) -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size)]
    tiles = _tiles_of(leaves)
    tree = Tree(size, merkle_root(leaves))

    async def fetch(tile: Tile) -> bytes:
        return tiles[tile.path]

    hashes = TreeHashes(tree, fetch, None)
    for index in {0, size // 2, size - 1}:
        assert await hashes.node(0, index) == leaves[index]
        proof = await hashes.range_hashes(inclusion_proof_ranges(index, size))
        assert root_from_inclusion(index, size, leaves[index], proof) == tree.hash
    wrong = TreeHashes(Tree(size, hashlib.sha256(b"x").digest()), fetch, None)
    with pytest.raises(UpstreamError, match="do not hash"):
        await wrong.node(0, size - 1)


# ---------------------------------------------------------------------------------------
# Notes and keys
# ---------------------------------------------------------------------------------------


def _keypair(name: str) -> tuple[Ed25519PrivateKey, str]:
    private = Ed25519PrivateKey.generate()
    key = b"\x01" + private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, f"{name}+{key_hash(name, key):08x}+{base64.b64encode(key).decode()}"


def _sign(text: str, name: str, private: Ed25519PrivateKey, vkey: str) -> bytes:
    hash_bytes = bytes.fromhex(vkey.split("+")[1])
    sig = base64.b64encode(hash_bytes + private.sign(text.encode())).decode()
    return f"{text}\n— {name} {sig}\n".encode()


def test_known_key_and_malformed_keys() -> None:
    verifier = parse_verifier_key(SUM_GOLANG_ORG_KEY)
    assert (verifier.name, verifier.key_hash) == ("sum.golang.org", 0x033DE0AE)
    name, hash_hex, key = SUM_GOLANG_ORG_KEY.split("+", 2)
    for bad in (f"{name}+{'0' * 8}+{key}", f"{name}+{hash_hex}", "a b+00000000+AQ==", "x"):
        with pytest.raises(ValueError, match="verifier key"):
            parse_verifier_key(bad)


def test_notes_need_a_valid_signature_by_the_key() -> None:
    private, vkey = _keypair("db.test")
    other, other_vkey = _keypair("db.test")
    verifier = parse_verifier_key(vkey)
    text = format_tree(Tree(3, b"\x07" * 32))
    assert open_note(_sign(text, "db.test", private, vkey), verifier) == text
    assert parse_tree(text) == Tree(3, b"\x07" * 32)
    # A signature by another key (even of the same name) is ignored, so nothing verifies.
    with pytest.raises(SignatureError, match=r"not signed by key db\.test"):
        open_note(_sign(text, "db.test", other, other_vkey), verifier)
    # A signature that claims the key but does not verify is an error.
    with pytest.raises(SignatureError, match="invalid signature"):
        open_note(_sign(text, "db.test", other, vkey), verifier)
    both = (
        _sign(text, "db.test", other, other_vkey)
        + _sign(text, "db.test", private, vkey)[len(text) + 1 :]
    )
    assert open_note(both, verifier) == text
    for malformed in (text.encode(), b"go.sum\n\n- x y\n", b"a\x01\n\n"):
        with pytest.raises(MalformedResponseError):
            open_note(malformed, verifier)


# ---------------------------------------------------------------------------------------
# GOSUMDB, GONOSUMDB, GOPRIVATE
# ---------------------------------------------------------------------------------------


def test_gosumdb_spellings() -> None:
    assert parse_gosumdb("off") is None
    default = parse_gosumdb("")
    assert default is not None
    assert (default.name, default.url) == ("sum.golang.org", "https://sum.golang.org")
    china = parse_gosumdb("sum.golang.google.cn")
    assert china is not None
    assert (china.name, china.url) == ("sum.golang.org", "https://sum.golang.google.cn")
    mirror = parse_gosumdb("sum.golang.org https://mirror.example/sumdb/")
    assert mirror is not None
    assert mirror.url == "https://mirror.example/sumdb"
    _, vkey = _keypair("sums.example.com/db")
    own = parse_gosumdb(vkey)
    assert own is not None
    assert (own.name, own.url) == ("sums.example.com/db", "https://sums.example.com/db")
    local = parse_gosumdb(f"{vkey} http://127.0.0.1:9")
    assert local is not None
    assert local.url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sums.example.com", "not off, a known database or a key"),
        ("sum.golang.org https://a https://b", "too many fields"),
        ("sum.golang.org ftp://mirror.example", "must be http"),
        ("sum.golang.org https://user:secret@", "must be http"),
    ],
)
def test_bad_gosumdb(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_gosumdb(value)
    assert info.value.key == "GOSUMDB"
    assert "secret" not in str(info.value)


def test_gonosumdb_and_goprivate() -> None:
    settings = settings_from_env({"GOPRIVATE": "corp.example/*,,internal.example/"})
    assert settings.no_sum_patterns == ("corp.example/*", "internal.example")
    assert settings.skips("corp.example/tool/v2")
    assert settings.skips("internal.example/x")
    assert not settings.skips("corp.example")
    assert not settings.skips("github.com/a/b")
    # GONOSUMDB, when set, replaces GOPRIVATE for the checksum database.
    settings = settings_from_env({"GOPRIVATE": "corp.example", "GONOSUMDB": "github.com/a"})
    assert settings.no_sum_patterns == ("github.com/a",)
    assert not settings.skips("corp.example/x")
    assert settings.skips("github.com/a/b")
    assert settings_from_env({"GOSUMDB": "off"}).skips("github.com/a/b")


# ---------------------------------------------------------------------------------------
# Against the real server
# ---------------------------------------------------------------------------------------

RECORDS = [fake_record(f"example.com/m{i}", "v1.0.0") for i in range(5)]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def _client(
    server: SumDBServer, http: httpx.AsyncClient, state: Path, **kwargs: float
) -> SumDBClient:
    return SumDBClient(settings_from_env({"GOSUMDB": server.gosumdb}), http, state, **kwargs)  # type: ignore[arg-type]


def _state_file(state: Path) -> bytes:
    (latest,) = state.glob("*.latest")
    return latest.read_bytes()


async def test_honest_database_grows_and_stays_consistent(
    sumdb_binary: Path, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    state = tmp_path / "state"
    async with run_sumdb_server(sumdb_binary, tmp_path, RECORDS) as server:
        client = _client(server, http, state)
        for i in (3, 0, 4):
            lines = await client.lookup(f"example.com/m{i}", "v1.0.0")
            assert "".join(f"{line}\n" for line in lines.lines) == RECORDS[i]
        assert client.statistics().latest_size == 5
        assert b"go.sum database tree\n5\n" in _state_file(state)
        # The tree grows, across a tile boundary: each new tree must extend the stored one.
        more = [fake_record(f"example.com/n{i}", "v0.1.0") for i in range(300)]
        assert await server.add(more[:100]) == 105
        assert (await client.lookup("example.com/n99", "v0.1.0")).zip_hash in more[99]
        assert await server.add(more[100:]) == 305
        assert (await client.lookup("example.com/m1", "v1.0.0")).mod_hash in RECORDS[1]
        assert (await client.lookup("example.com/n299", "v0.1.0")).zip_hash in more[299]
        assert b"go.sum database tree\n305\n" in _state_file(state)
        stats = client.statistics()
        assert stats.lookups == 6
        assert stats.tile_cache_hits > 0
        # Another client (a restart) starts from the stored tree.
        again = _client(server, http, state)
        assert (await again.lookup("example.com/n150", "v0.1.0")).zip_hash in more[150]
        assert (await again.latest()).size == 305
        with pytest.raises(RecordNotFoundError, match=r"example.com/absent@v1.0.0: not in"):
            await again.lookup("example.com/absent", "v1.0.0")


async def test_tampered_record_is_refused(
    sumdb_binary: Path, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    flags = ("-tamper", "example.com/m2@v1.0.0")
    async with run_sumdb_server(sumdb_binary, tmp_path, RECORDS, *flags) as server:
        client = _client(server, http, tmp_path / "state")
        assert (await client.lookup("example.com/m1", "v1.0.0")).zip_hash in RECORDS[1]
        with pytest.raises(RecordProofError, match=r"example.com/m2@v1.0.0: the record .* not"):
            await client.lookup("example.com/m2", "v1.0.0")


@pytest.mark.parametrize(
    ("flag", "message"),
    [("-sign-other-key", "not signed by key"), ("-corrupt-signature", "invalid signature")],
)
async def test_tree_not_signed_by_the_key_is_refused(
    sumdb_binary: Path, tmp_path: Path, http: httpx.AsyncClient, flag: str, message: str
) -> None:
    async with run_sumdb_server(sumdb_binary, tmp_path, RECORDS, flag) as server:
        client = _client(server, http, tmp_path / "state")
        with pytest.raises(SignatureError, match=message):
            await client.lookup("example.com/m1", "v1.0.0")
    assert not list(tmp_path.glob("state/*.latest"))  # nothing unverified was stored


_MANY = [fake_record(f"example.com/many{i}", "v1.0.0") for i in range(300)]
_OTHER = fake_record("example.com/x", "v1.0.0")


@pytest.mark.parametrize(
    ("honest", "forked"),
    [
        pytest.param(RECORDS, [*RECORDS[:2], _OTHER, *RECORDS[3:]], id="same-size"),
        pytest.param(RECORDS, [*RECORDS[:4], _OTHER, RECORDS[4]], id="larger"),
        # The first client holds the honest full tile 0 in its cache: it must not be
        # mistaken for a bad tile of the forked tree.
        pytest.param(_MANY, [*_MANY[:3], _OTHER, *_MANY[4:], RECORDS[0]], id="full-tile"),
    ],
)
async def test_forked_tree_is_refused(
    sumdb_binary: Path,
    tmp_path: Path,
    http: httpx.AsyncClient,
    honest: list[str],
    forked: list[str],
) -> None:
    state = tmp_path / "state"
    module = honest[0].split()[0]
    async with run_sumdb_server(sumdb_binary, tmp_path, honest) as server:
        client = _client(server, http, state)
        await client.lookup(module, "v1.0.0")
    stored = _state_file(state)
    # The same key signs another history: a restarted server, a forked log.
    async with run_sumdb_server(sumdb_binary, tmp_path, forked, listen=server.addr) as fork:
        assert fork.vkey == server.vkey
        for each in (client, _client(fork, http, state)):
            with pytest.raises(ForkError, match="SECURITY ERROR") as info:
                await each.lookup(module, "v1.0.0")
            assert f"go.sum database tree\n{len(honest)}\n".encode() in info.value.older_note
        assert _state_file(state) == stored


async def test_smaller_inconsistent_tree_is_refused(
    sumdb_binary: Path, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """A restarted server with a shorter, different history cannot prove its tree is a
    prefix of the stored one: an error (it has no tiles of the stored tree), never
    accepted, and the stored tree stays."""
    state = tmp_path / "state"
    async with run_sumdb_server(sumdb_binary, tmp_path, RECORDS) as server:
        await _client(server, http, state).lookup("example.com/m0", "v1.0.0")
    stored = _state_file(state)
    async with run_sumdb_server(sumdb_binary, tmp_path, [RECORDS[0], _OTHER]) as fork:
        with pytest.raises(SumDBError):
            await _client(fork, http, state).lookup("example.com/m0", "v1.0.0")
    assert _state_file(state) == stored


async def test_state_written_by_another_client_must_be_consistent(
    sumdb_binary: Path, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    state = tmp_path / "state"
    async with run_sumdb_server(sumdb_binary, tmp_path, RECORDS) as server:
        first, second = _client(server, http, state), _client(server, http, state)
        await first.lookup("example.com/m0", "v1.0.0")
        await server.add([fake_record("example.com/later", "v1.0.0")])
        await second.lookup("example.com/later", "v1.0.0")  # advances the shared file
        assert (await first.lookup("example.com/m1", "v1.0.0")).zip_hash in RECORDS[1]
        assert first.statistics().latest_size == 6


async def test_checks_of_downloads(
    sumdb_binary: Path, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    zip_path = tmp_path / "m.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("example.com/z@v1.2.3/go.mod", "module example.com/z\n")
    mod = b"module example.com/z\n"
    record = fake_record("example.com/z", "v1.2.3", zip_h1(zip_path), mod_h1(mod))
    async with run_sumdb_server(sumdb_binary, tmp_path, [record]) as server:
        lines = await _client(server, http, tmp_path / "state").lookup("example.com/z", "v1.2.3")
    await check_zip(lines, zip_path)
    check_mod(lines, mod)
    with pytest.raises(ChecksumMismatchError) as info:
        check_mod(lines, b"module example.com/other\n")
    assert info.value.module == "example.com/z"
    assert info.value.version == "v1.2.3/go.mod"
    assert lines.mod_hash in str(info.value)
    assert mod_h1(b"module example.com/other\n") in str(info.value)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("example.com/z@v1.2.3/go.mod", "module example.com/evil\n")
    with pytest.raises(ChecksumMismatchError, match=r"example.com/z@v1.2.3: checksum mismatch"):
        await check_zip(lines, other)


# ---------------------------------------------------------------------------------------
# Bounds and refusals that need no database
# ---------------------------------------------------------------------------------------


def _mock_client(tmp_path: Path, handler: httpx.MockTransport, timeout: float = 5) -> SumDBClient:
    _, vkey = _keypair("db.test")
    settings = SumDBSettings(
        parse_gosumdb(f"{vkey} http://user:secret@127.0.0.1:9"), ("corp.example",)
    )
    return SumDBClient(settings, httpx.AsyncClient(transport=handler), tmp_path, timeout=timeout)


async def test_unreachable_slow_and_oversized(tmp_path: Path) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def hang(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    async def flood(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"x" * (1 << 20)

        # Streamed, as a real transport's: bytes content would come already read, and
        # the client reads bodies raw.
        return httpx.Response(200, content=body())

    async def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, content=b"/srv/secret/path failed")

    cases = [
        (refuse, SumDBUnreachableError, "unreachable"),
        (hang, SumDBUnreachableError, "in time"),
        (flood, MalformedResponseError, "more than"),
        (broken, SumDBUnreachableError, "answered 500"),
    ]
    for handler, error, message in cases:
        client = _mock_client(tmp_path, httpx.MockTransport(handler), timeout=0.2)
        with pytest.raises(error, match=message) as info:
            await client.lookup("example.com/m", "v1.0.0")
        assert "secret" not in str(info.value)
        assert isinstance(info.value, UpstreamError)


async def test_compressed_answers_are_refused_undecoded(tmp_path: Path) -> None:
    _, vkey = _keypair("db.test")
    empty = tmp_path / "empty"
    empty.mkdir()
    async with static_proxy(empty) as server, httpx.AsyncClient() as http:
        # Answered gzip whatever is asked: 32 MiB of zeros, never to be decoded.
        server.gzipped[""] = gzip.compress(bytes(32 << 20))
        client = SumDBClient(
            SumDBSettings(parse_gosumdb(f"{vkey} {server.url}")), http, tmp_path, timeout=5
        )
        with pytest.raises(MalformedResponseError, match="Content-Encoding 'gzip'") as caught:
            await client.lookup("example.com/m", "v1.0.0")
        assert isinstance(caught.value, UpstreamError)
        assert server.seen[0].headers["accept-encoding"] == "identity"


async def test_skipped_modules_are_not_looked_up(tmp_path: Path) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise AssertionError("asked the database")

    client = _mock_client(tmp_path, httpx.MockTransport(fail))
    assert client.skips("corp.example/x")
    with pytest.raises(SkippedModuleError):
        await client.lookup("corp.example/x", "v1.0.0")
    with pytest.raises(ValueError, match="GOSUMDB is off"):
        SumDBClient(SumDBSettings(None), httpx.AsyncClient(), tmp_path)
