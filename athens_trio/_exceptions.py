"""The exceptions athens-trio raises, and what each one means to a go client.

Each class carries its answer: :attr:`~AthensTrioError.status` (the HTTP status a go
client gets) and :attr:`~AthensTrioError.outcome` (how a fetch that failed with it is
counted).  The server and the metrics read these; nothing else decides them.

Exception hierarchy (HTTP status; fetch outcome where it is not ``error``)::

    AthensTrioError ............... base class                                    500
    ├── ConfigError ............... a config key or environment variable is bad   500
    ├── GoBinaryError ............. the configured go binary is missing or broken 500
    ├── InvalidRequestError ....... malformed input; never reaches go or storage  400
    │   ├── InvalidPathError ...... a module path (or its escaped form) is bad    400
    │   └── InvalidVersionError ... a version (or its escaped form) is bad        400
    ├── NotFoundError ............. the module or version does not exist          404 not_found
    │   └── NoSuchEndpointError ... the path is no GOPROXY endpoint at all        404 not_found
    ├── ForbiddenError ............ policy refuses it: FilterFile, ValidatorHook  403
    ├── Redirected ................ policy sends the client elsewhere     301/303 (its own)
    ├── RangeNotSatisfiableError .. a Range starts past the end of the zip        416
    ├── UpstreamError ............. go could not reach or read the VCS            502 upstream_error
    │   ├── FetchTimeoutError ..... fetching or listing ran past its timeout      504 timeout
    │   ├── FetchTooLargeError .... a fetch used more disk than MaxFetchBytes     502 too_large
    │   ├── FetchStoppedError ..... stopped: nobody waits any more, or shutdown   502 upstream_error
    │   └── NewerGoRequiredError .. the zip needs a go the proxy cannot have      502 upstream_error
    ├── OverloadedError ........... too many fetches waiting; ``Retry-After``     503 overloaded
    ├── StorageError .............. the storage backend failed                    500
    │   └── DamagedVersionError ... a stored file no longer matches its hash      500
    └── ValidatorError ............ the ValidatorHook failed or answered nonsense 500

Anything else (a bug) is a 500 and a fetch outcome ``error``: see :func:`status_of` and
:func:`outcome_of`.

Only :class:`NotFoundError` may become a 404, because that is what makes the go command
fall through to the next entry of a ``GOPROXY=a,b`` list: a fault must never look like
"does not exist".  That is also why an upstream failure is a 502 (we are a gateway to
the VCS), not a 404: a ``GOPROXY=ours,direct`` client would fall through and get a
different answer.
"""

from __future__ import annotations

__all__ = [
    "AthensTrioError",
    "ConfigError",
    "DamagedVersionError",
    "FetchStoppedError",
    "FetchTimeoutError",
    "FetchTooLargeError",
    "ForbiddenError",
    "GoBinaryError",
    "InvalidPathError",
    "InvalidRequestError",
    "InvalidVersionError",
    "NewerGoRequiredError",
    "NoSuchEndpointError",
    "NotFoundError",
    "OverloadedError",
    "RangeNotSatisfiableError",
    "Redirected",
    "StorageError",
    "UpstreamError",
    "ValidatorError",
    "outcome_of",
    "status_of",
]


class AthensTrioError(Exception):
    """Base class of every error athens-trio raises on purpose."""

    #: The HTTP status a go client gets for it (the tree in the module docstring).
    status: int = 500
    #: How a fetch that failed with it is counted (``athens_trio_fetches_total``).
    outcome: str = "error"


class ConfigError(AthensTrioError):
    """A configuration value is wrong; :attr:`key` names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        return (type(self), (self.key, self.message))


class GoBinaryError(AthensTrioError):
    """The go binary cannot be run at all."""


class InvalidRequestError(AthensTrioError, ValueError):
    """Input that is malformed; it is refused before anything acts on it."""

    status = 400


class InvalidPathError(InvalidRequestError):
    """A module path, or its case-escaped form, breaks golang.org/x/mod's rules."""


class InvalidVersionError(InvalidRequestError):
    """A version or query, or its case-escaped form, is not acceptable."""


class NotFoundError(AthensTrioError):
    """The module, or this version of it, does not exist (upstream or in storage)."""

    status = 404
    outcome = "not_found"


class NoSuchEndpointError(NotFoundError):
    """The path is none of the GOPROXY endpoints (it has no ``/@v/`` or ``/@latest``)."""


class ForbiddenError(AthensTrioError):
    """The operator's policy refuses this module or version (a filter rule, the hook)."""

    status = 403


class Redirected(AthensTrioError):
    """Not an error but a decision: the client should ask :attr:`location` instead.

    Raised by the download policy (DownloadMode ``redirect``, a filter's ``D`` rule)
    so that library callers see the decision too; the server turns it into a redirect
    with :attr:`status`.
    """

    def __init__(self, location: str, status: int, reason: str) -> None:
        super().__init__(f"{reason}: see {location}")
        self.location = location
        self.status = status
        self.reason = reason

    def __reduce__(self) -> tuple[type[Redirected], tuple[str, int, str]]:
        return (type(self), (self.location, self.status, self.reason))


class RangeNotSatisfiableError(AthensTrioError):
    """A ``Range`` header whose first byte lies past the end of the representation."""

    status = 416

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable: the representation has {size} bytes")
        self.size = size

    def __reduce__(self) -> tuple[type[RangeNotSatisfiableError], tuple[int]]:
        return (type(self), (self.size,))


class UpstreamError(AthensTrioError):
    """go failed for a reason other than "does not exist" (network, VCS, crash)."""

    status = 502
    outcome = "upstream_error"


class FetchStoppedError(UpstreamError):
    """A shared fetch was stopped before it finished: nobody waited for it any more
    (AbandonedFetchGrace), or the proxy is shutting down."""


class NewerGoRequiredError(UpstreamError):
    """Building the version's zip needs a newer go than the proxy's, and none can be had
    (GoToolchainSwitch off, or the toolchain could not be obtained).  Its go.mod part
    can still be fetched and served."""


class FetchTimeoutError(UpstreamError):
    """A go command ran past its timeout and was killed."""

    status = 504
    outcome = "timeout"


class OverloadedError(AthensTrioError):
    """As many fetches (or upstream calls) run and wait as their pool allows; the
    client is told to come back after :attr:`retry_after` seconds rather than queued
    without bound."""

    status = 503
    outcome = "overloaded"

    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(f"too many {what} at once; retry in {retry_after} s")
        self.what = what
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[OverloadedError], tuple[str, int]]:
        return (type(self), (self.what, self.retry_after))


class FetchTooLargeError(UpstreamError):
    """A fetch used more disk than MaxFetchBytes allows and was killed."""

    status = 502
    outcome = "too_large"


class StorageError(AthensTrioError):
    """The storage backend failed to read or write."""


class DamagedVersionError(StorageError):
    """A stored file no longer matches the hash recorded when it was saved.

    The download protocol answers it by fetching the version again; nothing damaged is
    ever served.
    """


class ValidatorError(AthensTrioError):
    """The validator hook did not answer 200 or 403: a fault, never a "yes"."""


def status_of(error: BaseException) -> int:
    """The HTTP status ``error`` becomes: its own, or 500 for anything not ours (a bug)."""
    return error.status if isinstance(error, AthensTrioError) else 500


def outcome_of(error: BaseException) -> str:
    """How a fetch that failed with ``error`` is counted: its own, or ``error``."""
    return error.outcome if isinstance(error, AthensTrioError) else "error"
