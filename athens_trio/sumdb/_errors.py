"""What can go wrong when a module is checked against a checksum database.

Everything the database does wrong is an :class:`~athens_trio.UpstreamError` (a 502
fault): a module whose sums cannot be proven is never stored, and never looks like
"does not exist".  Messages name the database by its key name, never by its URL (which
may carry credentials) nor by a local path.
"""

from __future__ import annotations

from .._exceptions import AthensTrioError, UpstreamError

__all__ = [
    "ChecksumMismatchError",
    "ForkError",
    "InconsistentTileError",
    "MalformedResponseError",
    "RecordNotFoundError",
    "RecordProofError",
    "SignatureError",
    "SkippedModuleError",
    "SumDBError",
    "SumDBStateError",
    "SumDBUnreachableError",
]


class SumDBError(UpstreamError):
    """The checksum database could not vouch for a module's sums."""


class SumDBUnreachableError(SumDBError):
    """The database did not answer in time, refused the connection, or answered non-200."""


class MalformedResponseError(SumDBError):
    """The database answered something that is not a record, a signed note or a tile
    (or more bytes than any of them can be)."""


class SignatureError(SumDBError):
    """A signed tree head is not signed by the configured key: signed only by unknown
    keys, or carrying a signature of the configured key that does not verify."""


class RecordNotFoundError(SumDBError):
    """The database has no record of this module version (it answered 404/410)."""


class RecordProofError(SumDBError):
    """The record the database served is not the one its signed tree holds: a tampered
    or substituted record."""


class InconsistentTileError(SumDBError):
    """Tiles the database served do not hash to the tree it signed."""


class ForkError(SumDBError):
    """Two trees signed by the database's key are not consistent: one is not a prefix of
    the other. Evidence of a forked (misbehaving or compromised) database; both signed
    notes are kept in :attr:`older_note` and :attr:`newer_note`."""

    def __init__(self, message: str, older_note: bytes = b"", newer_note: bytes = b"") -> None:
        super().__init__(message)
        self.older_note = older_note
        self.newer_note = newer_note

    def __reduce__(self) -> tuple[type[ForkError], tuple[str, bytes, bytes]]:
        return (type(self), (str(self), self.older_note, self.newer_note))


class SumDBStateError(SumDBError):
    """The stored latest tree cannot be read or no longer verifies with the key."""


class SkippedModuleError(AthensTrioError):
    """A lookup of a module that GONOSUMDB/GOPRIVATE exclude from the database: the
    caller should have asked :meth:`SumDBClient.skips` first."""


class ChecksumMismatchError(UpstreamError):
    """A downloaded zip or go.mod does not hash to what the checksum database recorded."""

    def __init__(self, module: str, version: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{module}@{version}: checksum mismatch: downloaded {actual}, "
            f"checksum database has {expected}"
        )
        self.module = module
        self.version = version
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[type[ChecksumMismatchError], tuple[str, str, str, str]]:
        return (type(self), (self.module, self.version, self.expected, self.actual))
