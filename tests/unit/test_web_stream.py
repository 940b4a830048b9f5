"""The in-process API's streams: leaving one tells the app its client has gone, and waits a
little for the app to end, without swallowing the cancellation of the task that left."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from pizzeria.web.api import PublicApi

BROWSER = Request({"type": "http", "method": "GET", "path": "/", "headers": [], "scheme": "http"})


class SlowToLeave:
    """An ASGI app that streams one chunk, then, once told the client has gone, keeps going
    until `release` is set (an app still finishing its work when the caller stops waiting)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.told_gone = asyncio.Event()
        self.ended = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"data: hello\n\n", "more_body": True})
            message: Message = await receive()
            assert message["type"] == "http.disconnect"
            self.told_gone.set()
            await self.release.wait()
        finally:
            self.ended.set()


async def _until(check: asyncio.Event, deadline_s: float = 5.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check.is_set():
        assert time.monotonic() < deadline, "the app was never told its client had gone"
        await asyncio.sleep(0.01)


async def test_leaving_a_stream_tells_the_app_and_waits_for_it_to_end() -> None:
    app = SlowToLeave()
    api = PublicApi(app)

    async def read_one() -> bytes:
        async with api.stream(BROWSER, "/api/v1/stream") as stream:
            async for chunk in stream.chunks:
                return chunk
        return b""

    reader = asyncio.create_task(read_one())
    await _until(app.told_gone)
    assert not reader.done()  # still waiting for the app to end
    app.release.set()
    assert await reader == b"data: hello\n\n"
    assert app.ended.is_set()


async def test_a_caller_cancelled_while_the_app_ends_stays_cancelled() -> None:
    app = SlowToLeave()
    api = PublicApi(app)

    async def read_one() -> None:
        async with api.stream(BROWSER, "/api/v1/stream") as stream:
            async for _ in stream.chunks:
                break

    reader = asyncio.create_task(read_one())
    await _until(app.told_gone)
    reader.cancel()  # e.g. the server shutting down while the stream is being closed
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert reader.cancelled()
    await _until(app.ended)  # and the app's task was not left running
