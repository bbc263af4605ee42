"""A loopback TCP relay that delays every byte by a fixed time each way, as a remote
server's round trip would (netem in user space, for machines without it).

Each direction reads chunks as they come and sends each one ``one_way`` seconds after it
arrived, in order, so requests in flight overlap as they would on a long link (the delay
is per chunk, not per connection, and never adds up along a pipelined stream).  Memory is
bounded: a direction holds at most :data:`_IN_FLIGHT` chunks before it stops reading.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from functools import partial

import trio

__all__ = ["delayed_relay"]

_CHUNK = 64 << 10
_IN_FLIGHT = 64


async def _direction(source: trio.SocketStream, sink: trio.SocketStream, one_way: float) -> None:
    send, receive = trio.open_memory_channel[tuple[float, bytes]](_IN_FLIGHT)

    async def read() -> None:
        async with send:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await source.receive_some(_CHUNK):
                    await send.send((trio.current_time() + one_way, data))

    async def write() -> None:
        async with receive:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                async for due, data in receive:
                    await trio.sleep_until(due)
                    await sink.send_all(data)
                await sink.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(write)


async def _relay(port: int, one_way: float, client: trio.SocketStream) -> None:
    async with client:
        try:
            server = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return
        async with server, trio.open_nursery() as nursery:
            nursery.start_soon(_direction, client, server, one_way)
            nursery.start_soon(_direction, server, client, one_way)


@contextlib.asynccontextmanager
async def delayed_relay(url: str, round_trip: float) -> AsyncIterator[str]:
    """``url`` (``http://127.0.0.1:<port>``) behind a relay adding ``round_trip`` seconds
    to every round trip; yields the relay's URL."""
    port = int(url.rsplit(":", 1)[1])
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    relay_port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, partial(_relay, port, round_trip / 2), listeners)
        try:
            yield f"http://127.0.0.1:{relay_port}"
        finally:
            nursery.cancel_scope.cancel()
