"""Configured URLs made safe to show: in answers, in logs, in ``config check``.

A URL in a config value (``ValidatorHook``, a ``GOPROXY`` in ``GoBinaryEnvVars``...)
may carry credentials in its userinfo (``https://user:token@host``) or its query
(``?token=...``); wherever one is shown, those are masked and the rest is kept, so the
reader still sees which host and path it was.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "redact_url", "redact_urls"]

MASK = "***"

# A URL inside a text: GOPROXY-style lists separate theirs with ',' or '|'.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s,|;]+")


def redact_url(url: str) -> str:
    """``url`` with its userinfo, query values and fragment masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.partition("://")[0] + "://" + MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}={MASK}" if has_value else MASK
        for name, has_value, _ in (item.partition("=") for item in parts.query.split("&"))
        if name or has_value
    )
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_urls(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`)."""
    return _URL.sub(lambda match: redact_url(match.group()), text)
