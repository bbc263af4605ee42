"""Athens' DownloadMode (with its HCL file): what to do on a storage miss.

DownloadMode decides what happens when a requested version is *not* in storage (a
stored version is always served): ``sync`` fetches it while the client waits, ``async``
starts fetching it in the background and answers 404 now, ``redirect`` sends the client
to ``DownloadURL``, ``async_redirect`` does both, ``none`` answers 404.  ``file:<path>``
and ``custom:<base64>`` give an HCL document that picks a mode (and a URL) per module
pattern, first match wins::

    downloadURL = "https://proxy.golang.org"
    mode        = "async_redirect"
    download "github.com/corp/*" { mode = "sync" }
    download "golang.org/x/*"    { mode = "redirect"  downloadURL = "https://goproxy.io" }
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import hcl2
from hcl2 import SerializationOptions

from .._exceptions import ConfigError
from .._patterns import matches_pattern

__all__ = ["DownloadPolicy", "Mode", "load_download_policy"]

Mode = Literal["sync", "async", "redirect", "async_redirect", "none"]
_MODES: tuple[str, ...] = get_args(Mode)


@dataclass(frozen=True)
class _PatternRule:
    pattern: str
    mode: Mode
    download_url: str


@dataclass(frozen=True)
class DownloadPolicy:
    """What to do on a storage miss, per module."""

    mode: Mode = "sync"
    download_url: str = ""
    rules: tuple[_PatternRule, ...] = ()

    def mode_for(self, module: str) -> Mode:
        for rule in self.rules:
            if matches_pattern(rule.pattern, module):
                return rule.mode
        return self.mode

    def url_for(self, module: str) -> str:
        for rule in self.rules:
            if matches_pattern(rule.pattern, module) and rule.download_url:
                return rule.download_url
        return self.download_url


def load_download_policy(download_mode: str, download_url: str) -> DownloadPolicy:
    """Build the policy from ``DownloadMode`` and ``DownloadURL``; ConfigError names
    DownloadMode if its file or inline document is unreadable or wrong."""
    if download_mode.startswith("file:"):
        path = Path(download_mode[len("file:") :])
        try:
            document = path.read_text()
        except OSError as exc:
            raise ConfigError("DownloadMode", f"cannot read {path}: {exc.strerror}") from exc
        return _parse_hcl(document, f"file {path}")
    if download_mode.startswith("custom:"):
        try:
            document = base64.b64decode(download_mode[len("custom:") :], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ConfigError("DownloadMode", f"custom: is not base64 HCL: {exc}") from exc
        return _parse_hcl(document, "custom: document")
    return DownloadPolicy(mode=_mode(download_mode, "DownloadMode"), download_url=download_url)


def _mode(value: Any, where: str) -> Mode:
    if value not in _MODES:
        raise ConfigError("DownloadMode", f"{where}: unrecognized mode {value!r}")
    mode: Mode = value
    return mode


def _parse_hcl(document: str, where: str) -> DownloadPolicy:
    try:
        parsed = hcl2.loads(
            document,
            serialization_options=SerializationOptions(
                strip_string_quotes=True, explicit_blocks=False, with_comments=False
            ),
        )
    except Exception as exc:  # the parser raises lark's many error types
        raise ConfigError("DownloadMode", f"{where} is not valid HCL: {exc}") from exc
    rules: list[_PatternRule] = []
    for block in parsed.get("download", []):
        for pattern, body in block.items():
            if not isinstance(body, dict) or "mode" not in body:
                raise ConfigError("DownloadMode", f"{where}: download {pattern!r} needs a mode")
            rules.append(
                _PatternRule(
                    pattern=pattern,
                    mode=_mode(body["mode"], f"{where}, download {pattern!r}"),
                    download_url=str(body.get("downloadURL", "")),
                )
            )
    if "mode" not in parsed:
        raise ConfigError("DownloadMode", f"{where} has no top-level mode")
    return DownloadPolicy(
        mode=_mode(parsed["mode"], where),
        download_url=str(parsed.get("downloadURL", "")),
        rules=tuple(rules),
    )
