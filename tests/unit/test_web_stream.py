"""The in-process API's streams: leaving one tells the app its client has gone, and waits a
little for the app to end, without swallowing the cancellation of the task that left."""

from __future__ import annotations

import asyncio

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


async def _left_by_its_reader(app: SlowToLeave) -> asyncio.Task[bytes]:
    """A task that reads the first chunk of a stream from `app` and leaves the stream; returned
    once the app has been told its client has gone (while the task waits for the app to end)."""
    api = PublicApi(app)

    async def read_one() -> bytes:
        async with api.stream(BROWSER, "/api/v1/stream") as stream:
            async for chunk in stream.chunks:
                return chunk
        return b""

    reader = asyncio.create_task(read_one())
    await asyncio.wait_for(app.told_gone.wait(), 5)
    return reader


async def test_leaving_a_stream_tells_the_app_and_waits_for_it_to_end() -> None:
    app = SlowToLeave()
    reader = await _left_by_its_reader(app)
    assert not reader.done()  # still waiting for the app to end
    app.release.set()
    assert await reader == b"data: hello\n\n"
    assert app.ended.is_set()


async def test_a_caller_cancelled_while_the_app_ends_stays_cancelled() -> None:
    app = SlowToLeave()
    reader = await _left_by_its_reader(app)
    reader.cancel()  # e.g. the server shutting down while the stream is being closed
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert reader.cancelled()
    await asyncio.wait_for(app.ended.wait(), 5)  # and the app's task was not left running
