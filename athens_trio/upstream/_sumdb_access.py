"""Where a checksum database is reached: through the GOPROXY list first, as go does.

Without a URL in GOSUMDB, go asks each proxy of its GOPROXY list, in order,
``<proxy>/sumdb/<name>/supported`` before its first request to the database:

* 200: that proxy serves the database; every request goes through it, never directly;
* 404 or 410, or any failure of an entry followed by ``|``: the next entry;
* ``direct`` or ``off``, or no entries left: the database itself (``https://<name>``);
* any other failure: the database is unreachable (that request fails; asked again on
  the next one, where go, a short-lived command, would give up for the run).

``file://`` entries are passed over: a download cache served that way holds no checksum
database.  A proxy's userinfo is sent as basic auth, as for its modules.
"""

from __future__ import annotations

import httpx

from ..sumdb import SumDBAccess, SumDBUnreachableError
from ..sumdb._client import Locate
from ._goproxy import EntryKind, PlanEntry, ProxyPlan

__all__ = ["sumdb_locator"]

_NOT_EXIST = (404, 410)


def sumdb_locator(plan: ProxyPlan, http: httpx.AsyncClient) -> Locate:
    """What a :class:`~athens_trio.sumdb.SumDBClient` asks, once, for its database."""

    async def locate(name: str) -> SumDBAccess | None:
        fault: str | None = None
        for entry in plan.entries:
            if entry.kind is not EntryKind.PROXY:
                break  # direct or off: the database itself
            if entry.is_file:
                continue
            problem = await _supported(http, entry, name)
            if problem is None:
                return SumDBAccess(f"{entry.url}/sumdb/{name}", entry.username, entry.password)
            if problem == "":
                continue  # does not serve it: the next
            fault = problem
            if not entry.fall_back_on_error:
                break
        if fault is not None:
            raise SumDBUnreachableError(f"{name}: {fault}")
        return None

    return locate


async def _supported(http: httpx.AsyncClient, entry: PlanEntry, name: str) -> str | None:
    """None when ``entry`` serves database ``name``; "" when it says it does not
    (404/410); else what went wrong, naming the proxy by scheme and host only."""
    auth = httpx.BasicAuth(entry.username, entry.password) if entry.username else None
    try:
        response = await http.get(
            f"{entry.url}/sumdb/{name}/supported", auth=auth, follow_redirects=True
        )
    except httpx.HTTPError as exc:
        return f"asking {entry.label} whether it serves it: {type(exc).__name__}"
    if response.status_code == 200:
        return None
    if response.status_code in _NOT_EXIST:
        return ""
    return f"{entry.label} answered {response.status_code} asked whether it serves it"
