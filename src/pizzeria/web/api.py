"""The public API, called in-process: each call is handed to the gateway's own ASGI app as the
request a browser's script would have sent, so it passes the same gate (token, role, rate limits
per address and per user) and the same upstreams (deadlines, retries, circuit breakers) as any
client's call, without a socket or a second HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message

from pizzeria.kit import context
from pizzeria.kit.logging import get_logger

log = get_logger(__name__)

Params = list[tuple[str, str]] | dict[str, str] | None


@dataclass(frozen=True)
class Answer:
    """An answer of the API: its status, headers and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    def problem(self) -> str:
        """What went wrong, in the words of the service's problem details."""
        try:
            found = self.json()
        except orjson.JSONDecodeError:
            found = None
        if isinstance(found, dict) and found.get("detail"):
            return str(found["detail"])
        return f"the service answered {self.status}"

    def field_errors(self) -> dict[str, str]:
        """`field → message` from a 422's problem details."""
        try:
            found = self.json()
        except orjson.JSONDecodeError:
            return {}
        errors = found.get("errors", []) if isinstance(found, dict) else []
        return {str(e.get("field", "")): str(e.get("message", "")) for e in errors if isinstance(e, dict)}


@dataclass
class Stream:
    """A long-lived answer (server-sent events) being received."""

    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


class PublicApi:
    """Calls to `/api/v1/...` of the app this UI is part of."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def _scope(
        self, request: Request, method: str, path: str, params: Params, headers: dict[str, str]
    ) -> dict[str, Any]:
        sent = {
            "host": request.headers.get("host", "gateway"),
            "accept": "application/json",
            **headers,
        }
        request_id = context.request_id.get()
        if request_id:
            sent["x-request-id"] = request_id
        traceparent = context.traceparent.get()
        if traceparent:
            sent["traceparent"] = traceparent
        query = urlencode(list(params.items()) if isinstance(params, dict) else params or [])
        return {
            "type": "http",
            # 2.3: the app watches for the client going away (a stream then ends at once).
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": request.url.scheme,
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in sent.items()],
            "client": request.scope.get("client"),
            "server": request.scope.get("server"),
            "state": {},
        }

    @staticmethod
    def _headers(token: str | None, json: Any, extra: dict[str, str] | None) -> tuple[dict[str, str], bytes]:
        headers = dict(extra or {})
        if token:
            headers["authorization"] = f"Bearer {token}"
        body = b""
        if json is not None:
            body = orjson.dumps(json)
            headers["content-type"] = "application/json"
            headers["content-length"] = str(len(body))
        return headers, body

    async def call(
        self,
        request: Request,
        method: str,
        path: str,
        *,
        token: str | None = None,
        params: Params = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One call, answered whole."""
        sent, body = self._headers(token, json, headers)
        scope = self._scope(request, method, path, params, sent)
        done = asyncio.Event()
        delivered = False
        status = 500
        answer_headers: dict[str, str] = {}
        parts: list[bytes] = []

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                answer_headers.update(
                    (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in message.get("headers", [])
                )
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.app(scope, receive, send)
        except Exception:
            # The app has answered 500 (and logged why) before raising it again for the server.
            log.warning("in-process API call failed", method=method, path=path)
            if status < 500:
                raise
        finally:
            done.set()
        return Answer(status, answer_headers, b"".join(parts))

    @contextlib.asynccontextmanager
    async def stream(self, request: Request, path: str, *, token: str | None = None) -> AsyncIterator[Stream]:
        """A GET whose answer arrives in pieces for as long as the app sends them; leaving the
        block tells the app its client has gone."""
        sent, _ = self._headers(token, None, {"accept": "text/event-stream"})
        scope = self._scope(request, "GET", path, None, sent)
        queue: asyncio.Queue[Message | None] = asyncio.Queue()
        gone = asyncio.Event()
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if gone.is_set():
                raise OSError("the client has gone")
            await queue.put(message)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            start = await queue.get()
            if start is None:
                task.result()  # the app failed before answering: raise what it raised
                raise RuntimeError("the app answered nothing")

            async def chunks() -> AsyncIterator[bytes]:
                while (message := await queue.get()) is not None:
                    if message["type"] == "http.response.body":
                        if message.get("body"):
                            yield message["body"]
                        if not message.get("more_body", False):
                            return

            yield Stream(
                status=start["status"],
                headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])},
                chunks=chunks(),
            )
        finally:
            gone.set()
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, OSError):
                task.cancel()
            except asyncio.CancelledError:
                task.cancel()
                # The app's task may have been cancelled, or this one: only the first is ours to
                # keep quiet about; a caller being cancelled (a shutdown) stays cancelled.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise


async def server_sent_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream as they arrive; a block without data
    (a keep-alive comment, a `retry:`) comes as ("", "")."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            kind, data = "message", []
            for line in block.decode("utf-8", "replace").split("\n"):
                if line.startswith("event:"):
                    kind = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    data.append(line.removeprefix("data:").removeprefix(" "))
            yield (kind, "\n".join(data)) if data else ("", "")
