"""Requests to an ASGI app exactly as given: header names and values of any bytes (an HTTP
client refuses to send most of them, a server in front of the app does not); a long-lived
answer held open (an HTTP client over ASGI reads the whole answer first); an app served on a
port of this host."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp, Message

from pizzeria.cli import server_config
from tests.support.polling import eventually
from tests.support.tcpproxy import free_port


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]], client: tuple[str, int]) -> dict[str, Any]:
    target, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), *((name.lower(), value) for name, value in headers)],
        "client": client,
        "server": ("testserver", 80),
        "state": {},
    }


async def raw_request(
    app: ASGIApp,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    client: tuple[str, int] = ("192.0.2.1", 40000),
) -> RawResponse:
    """One request through `app`, its headers passed as they are; the whole answer."""
    scope = _scope(method, path, headers, client)
    sent = False
    status = 0
    answer_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            answer_headers.update({k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])})
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return RawResponse(status, answer_headers, b"".join(chunks))


@dataclass
class HeldStream:
    """A long-lived answer of an ASGI app, held open until `close` (the client goes away)."""

    status: int
    headers: dict[str, str]
    chunks: list[bytes]
    _gone: asyncio.Event
    _running: asyncio.Task[None]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    async def close(self) -> None:
        self._gone.set()
        await self._running


async def hold_stream(
    app: ASGIApp, path: str, headers: dict[str, str], client: tuple[str, int] = ("192.0.2.1", 40000)
) -> HeldStream:
    """GET `path` from `app` and return once the answer has started, the stream still open (a
    test client that reads the whole answer first could not hold one); a short answer is read
    whole. Time-bounded: an app that never starts its answer fails the test."""
    scope = _scope("GET", path, [(k.encode(), v.encode()) for k, v in headers.items()], client)
    started: asyncio.Future[tuple[int, dict[str, str]]] = asyncio.get_running_loop().create_future()
    gone = asyncio.Event()
    chunks: list[bytes] = []
    asked = False

    async def receive() -> Message:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer = {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])}
            started.set_result((message["status"], answer))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            if not started.done():
                started.set_exception(AssertionError(f"GET {path} ended without an answer"))

    running = asyncio.create_task(run())
    status, answer = await asyncio.wait_for(asyncio.shield(started), 30)
    held = HeldStream(status, answer, chunks, gone, running)
    if status != 200:
        await asyncio.wait_for(running, 30)
    return held


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """`app` served as `pizzeria serve` would, on a free port of 127.0.0.1: its base URL."""
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, "the server never started", 30, every=0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True  # a test's server: no wait for streams still open
        await task
