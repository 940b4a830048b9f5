"""Order streams through the gateway cannot starve anyone: one caller holds at most
GATEWAY_STREAMS_PER_USER of them (429 beyond), the gateway at most GATEWAY_STREAM_CONNECTIONS
(503 beyond, at once), a closed stream is no longer counted, and streams hold connections of
a pool of their own, so however many are open, ordinary requests to the same upstream are
served and its breaker stays closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from pizzeria.kit.settings import Settings
from pizzeria.services.gateway.app import create_app
from pizzeria.services.gateway.routes import UPSTREAMS
from pizzeria.services.gateway.settings import GatewaySettings
from tests.integration.gateway import Gateway, Upstream, fresh_ip
from tests.support.asgi import HeldStream, hold_stream, serving


class Endless(httpx.AsyncByteStream):
    """An order stream that never ends by itself (the order is never delivered)."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        await self.closed.wait()

    async def aclose(self) -> None:
        self.closed.set()


def streams_or_echo(upstream: Upstream) -> None:
    """The fake orders: `/stream` paths answer an endless stream, unknown orders a 404."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            if "unknown" in request.url.path:
                return httpx.Response(404, json={"type": "not-found", "detail": "no such order"})
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Endless())
        return httpx.Response(200, json={"upstream": upstream.name})

    upstream.answer = answer


@pytest.fixture
def gateway_env() -> dict[str, str]:
    return {"GATEWAY_STREAMS_PER_USER": "2", "GATEWAY_STREAM_CONNECTIONS": "3"}


def problem_of(held: HeldStream, status: int, slug: str) -> None:
    assert held.status == status, held.body
    assert held.headers["content-type"].startswith("application/problem+json")
    assert f'/{slug}"'.encode() in held.body, held.body
    assert int(held.headers["retry-after"]) > 0


async def test_one_caller_holds_a_few_streams_and_the_gateway_no_more_than_its_pool(gateway: Gateway) -> None:
    streams_or_echo(gateway.upstreams["orders"])
    ann, bob, cid = (gateway.token("customer") for _ in range(3))
    held = [await hold_stream(gateway.app, "/api/v1/orders/o1/stream", ann) for _ in range(2)]
    assert [h.status for h in held] == [200, 200]
    assert held[0].headers["content-type"] == "text/event-stream"

    # A third of Ann's is refused; Ann's requests and Bob's stream are not.
    problem_of(await hold_stream(gateway.app, "/api/v1/orders/o1/stream", ann), 429, "too-many-streams")
    assert (await gateway.client.get("/api/v1/orders/o1", headers=ann)).status_code == 200
    held.append(await hold_stream(gateway.app, "/api/v1/orders/o2/stream", bob))
    assert held[-1].status == 200

    # The gateway holds as many as it has connections for: the next caller is told to come back.
    problem_of(await hold_stream(gateway.app, "/api/v1/orders/o3/stream", cid), 503, "streams-busy")

    # A stream whose reader left no longer counts.
    await held.pop(0).close()
    held.append(await hold_stream(gateway.app, "/api/v1/orders/o3/stream", cid))
    assert held[-1].status == 200
    problem_of(await hold_stream(gateway.app, "/api/v1/orders/o1/stream", ann), 503, "streams-busy")

    for stream in held:
        await stream.close()
    again = [await hold_stream(gateway.app, "/api/v1/orders/o1/stream", ann) for _ in range(2)]
    assert [h.status for h in again] == [200, 200]
    for stream in again:
        await stream.close()
    # None of it was the upstream's fault.
    assert {u["breaker"] for u in (await gateway.health())["upstreams"].values()} == {"closed"}


async def test_a_stream_the_upstream_refuses_is_passed_on_and_not_counted(gateway: Gateway) -> None:
    streams_or_echo(gateway.upstreams["orders"])
    ann = gateway.token("customer")
    for _ in range(5):
        refused = await hold_stream(gateway.app, "/api/v1/orders/unknown/stream", ann)
        assert refused.status == 404, refused.body
    held = [await hold_stream(gateway.app, "/api/v1/orders/o1/stream", ann) for _ in range(2)]
    assert [h.status for h in held] == [200, 200]
    for stream in held:
        await stream.close()


# -- on real connections ------------------------------------------------------------------------


def fake_orders() -> FastAPI:
    """Orders over HTTP: endless streams, and quick answers to reads."""
    app = FastAPI()

    @app.get("/api/v1/orders/{order_id}/stream")
    async def stream(order_id: str) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            await asyncio.Event().wait()  # until the gateway hangs up

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/api/v1/orders/{order_id}")
    async def read(order_id: str) -> dict[str, str]:
        return {"id": order_id}

    return app


async def test_open_streams_leave_requests_their_connections_and_the_breaker_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The gateway's defaults (200 connections per upstream for requests), but a breaker that
    # opens at the first failure, a short deadline, and callers who may hold 3 streams each.
    env = {
        "GATEWAY_STREAMS_PER_USER": "3",
        "GATEWAY_UPSTREAM_TIMEOUT_S": "2",
        "GATEWAY_BREAKER_FAILURES": "1",
        "RATE_LIMIT_PER_IP": "100000",
    }
    async with serving(fake_orders()) as orders_url:
        monkeypatch.setenv("ORDERS_URL", orders_url)
        settings = Settings(**env)  # type: ignore[arg-type]
        others = {n: httpx.MockTransport(Upstream(n).handle) for n in UPSTREAMS if n != "orders"}
        app = create_app(settings, GatewaySettings(**env), transports=others)  # type: ignore[arg-type]
        async with app.router.lifespan_context(app):
            gateway = Gateway(httpx.AsyncClient(), {}, settings, app, fresh_ip())
            # Many callers, each within their limit: together more streams than the gateway has
            # connections for requests.
            callers = [gateway.token("customer") for _ in range(70)]
            held = [await hold_stream(app, f"/api/v1/orders/o{n}/stream", c) for n, c in enumerate(callers * 3)]
            try:
                assert {h.status for h in held} == {200}
                reader = gateway.token("customer")
                transport = httpx.ASGITransport(app=app, client=(gateway.ip, 40000))
                async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                    reads = await asyncio.gather(
                        *(client.get(f"/api/v1/orders/r{n}", headers=reader) for n in range(6))
                    )
                    assert [r.status_code for r in reads] == [200] * 6, [r.text for r in reads]
                    health = (await client.get("/health", headers=gateway.token("admin"))).json()
                assert health["upstreams"]["orders"]["breaker"] == "closed"
            finally:
                for stream in held:
                    await stream.close()
