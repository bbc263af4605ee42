"""The exceptions athens-trio raises, and what each one means to a go client.

Exception hierarchy::

    AthensTrioError
    ├── ConfigError ............ a config key or environment variable has a bad value
    ├── GoBinaryError .......... the configured go binary is missing or does not run
    ├── InvalidRequestError .... malformed input; never reaches go or storage   (HTTP 400)
    │   ├── InvalidPathError ... a module path (or its escaped form) is not valid
    │   └── InvalidVersionError  a version (or its escaped form) is not valid
    ├── NotFoundError .......... the module or version does not exist            (HTTP 404)
    ├── ForbiddenError ......... policy refuses it: FilterFile or ValidatorHook   (HTTP 403)
    ├── Redirected ............. policy sends the client elsewhere         (HTTP 301/303)
    ├── UpstreamError .......... go could not reach or read the VCS / upstream   (HTTP 502)
    │   └── FetchTimeoutError .. fetching or listing ran past its timeout        (HTTP 504)
    ├── StorageError ........... the storage backend failed                      (HTTP 500)
    │   └── DamagedVersionError  a stored file no longer matches its recorded hash
    └── ValidatorError ......... the ValidatorHook failed or answered nonsense   (HTTP 500)

Only :class:`NotFoundError` may become a 404/410, because that is what makes the go
command fall through to the next entry of a ``GOPROXY=a,b`` list: a fault must never
look like "does not exist".
"""

from __future__ import annotations

__all__ = [
    "AthensTrioError",
    "ConfigError",
    "DamagedVersionError",
    "FetchTimeoutError",
    "ForbiddenError",
    "GoBinaryError",
    "InvalidPathError",
    "InvalidRequestError",
    "InvalidVersionError",
    "NotFoundError",
    "Redirected",
    "StorageError",
    "UpstreamError",
    "ValidatorError",
]


class AthensTrioError(Exception):
    """Base class of every error athens-trio raises on purpose."""


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


class InvalidPathError(InvalidRequestError):
    """A module path, or its case-escaped form, breaks golang.org/x/mod's rules."""


class InvalidVersionError(InvalidRequestError):
    """A version or query, or its case-escaped form, is not acceptable."""


class NotFoundError(AthensTrioError):
    """The module, or this version of it, does not exist (upstream or in storage)."""


class ForbiddenError(AthensTrioError):
    """The operator's policy refuses this module or version (a filter rule, the hook)."""


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


class UpstreamError(AthensTrioError):
    """go failed for a reason other than "does not exist" (network, VCS, crash)."""


class FetchTimeoutError(UpstreamError):
    """A go command ran past its timeout and was killed."""


class StorageError(AthensTrioError):
    """The storage backend failed to read or write."""


class DamagedVersionError(StorageError):
    """A stored file no longer matches the hash recorded when it was saved.

    The download protocol answers it by fetching the version again; nothing damaged is
    ever served.
    """


class ValidatorError(AthensTrioError):
    """The validator hook did not answer 200 or 403: a fault, never a "yes"."""
