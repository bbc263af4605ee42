"""A checksum database (sumdb) client: go.sum lines proven by a signed transparency log.

Does what golang.org/x/mod/sumdb's client does for the go command, on trio::

    settings = settings_from_env(os.environ)      # GOSUMDB, GONOSUMDB, GOPRIVATE
    if not settings.skips(module):
        client = SumDBClient(settings, http_client, state_dir)
        lines = await client.lookup(module, version)
        await check_zip(lines, zip_path)           # ChecksumMismatchError if not
        check_mod(lines, go_mod_bytes)

A lookup is trusted only when the tree head is signed by the configured key
(:class:`SignatureError`), consistent with the newest tree seen before, which is kept
in ``state_dir`` (:class:`ForkError`), and the record is proven included in it from
authenticated tiles (:class:`RecordProofError`).  Every failure is an
:class:`~athens_trio.UpstreamError`.
"""

from __future__ import annotations

from ._client import SumDBAccess, SumDBClient, SumDBStatistics
from ._env import (
    SUM_GOLANG_ORG_KEY,
    GoSumDB,
    SumDBSettings,
    parse_gosumdb,
    settings_from_env,
)
from ._errors import (
    ChecksumMismatchError,
    ForkError,
    InconsistentTileError,
    MalformedResponseError,
    RecordNotFoundError,
    RecordProofError,
    SignatureError,
    SkippedModuleError,
    SumDBError,
    SumDBStateError,
    SumDBUnreachableError,
)
from ._note import Verifier, parse_verifier_key
from ._sums import GoSumLines, check_mod, check_zip
from ._tlog import Tile, Tree, parse_tile_path

__all__ = [
    "SUM_GOLANG_ORG_KEY",
    "ChecksumMismatchError",
    "ForkError",
    "GoSumDB",
    "GoSumLines",
    "InconsistentTileError",
    "MalformedResponseError",
    "RecordNotFoundError",
    "RecordProofError",
    "SignatureError",
    "SkippedModuleError",
    "SumDBAccess",
    "SumDBClient",
    "SumDBError",
    "SumDBSettings",
    "SumDBStateError",
    "SumDBStatistics",
    "SumDBUnreachableError",
    "Tile",
    "Tree",
    "Verifier",
    "check_mod",
    "check_zip",
    "parse_gosumdb",
    "parse_tile_path",
    "parse_verifier_key",
    "settings_from_env",
]
