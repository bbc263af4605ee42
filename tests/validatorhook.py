"""A local HTTP service standing in for the operator's ValidatorHook (shared by the
policy and fetch-path tests)."""

from __future__ import annotations

import json
from collections.abc import Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

__all__ = ["Answer", "start_hook"]

#: What the hook answers a request ({"Module", "Version"}): a status and a body.

Answer = Callable[[dict[str, str]], tuple[int, bytes]]


async def start_hook(nursery: trio.Nursery, answer: Answer, seen: list[dict[str, str]]) -> str:
    """A local HTTP service standing in for the operator's validator."""

    async def app(
        scope: dict[str, object], receive: Callable[..., object], send: Callable[..., object]
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()  # type: ignore[misc]
                await send({"type": event["type"] + ".complete"})  # type: ignore[misc]
                if event["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()  # type: ignore[misc]
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        seen.append(request)
        status, reply = answer(request)
        await send({"type": "http.response.start", "status": status, "headers": []})  # type: ignore[misc]
        await send({"type": "http.response.body", "body": reply})  # type: ignore[misc]

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds: list[str] = await nursery.start(hypercorn_serve, app, config)
    return binds[0] + "/validate"
