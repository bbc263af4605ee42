"""Module zips from elsewhere: go's structure rules (:mod:`athens_trio._modzip`) and the
bounds on hashing one (:func:`athens_trio._ziphash.zip_h1`), on zips built here."""

from __future__ import annotations

import struct
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from athens_trio._exceptions import UpstreamError
from athens_trio._modzip import (
    MAX_GO_MOD,
    MAX_LICENSE,
    MAX_ZIP_FILE,
    InvalidModuleZipError,
    check_module_zip,
)
from athens_trio._ziphash import MemberSizeError, zip_h1
from athens_trio.upstream._proxy import _zip_sum

MODULE = "example.com/mod"
VERSION = "v1.2.3"
PREFIX = f"{MODULE}@{VERSION}/"

# The offsets of the uncompressed size in a zip's central directory header and local
# file header (APPNOTE 4.3.12, 4.3.7).
_CENTRAL_SIZE_OFFSET = 24
_LOCAL_SIZE_OFFSET = 22
_CENTRAL_CRC_OFFSET = 16
_LOCAL_CRC_OFFSET = 14


def make_zip(path: Path, names: Sequence[str], data: bytes = b"data\n") -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": some tests want one
        for name in names:
            archive.writestr(name, b"" if name.endswith("/") else data)
    return path


def declare_sizes(path: Path, sizes: Sequence[int], crcs: Sequence[int] = ()) -> None:
    """Rewrite the uncompressed size (and CRC-32, if given) each entry declares, in
    order; the data stays as it is."""
    data = bytearray(path.read_bytes())
    central = local = 0
    for index, size in enumerate(sizes):
        central = data.index(b"PK\x01\x02", central)
        local = data.index(b"PK\x03\x04", local)
        struct.pack_into("<I", data, central + _CENTRAL_SIZE_OFFSET, size)
        struct.pack_into("<I", data, local + _LOCAL_SIZE_OFFSET, size)
        if index < len(crcs):
            struct.pack_into("<I", data, central + _CENTRAL_CRC_OFFSET, crcs[index])
            struct.pack_into("<I", data, local + _LOCAL_CRC_OFFSET, crcs[index])
        central, local = central + 4, local + 4
    path.write_bytes(bytes(data))


def test_a_well_formed_zip_passes(tmp_path: Path) -> None:
    names = [
        PREFIX,
        f"{PREFIX}go.mod",
        f"{PREFIX}LICENSE",
        f"{PREFIX}sub/",
        f"{PREFIX}sub/a b+c_d~e (1).go",
        f"{PREFIX}docs/ünïcödé.md",
        f"{PREFIX}.github/workflows/ci.yml",
    ]
    path = make_zip(tmp_path / "good.zip", names)
    check_module_zip(path, MODULE, VERSION)
    assert _zip_sum(MODULE, VERSION, path) == zip_h1(path)


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (["other.com/x@v9.0.0/go.mod"], "path does not have prefix"),
        ([f"{MODULE}@v1.2.4/go.mod"], "path does not have prefix"),
        ([f"{MODULE}/go.mod"], "path does not have prefix"),
        ([f"{PREFIX}../../evil/go.mod"], "invalid path element '..'"),
        ([f"{PREFIX}a/../../evil.go"], "not clean"),
        ([f"{PREFIX}./a.go"], "not clean"),
        ([f"{PREFIX}/etc/passwd"], "empty path element"),
        ([f"{PREFIX}a//b.go"], "not clean"),
        ([f"{PREFIX}a\\b.go"], "invalid char"),
        ([f"{PREFIX}a:b.go"], "invalid char"),
        ([f"{PREFIX}a.go."], "trailing dot"),
        ([f"{PREFIX}aux.go"], "disallowed as path element component on Windows"),
        ([f"{PREFIX}a.go", f"{PREFIX}a.go"], "multiple entries for file"),
        ([f"{PREFIX}README.md", f"{PREFIX}readme.md"], "case-insensitive file name collision"),
        ([f"{PREFIX}Dir/a.go", f"{PREFIX}dir/b.go"], "case-insensitive file name collision"),
        ([f"{PREFIX}\u212a.go", f"{PREFIX}k.go"], "case-insensitive file name collision"),
        ([f"{PREFIX}a", f"{PREFIX}a/b.go"], "is both a file and a directory"),
        ([f"{PREFIX}a/", f"{PREFIX}a"], "is both a file and a directory"),
        ([f"{PREFIX}sub/go.mod"], "go.mod file not in module root directory"),
        ([f"{PREFIX}GO.MOD"], "go.mod files must have lowercase names"),
    ],
)
def test_a_zip_breaking_a_rule_is_refused(tmp_path: Path, names: list[str], problem: str) -> None:
    path = make_zip(tmp_path / "bad.zip", names)
    with pytest.raises(InvalidModuleZipError, match=problem.replace("(", r"\(")):
        check_module_zip(path, MODULE, VERSION)
    with pytest.raises(UpstreamError, match=f"{MODULE}@{VERSION}: the upstream's zip is not"):
        _zip_sum(MODULE, VERSION, path)


def test_names_differing_only_where_go_does_not_fold_are_accepted(tmp_path: Path) -> None:
    # go folds one character to one: "ß" is not "ss", nor the dotless i an "i".
    names = [
        f"{PREFIX}stra\u00dfe.go",
        f"{PREFIX}strasse.go",
        f"{PREFIX}\u0131.go",
        f"{PREFIX}i.go",
    ]
    check_module_zip(make_zip(tmp_path / "ok.zip", names), MODULE, VERSION)


def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    # "café" in Latin-1 and no UTF-8 flag, as an old zip tool writes it: a same-length
    # ASCII stand-in (no flag) has its bytes replaced in both headers.
    path = make_zip(tmp_path / "latin1.zip", [f"{PREFIX}cafX.go"])
    raw = path.read_bytes()
    assert raw.count(b"cafX.go") == 2
    path.write_bytes(raw.replace(b"cafX.go", b"caf\xe9.go"))
    with pytest.raises(InvalidModuleZipError, match="invalid UTF-8"):
        check_module_zip(path, MODULE, VERSION)


@pytest.mark.parametrize(
    ("name", "size", "problem"),
    [
        ("go.mod", MAX_GO_MOD + 1, "go.mod file too large"),
        ("LICENSE", MAX_LICENSE + 1, "LICENSE file too large"),
    ],
)
def test_a_go_mod_or_license_over_its_limit_is_refused(
    tmp_path: Path, name: str, size: int, problem: str
) -> None:
    path = make_zip(tmp_path / "big.zip", [f"{PREFIX}{name}"])
    declare_sizes(path, [size])
    with pytest.raises(InvalidModuleZipError, match=problem):
        check_module_zip(path, MODULE, VERSION)


def test_limits_are_inclusive(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "at.zip", [f"{PREFIX}go.mod", f"{PREFIX}LICENSE", f"{PREFIX}a"])
    declare_sizes(path, [MAX_GO_MOD, MAX_LICENSE, MAX_ZIP_FILE - MAX_GO_MOD - MAX_LICENSE])
    check_module_zip(path, MODULE, VERSION)  # only declared sizes are read: nothing inflated


def test_a_bomb_declaring_more_than_go_allows_is_refused_before_hashing(tmp_path: Path) -> None:
    """Files that together declare more than 500 MiB are refused from the central
    directory alone: nothing is decompressed."""
    names = [f"{PREFIX}part{index}" for index in range(3)]
    path = make_zip(tmp_path / "bomb.zip", names)
    declare_sizes(path, [200 << 20] * 3)
    with pytest.raises(InvalidModuleZipError, match="total uncompressed size"):
        check_module_zip(path, MODULE, VERSION)
    with pytest.raises(UpstreamError, match="total uncompressed size"):
        _zip_sum(MODULE, VERSION, path)


def test_a_zip_file_over_the_limit_is_refused_unopened(tmp_path: Path) -> None:
    path = tmp_path / "huge.zip"
    with path.open("wb") as sparse:
        sparse.truncate(MAX_ZIP_FILE + 1)
    with pytest.raises(InvalidModuleZipError, match="module zip file is too large"):
        check_module_zip(path, MODULE, VERSION)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("declared", [10, 5000])
def test_hashing_refuses_a_member_whose_data_is_not_its_declared_size(
    tmp_path: Path, method: int, declared: int
) -> None:
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr(f"{PREFIX}a.go", b"x" * 1000)
    declare_sizes(path, [declared])
    with pytest.raises((MemberSizeError, zipfile.BadZipFile)):
        zip_h1(path)
    with pytest.raises(UpstreamError, match=f"{MODULE}@{VERSION}"):
        _zip_sum(MODULE, VERSION, path)


def test_a_stored_member_longer_than_declared_is_not_hashed_in_part(tmp_path: Path) -> None:
    """With a CRC-32 matching the declared part, zipfile would hand over just that part,
    and the hash would be of data no go client sees (go refuses the zip)."""
    path = tmp_path / "truncating.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{PREFIX}a.go", b"x" * 1000)
    declare_sizes(path, [10], crcs=[zlib.crc32(b"x" * 10)])
    with pytest.raises(MemberSizeError, match="stored with 1000 bytes of data, 10 declared"):
        zip_h1(path)


def test_a_corrupt_deflate_stream_is_an_upstream_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{PREFIX}a.go", bytes(range(256)) * 64)
    with zipfile.ZipFile(path) as archive:
        (info,) = archive.infolist()
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename)  # the local header's fixed part
    data[start : start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(UpstreamError, match=f"{MODULE}@{VERSION}: the upstream's zip is not"):
        _zip_sum(MODULE, VERSION, path)


def test_a_name_without_the_utf8_flag_hashes_as_go_hashes_its_bytes(tmp_path: Path) -> None:
    # "é.go" as UTF-8 bytes, without the flag (a tool that does not set it): go hashes
    # the bytes, so the hash is the flagged zip's; Python alone would read "Ã©.go".
    flagged = make_zip(tmp_path / "flagged.zip", [f"{PREFIX}é.go"])
    unflagged = make_zip(tmp_path / "unflagged.zip", [f"{PREFIX}XX.go"])
    raw = unflagged.read_bytes()
    assert raw.count(b"XX.go") == 2
    unflagged.write_bytes(raw.replace(b"XX.go", "é.go".encode()))
    check_module_zip(unflagged, MODULE, VERSION)
    assert zip_h1(unflagged) == zip_h1(flagged)


def test_a_compression_go_cannot_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lzma.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_LZMA) as archive:
        archive.writestr(f"{PREFIX}go.mod", b"module example.com/mod\n")
    with pytest.raises(InvalidModuleZipError, match="cannot read"):
        check_module_zip(path, MODULE, VERSION)
