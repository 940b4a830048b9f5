"""Every request is one observation of its method, route template and status."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY
from starlette.types import Message, Receive, Scope, Send

from pizzeria.kit.http import RequestContextMiddleware


def answering(status: int) -> RequestContextMiddleware:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = SimpleNamespace(path="/v1/things/{thing_id}")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return RequestContextMiddleware(app)


def observed(status: int) -> float:
    labels = {"method": "GET", "route": "/v1/things/{thing_id}", "status": str(status)}
    return REGISTRY.get_sample_value("pizzeria_http_request_duration_seconds_count", labels) or 0.0


async def request(middleware: RequestContextMiddleware) -> None:
    scope = {"type": "http", "method": "GET", "path": "/v1/things/1", "headers": []}

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    await middleware(scope, receive, send)


async def test_each_request_is_counted_under_its_route_and_status() -> None:
    before = {status: observed(status) for status in (200, 404)}
    for _ in range(3):
        await request(answering(200))
    await request(answering(404))
    assert observed(200) - before[200] == 3
    assert observed(404) - before[404] == 1
