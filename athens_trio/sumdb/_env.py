"""Which checksum database to ask, and for which modules: GOSUMDB, GONOSUMDB, GOPRIVATE
with the go command's meanings.

GOSUMDB is ``off``, a known database's name, ``<verifier key>``, or either of the last
two followed by the URL to reach the database at.  Without one, go asks the GOPROXY list
first (``<proxy>/sumdb/<name>/supported``) and
else reaches ``https://<name>``.  GONOSUMDB (default: GOPRIVATE) lists comma-separated
path globs whose modules are not looked up.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from .._exceptions import ConfigError
from .._patterns import matches_pattern, split_patterns
from ._note import Verifier, parse_verifier_key

__all__ = [
    "SUM_GOLANG_ORG_KEY",
    "GoSumDB",
    "SumDBSettings",
    "parse_gosumdb",
    "settings_from_env",
]

#: The public key of sum.golang.org, as the go command knows it.
SUM_GOLANG_ORG_KEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
_KNOWN_KEYS = {"sum.golang.org": SUM_GOLANG_ORG_KEY}
# GOSUMDB spellings the go command rewrites before parsing.
_ALIASES = {"sum.golang.google.cn": "sum.golang.org https://sum.golang.google.cn"}
_DEFAULT = "sum.golang.org"
# A database name is host[/path]: what "https://" + name must parse back to unchanged.
_NAME = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]+)?(/[A-Za-z0-9._~\-]+)*")


@dataclass(frozen=True)
class GoSumDB:
    """A checksum database: its verifier key and where to reach it directly
    (``url_given``: GOSUMDB named the URL, so no proxy is asked)."""

    verifier: Verifier
    url: str
    url_given: bool = False

    @property
    def name(self) -> str:
        return self.verifier.name


def parse_gosumdb(value: str) -> GoSumDB | None:
    """Parse GOSUMDB; None means ``off``.  Errors are :class:`ConfigError` on GOSUMDB
    (without echoing a URL, which may carry credentials)."""
    value = _ALIASES.get(value.strip(), value.strip()) or _DEFAULT
    if value == "off":
        return None
    fields = value.split()
    if len(fields) > 2:
        raise ConfigError("GOSUMDB", "too many fields")
    try:
        verifier = parse_verifier_key(_KNOWN_KEYS.get(fields[0], fields[0]))
    except ValueError as exc:
        raise ConfigError("GOSUMDB", f"not off, a known database or a key: {exc}") from None
    if not _NAME.fullmatch(verifier.name):
        raise ConfigError("GOSUMDB", "the key's name is not host[/path]")
    url = fields[1] if len(fields) == 2 else f"https://{verifier.name}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query:
        raise ConfigError("GOSUMDB", "the database URL must be http(s)://host[/path]")
    return GoSumDB(verifier=verifier, url=url.rstrip("/"), url_given=len(fields) == 2)


@dataclass(frozen=True)
class SumDBSettings:
    """The database to check modules against (None: GOSUMDB=off) and the globs of
    modules never looked up."""

    database: GoSumDB | None
    no_sum_patterns: tuple[str, ...] = ()

    def skips(self, module: str) -> bool:
        """Whether ``module`` is not checked: the database is off or a glob matches it."""
        return self.database is None or any(
            matches_pattern(p, module) for p in self.no_sum_patterns
        )


def settings_from_env(env: Mapping[str, str]) -> SumDBSettings:
    """Settings from GOSUMDB, GONOSUMDB and GOPRIVATE, with the go command's defaults.

    ``-insecure`` in GOFLAGS turns the database off, as it did in the go commands that
    had the flag (later ones refuse it)."""
    nosumdb = env.get("GONOSUMDB") or env.get("GOPRIVATE", "")
    database = parse_gosumdb(env.get("GOSUMDB", ""))
    if _insecure(env.get("GOFLAGS", "")):
        database = None
    return SumDBSettings(database, split_patterns(nosumdb))


def _insecure(goflags: str) -> bool:
    """Whether GOFLAGS sets ``-insecure`` (last setting wins, as go's flag parsing)."""
    insecure = False
    for flag in goflags.split():
        name, _, value = flag.lstrip("-").partition("=")
        if name == "insecure" and flag.startswith("-"):
            insecure = value.lower() in ("", "1", "t", "true")
    return insecure
