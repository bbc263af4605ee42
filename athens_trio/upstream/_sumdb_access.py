"""Where a checksum database is reached: through the GOPROXY list first, as go does.

Without a URL in GOSUMDB, go asks each proxy of its GOPROXY list, in order,
``<proxy>/sumdb/<name>/supported`` before its first request to the database:

* 200: that proxy serves the database; every request goes through it, never directly;
* 404 or 410, or any failure of an entry followed by ``|``: the next entry;
* ``direct``: the database itself (``https://<name>``), whatever failed before it;
* ``off``, or no entries left: the database itself, unless an entry failed otherwise
  than with 404/410, when the database is unreachable (that request fails; asked again
  on the next one, where go, a short-lived command, would give up for the run);
* any other failure of an entry followed by ``,``: unreachable, likewise.

``file://`` entries are passed over: a download cache served that way holds no checksum
database.  A proxy gets the credentials it gets for its modules
(:meth:`GoproxyClient.auth`), and a redirect from https to http is not followed.
"""

from __future__ import annotations

import httpx

from .._exceptions import UpstreamError
from .._http import NOT_EXIST_STATUSES
from ..sumdb import SumDBAccess, SumDBUnreachableError
from ..sumdb._client import Locate
from ._goproxy import EntryKind, GoproxyClient, PlanEntry

__all__ = ["sumdb_locator"]


def sumdb_locator(client: GoproxyClient) -> Locate:
    """What a :class:`~athens_trio.sumdb.SumDBClient` asks, once, for its database:
    the proxies of ``client``'s plan, with its credentials."""

    async def locate(name: str) -> SumDBAccess | None:
        fault: str | None = None
        for entry in client.plan.entries:
            if entry.kind is EntryKind.DIRECT:
                return None  # the database itself, whatever failed before (as go)
            if entry.kind is EntryKind.OFF:
                break  # the database itself, unless a proxy failed before
            if entry.is_file:
                continue
            base = httpx.URL(f"{entry.url}/sumdb/{name}")
            try:
                if await _serves(client, entry, base):
                    return SumDBAccess(str(base), client.auth(entry))
                continue  # it says it does not: the next
            except _ProbeFailed as exc:
                fault = str(exc)
            if not entry.fall_back_on_error:
                break
        if fault is not None:
            raise SumDBUnreachableError(f"{name}: {fault}")  # (the client adds no name)
        return None

    return locate


class _ProbeFailed(Exception):
    """Asking a proxy whether it serves a database failed (the message says how, naming
    the proxy by scheme and host only)."""


async def _serves(client: GoproxyClient, entry: PlanEntry, base: httpx.URL) -> bool:
    """Whether ``entry`` serves the database at ``base``: 200 yes, 404/410 no, anything
    else :class:`_ProbeFailed`."""
    what = f"asking {entry.label} whether it serves it"
    try:
        status = await client.status_of(entry, f"{base}/supported", what)
    except httpx.HTTPError as exc:
        raise _ProbeFailed(f"{what}: {type(exc).__name__}") from None
    except UpstreamError as exc:
        raise _ProbeFailed(str(exc)) from None  # a redirect refused
    if status == 200:
        return True
    if status in NOT_EXIST_STATUSES:
        return False
    raise _ProbeFailed(f"{entry.label} answered {status} asked whether it serves it")
