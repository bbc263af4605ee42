"""Logging: Athens' ``LogLevel`` names, ``LogFormat`` plain or JSON, and request IDs.

:func:`setup_logging` puts one handler on the root logger.  ``plain`` writes
``<time> <LEVEL> <logger>: <message>``; ``json`` writes one object per line with
``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, then whatever fields the
record carries (``extra={"fields": {...}}``: the access log's ``method``, ``path``,
``status``..., a fetch's ``module``, ``version``, ``outcome``...) and ``exception`` for a traceback.

Each HTTP request sets :data:`request_id` for its task; a record logged while it is set
carries it as ``request_id`` (appended as ``request_id=<id>`` in plain lines), so the
access line, a fault's traceback and the fetch the request started can be matched.  A
fetch runs in the pipeline's nursery but inherits the ID of the request that started it.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "LOG_LEVELS",
    "JsonFormatter",
    "PlainFormatter",
    "RequestIdFilter",
    "record_fields",
    "request_id",
    "setup_logging",
]

#: Athens' LogLevel names (logrus) as stdlib logging levels.
LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}

#: The ID of the HTTP request the current task serves (None outside a request).
request_id: ContextVar[str | None] = ContextVar("athens_trio_request_id", default=None)

# Every attribute a bare LogRecord has: anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request's ID (unless it carries one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            current = request_id.get()
            if current is not None:
                record.request_id = current
        return True


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record carries beyond the standard ones: ``extra=`` keys, the dict
    in ``extra={"fields": {...}}`` (for names a LogRecord reserves, such as ``module``),
    and the request ID."""
    fields = {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRIBUTES and key != "fields" and not key.startswith("_")
    }
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        fields.update(extra)
    return fields


def _utc_time(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _utc_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            document.setdefault(key, value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>``, plus ``request_id=<id>`` in a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        current = getattr(record, "request_id", None)
        if current is None:
            return line
        # The ID goes on the first line, before any traceback.
        first, newline, rest = line.partition("\n")
        return f"{first} request_id={current}{newline}{rest}"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`setup_logging` installs (so that a second call replaces it)."""


def setup_logging(level: str, log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record of ``level`` (an Athens LogLevel name) and above to
    ``stream`` (default stderr) as ``log_format`` says (``plain`` or ``json``).

    Returns the handler, which replaces one installed by an earlier call; other
    handlers on the root logger are left alone."""
    numeric = LOG_LEVELS[level]
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(numeric)
    # hypercorn's "Running on ..." repeats our startup line; keep its warnings.
    logging.getLogger("athens_trio.hypercorn").setLevel(max(numeric, logging.WARNING))
    # httpx logs every upstream request at INFO: a line per .info, go.mod, zip, checksum
    # lookup and tile, repeating what athens_trio.fetch says once per fetch (and a few
    # per cent of a cold fetch's CPU).  They stay at debug.
    for chatty in ("httpx", "httpcore"):
        quiet = logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING
        logging.getLogger(chatty).setLevel(quiet)
    return handler
