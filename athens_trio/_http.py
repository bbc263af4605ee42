"""What the HTTP clients that read bodies athens-trio checks ask for and accept.

httpx asks for gzip, deflate (and br, zstd where installed) by default and decodes each
raw chunk whole, so a small compressed body can grow past any size cap before the cap
is checked: 32 KiB of gzip is 32 MiB decoded, at once.  Upstream GOPROXYs and checksum
databases are therefore asked for the identity encoding, their bodies are read raw
(``aiter_raw``) and counted as they come, and an answer that is encoded anyway is
refused unread (:func:`content_encoding`); :func:`raw_chunks` reads them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import cast

import httpx
import trio

__all__ = ["IDENTITY", "aclose_shielded", "content_encoding", "raw_chunks"]

IDENTITY: Mapping[str, str] = {"Accept-Encoding": "identity"}
"""Headers asking for the body as it is, uncompressed."""

_SHOWN = 40
_CLEANUP_SECONDS = 5


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
