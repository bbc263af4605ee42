"""The go.sum lines a database vouches for, and checks of downloads against them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trio

from .._ziphash import mod_h1, zip_h1
from ._errors import ChecksumMismatchError, MalformedResponseError

__all__ = ["GoSumLines", "check_mod", "check_zip", "parse_record_lines"]


@dataclass(frozen=True)
class GoSumLines:
    """A module version's ``h1:`` hashes as the checksum database recorded them."""

    module: str
    version: str
    zip_hash: str
    mod_hash: str

    @property
    def lines(self) -> tuple[str, str]:
        """The two go.sum lines: ``module version h1:...`` and its ``/go.mod`` line."""
        return (
            f"{self.module} {self.version} {self.zip_hash}",
            f"{self.module} {self.version}/go.mod {self.mod_hash}",
        )


def parse_record_lines(module: str, version: str, text: bytes) -> GoSumLines:
    """The hashes in a record's text, which must be go.sum lines of ``module@version``."""
    hashes: dict[str, str] = {}
    for line in text.decode("utf-8").splitlines():
        fields = line.split(" ")
        if len(fields) != 3 or fields[0] != module or not fields[2].startswith("h1:"):
            raise MalformedResponseError(f"{module}@{version}: record is not its go.sum lines")
        if fields[1] in (version, f"{version}/go.mod"):
            hashes.setdefault(fields[1], fields[2])
        else:
            raise MalformedResponseError(f"{module}@{version}: record is for another version")
    zip_hash, mod_hash = hashes.get(version), hashes.get(f"{version}/go.mod")
    if zip_hash is None or mod_hash is None:
        raise MalformedResponseError(f"{module}@{version}: record lacks a go.sum line")
    return GoSumLines(module, version, zip_hash, mod_hash)


def _check(lines: GoSumLines, suffix: str, expected: str, actual: str) -> None:
    if actual != expected:
        raise ChecksumMismatchError(lines.module, lines.version + suffix, expected, actual)


def check_mod(lines: GoSumLines, mod: bytes) -> None:
    """Raise :class:`ChecksumMismatchError` unless ``mod`` is the go.mod the database
    recorded."""
    _check(lines, "/go.mod", lines.mod_hash, mod_h1(mod))


async def check_zip(lines: GoSumLines, zip_path: Path) -> None:
    """Raise :class:`ChecksumMismatchError` unless the zip at ``zip_path`` is the one the
    database recorded (hashed in a thread, streamed)."""
    _check(lines, "", lines.zip_hash, await trio.to_thread.run_sync(zip_h1, zip_path))
