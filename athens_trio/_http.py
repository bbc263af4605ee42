"""What the HTTP clients that read bodies athens-trio checks ask for and accept.

httpx asks for gzip, deflate (and br, zstd where installed) by default and decodes each
raw chunk whole, so a small compressed body can grow past any size cap before the cap
is checked: 32 KiB of gzip is 32 MiB decoded, at once.  Upstream GOPROXYs and checksum
databases are therefore asked for the identity encoding, their bodies are read raw
(``aiter_raw``) and counted as they come, and an answer that is encoded anyway is
refused unread (:func:`content_encoding`); :func:`raw_chunks` reads them.

Redirects are followed as go's client follows them (:func:`send_following`): at most
:data:`MAX_REDIRECTS`, and never from https to anything else, refused before the
insecure request is sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import cast

import httpx
import trio

__all__ = [
    "IDENTITY",
    "MAX_REDIRECTS",
    "NOT_EXIST_STATUSES",
    "RedirectRefused",
    "aclose_shielded",
    "content_encoding",
    "origin",
    "raw_chunks",
    "redirect_allowed",
    "send_following",
]

IDENTITY: Mapping[str, str] = {"Accept-Encoding": "identity"}
"""Headers asking for the body as it is, uncompressed."""

_SHOWN = 40
_CLEANUP_SECONDS = 5

MAX_REDIRECTS = 10
"""Redirects followed at most, as go's (net/http's default client)."""

NOT_EXIST_STATUSES = frozenset({404, 410})
"""What a GOPROXY (or a checksum database) answers for "does not exist", as go reads it:
everything else is a fault."""


class RedirectRefused(Exception):
    """A redirect not followed: its message says why, naming only scheme and host."""


def redirect_allowed(source: httpx.URL, target: httpx.URL) -> bool:
    """Whether a redirect from ``source`` to ``target`` may be followed: not from https
    to anything else (go: "redirected from secure URL ... to insecure URL ...")."""
    return source.scheme != "https" or target.scheme == "https"


def origin(url: httpx.URL) -> str:
    """``scheme://host[:port]`` of ``url``: what a message may show of it."""
    return f"{url.scheme}://{url.netloc.decode('ascii', errors='replace')}"


async def send_following(
    client: httpx.AsyncClient, request: httpx.Request, auth: httpx.Auth | None
) -> httpx.Response:
    """Send ``request`` (streamed), following redirects as go does; ``auth`` goes with
    this request only (httpx keeps its header on a redirect to the same origin only).
    Raises :class:`RedirectRefused` (the responses closed), or httpx's errors."""
    response = await client.send(request, auth=auth, follow_redirects=False, stream=True)
    hops = 0
    while (following := response.next_request) is not None:
        source = response.url
        await aclose_shielded(response)
        if not redirect_allowed(source, following.url):
            raise RedirectRefused(
                f"redirected from secure URL {origin(source)} "
                f"to insecure URL {origin(following.url)}"
            )
        if hops == MAX_REDIRECTS:
            raise RedirectRefused(f"stopped after {hops} redirects")
        hops += 1
        response = await client.send(following, follow_redirects=False, stream=True)
    return response


def content_encoding(response: httpx.Response) -> str:
    """The response's Content-Encoding if it is anything but identity, else ``""``.

    Shortened for messages: it is whatever the server wrote."""
    codings = [
        coding.strip().lower()
        for value in response.headers.get_list("content-encoding")
        for coding in value.split(",")
    ]
    if all(coding in ("", "identity") for coding in codings):
        return ""
    return ", ".join(codings)[:_SHOWN]


@contextlib.asynccontextmanager
async def raw_chunks(
    response: httpx.Response, chunk_size: int | None = None
) -> AsyncIterator[AsyncGenerator[bytes, None]]:
    """The streamed ``response``'s raw body, chunk by chunk; on the way out the response
    is closed and the body's iterators finished, even when left early or cancelled."""
    chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw(chunk_size))
    try:
        yield chunks
    finally:
        await aclose_shielded(response)
        with trio.move_on_after(_CLEANUP_SECONDS, shield=True):
            await _finish(chunks)


async def aclose_shielded(response: httpx.Response) -> None:
    """Close ``response``, shielded: a cancelled request still lets go of its connection."""
    with trio.move_on_after(_CLEANUP_SECONDS, shield=True):
        await response.aclose()


async def _finish(chunks: AsyncGenerator[bytes, None]) -> None:
    """Run a closed response's body iterator to its end.

    httpx's body iterators are async generators nested several deep, and closing the
    outer one leaves the inner ones suspended, for the garbage collector to finalise with
    a ResourceWarning (encode/httpx#3686).  Once the response is closed, one more step
    fails at the bottom, and the failure ends every one of them.
    """
    with contextlib.suppress(Exception):
        async for _ in chunks:
            pass
    await chunks.aclose()
