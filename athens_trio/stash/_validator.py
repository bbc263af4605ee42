"""The validator hook: the operator's service says yes or no before anything is fetched.

As Athens' ``ValidatorHook`` (``ATHENS_PROXY_VALIDATOR``): a POST of
``{"Module": ..., "Version": ...}`` as JSON; 200 allows, 403 refuses (the client gets
403, with the hook's answer logged), anything else, or no answer, is a fault (500):
a broken hook never lets a module through.  Checked once per fetch, inside the
single-flight, with the canonical version a query resolved to (never the query), so a
herd of requests asks the hook once; stored versions are served
without asking (they were allowed when they were fetched).
"""

from __future__ import annotations

import logging

import httpx
import msgspec

from .._exceptions import ForbiddenError, ValidatorError
from .._redact import redact_url, redact_urls
from ._stasher import Part, Stasher, Wrapper

__all__ = ["with_validator"]

log = logging.getLogger("athens_trio.validator")


class _ValidatedStasher(Stasher):
    def __init__(self, inner: Stasher, hook: str, client: httpx.AsyncClient) -> None:
        self._inner = inner
        self._hook = hook
        # What messages show: the hook's URL may carry credentials (userinfo, query).
        self._shown = redact_url(hook)
        self._client = client

    async def stash(self, module: str, version: str, part: Part) -> None:
        payload = msgspec.json.encode({"Module": module, "Version": version})
        try:
            response = await self._client.post(
                self._hook, content=payload, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            # httpx may name the URL in its own message too; not chained, so that no
            # traceback shows the original.
            raise ValidatorError(
                f"validator hook {self._shown} failed: {redact_urls(repr(exc))}"
            ) from None
        reason = response.text.strip()[:500]
        if response.status_code == 403:
            log.warning("validator refused %s@%s: %s", module, version, reason)
            raise ForbiddenError(
                f"{module}@{version} is refused by this proxy's validator"
                + (f": {reason}" if reason else "")
            )
        if response.status_code != 200:
            raise ValidatorError(
                f"validator hook {self._shown} answered {response.status_code} for "
                f"{module}@{version}"
            )
        if reason:
            log.info("validator allowed %s@%s: %s", module, version, reason)
        await self._inner.stash(module, version, part)


def with_validator(hook: str, client: httpx.AsyncClient) -> Wrapper:
    """Ask ``hook`` before each fetch, over ``client`` (owned by the caller)."""

    def wrap(inner: Stasher) -> Stasher:
        return _ValidatedStasher(inner, hook, client)

    return wrap
