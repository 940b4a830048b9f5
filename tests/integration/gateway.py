"""The gateway in-process, its upstreams replaced by httpx transports the tests control."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx
import pytest
from fastapi import FastAPI

from pizzeria.kit.auth import Principal, TokenIssuer
from pizzeria.kit.settings import Settings
from pizzeria.services.gateway import app as gateway_app
from pizzeria.services.gateway.app import create_app
from pizzeria.services.gateway.routes import UPSTREAMS
from pizzeria.services.gateway.settings import GatewaySettings

REDIS_URL = "redis://127.0.0.1:6379/15"
_ips = itertools.count(1)


def fresh_ip() -> str:
    """A client address no other test used (rate limits count per address)."""
    n = next(_ips)
    return f"10.{uuid.uuid4().int % 250}.{n // 250 % 250}.{n % 250 + 1}"


@dataclass
class Upstream:
    """A fake service: records what reached it, answers 200 with an echo, or fails as told."""

    name: str
    calls: list[httpx.Request] = field(default_factory=list)
    failures: list[Exception | int] = field(default_factory=list)  # consumed one per call
    down: bool = False
    answer: Callable[[httpx.Request], httpx.Response] | None = None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        try:  # the real transport writes the request with h11, which refuses what is not HTTP
            h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        self.calls.append(request)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure, json={"detail": "upstream trouble"})
        if self.answer is not None:
            return self.answer(request)
        return httpx.Response(
            200,
            json={
                "upstream": self.name,
                "method": request.method,
                "path": request.url.path,
                "query": str(request.url.query, "ascii"),
                "body": request.content.decode(),
                "headers": dict(request.headers.items()),
            },
            headers={"x-upstream": self.name, "connection": "close"},
        )


@dataclass
class Gateway:
    client: httpx.AsyncClient
    upstreams: dict[str, Upstream]
    settings: Settings
    app: FastAPI
    ip: str

    async def health(self) -> dict[str, Any]:
        """`/health` as an operator sees it (an administrator's token: the test client's
        address is not in OPS_NETWORKS)."""
        body: dict[str, Any] = (await self.client.get("/health", headers=self.token("admin"))).json()
        return body

    def token(self, role: str = "customer", user: str | None = None) -> dict[str, str]:
        principal = Principal(user_id=user or f"{role}-{uuid.uuid4().hex[:8]}", role=role)  # type: ignore[arg-type]
        issued = TokenIssuer.from_settings(self.settings).issue(principal)
        return {"Authorization": f"Bearer {issued.token}"}


@pytest.fixture
def gateway_env() -> dict[str, str]:
    return {}


def hold_rate_limit_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rate-limit windows follow the clock (an hour's begins at hh:00:00), so a test counting one
    window's hits would see the count start again if it ran across a window's end (one did, at
    13:00:00.02). The gateways made from here on read the time this was called instead; windows
    ending are `test_ratelimit.py`'s, with a clock of its own."""
    started = time.time()
    build = gateway_app.build_rate_limiter

    def held(*args: Any, **kwargs: Any) -> Any:
        limiter = build(*args, **kwargs)
        limiter.clock = lambda: started
        return limiter

    monkeypatch.setattr(gateway_app, "build_rate_limiter", held)


@pytest.fixture
async def gateway(gateway_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    hold_rate_limit_window(monkeypatch)
    env = {
        "GATEWAY_BREAKER_FAILURES": "3",
        "GATEWAY_BREAKER_RESET_S": "0.3",
        "GATEWAY_READ_RETRIES": "1",
        "GATEWAY_UPSTREAM_TIMEOUT_S": "2",
        **gateway_env,
    }
    settings = Settings(**env)  # type: ignore[arg-type]
    upstreams = {name: Upstream(name) for name in UPSTREAMS}
    app = create_app(
        settings,
        GatewaySettings(**env),  # type: ignore[arg-type]
        transports={n: httpx.MockTransport(u.handle) for n, u in upstreams.items()},
    )
    async with app.router.lifespan_context(app):
        ip = fresh_ip()
        transport = httpx.ASGITransport(app=app, client=(ip, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Gateway(client, upstreams, settings, app, ip)


def problem(response: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    if slug:
        assert body["type"].endswith("/" + slug), body["type"]
    return body
