"""HTTP basic auth, as Athens' ``BasicAuthUser`` / ``BasicAuthPass``.

On only when both are set (:attr:`~athens_trio.Config.basic_auth_enabled`).  Every path
but the probes (:data:`EXEMPT_PATHS`, under the ``PathPrefix``) needs the credentials;
a request without them, or with wrong ones, gets 401 with :data:`CHALLENGE`.  The user
and the password are both compared in constant time, always both, so the time a refusal
takes tells nothing about which was wrong or how much of it matched.  Nothing here logs:
the ``Authorization`` header is read once, compared, and dropped.

The go command sends credentials from its netrc (``NETRC=<file>``, default
``~/.netrc``; ``machine <host> login <user> password <pass>``) to HTTPS proxies only:
over plain HTTP it sends none, and refuses a ``user:pass@`` in the ``GOPROXY`` URL
("refusing to pass credentials to insecure URL").  Basic auth wants ``TLSCertFile`` /
``TLSKeyFile`` (or a TLS-terminating proxy in front).
"""

from __future__ import annotations

import binascii
import hmac

__all__ = ["CHALLENGE", "EXEMPT_PATHS", "REALM", "BasicAuth"]

REALM = "athens-trio"
#: The ``WWW-Authenticate`` header of a 401.
CHALLENGE = f'Basic realm="{REALM}"'
#: Paths (after the PathPrefix) a prober may ask without credentials.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})

# Far more than any sane user:password, small enough that decoding costs nothing.
_MAX_CREDENTIALS = 4096


class BasicAuth:
    """Checks an ``Authorization`` header against one user and password."""

    def __init__(self, user: str, password: str) -> None:
        if not user or not password:
            raise ValueError("basic auth needs both a user and a password")
        self._user = user.encode()
        self._password = password.encode()

    def allows(self, authorization: bytes | None) -> bool:
        """Whether ``authorization`` (the raw header value) carries our credentials."""
        credentials = _parse(authorization)
        if credentials is None:
            return False
        user, password = credentials
        # Both comparisons always run (`a and b` would skip the second after a wrong user).
        user_ok = hmac.compare_digest(user, self._user)
        password_ok = hmac.compare_digest(password, self._password)
        return user_ok and password_ok


def _parse(authorization: bytes | None) -> tuple[bytes, bytes] | None:
    """(user, password) of a ``Basic`` header; None if there is none or it is malformed."""
    if authorization is None or len(authorization) > _MAX_CREDENTIALS:
        return None
    scheme, _, encoded = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = binascii.a2b_base64(encoded.strip(), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None
