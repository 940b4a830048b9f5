"""An upstream that dies while handling each request: it reads the whole request, counts it, and
closes the connection without answering (what a replica that crashed after applying a write
looks like to its caller). The count says how often a request really reached it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class HangUp:
    def __init__(self) -> None:
        #: The head of each request read whole (request line and headers).
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests.append(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def hanging_up() -> AsyncIterator[tuple[HangUp, str]]:
    """A `HangUp` listening on loopback, and its base URL."""
    upstream = HangUp()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    try:
        yield upstream, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()
