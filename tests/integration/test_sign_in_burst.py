"""A burst of correct sign-ins of one account, through the gateway to the real identity with
real argon2 hashing: what the hashing queue cannot take is refused at once (503 problem,
Retry-After, X-Load-Shed), the rest sign in, identity's breaker stays closed, and sign-in works
as soon as the burst is over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from pizzeria.kit.auth import Principal, TokenIssuer
from pizzeria.services.gateway.app import create_app
from pizzeria.services.gateway.routes import UPSTREAMS
from pizzeria.services.gateway.settings import GatewaySettings
from pizzeria.services.identity import passwords
from tests.integration.gateway import Upstream, fresh_ip
from tests.integration.identity import DEMO, Identity, identity_settings, running_identity


@pytest.fixture
async def identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Identity]:
    # Hashing at its production cost, a queue of two.
    monkeypatch.setenv("PASSWORD_HASH_QUEUE", "2")
    async with identity_settings("sqlite", tmp_path, monkeypatch) as settings:
        monkeypatch.setattr(passwords, "default_hasher", PasswordHasher)
        async with running_identity(settings, monkeypatch) as running:
            yield running


async def test_a_sign_in_burst_is_shed_fast_and_never_opens_identitys_breaker(identity: Identity) -> None:
    env = {"GATEWAY_BREAKER_FAILURES": "1", "RATE_LIMIT_PER_IP": "100000"}
    transports: dict[str, httpx.AsyncBaseTransport] = {
        n: httpx.MockTransport(Upstream(n).handle) for n in UPSTREAMS if n != "identity"
    }
    transports["identity"] = httpx.ASGITransport(app=identity.app)
    app = create_app(identity.settings, GatewaySettings(**env), transports=transports)  # type: ignore[arg-type]
    email, password = DEMO["customer"]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(fresh_ip(), 40000)), base_url="http://gateway"
        ) as gateway,
    ):

        async def sign_in() -> httpx.Response:
            return await gateway.post("/api/v1/auth/login", json={"email": email, "password": password})

        answers = await asyncio.gather(*(sign_in() for _ in range(120)))
        statuses = [a.status_code for a in answers]
        assert set(statuses) == {200, 503}, statuses
        for shed in (a for a in answers if a.status_code == 503):
            assert shed.headers["content-type"].startswith("application/problem+json")
            assert shed.json()["type"].endswith("/overloaded"), shed.text
            assert int(shed.headers["retry-after"]) >= 1
            assert "x-load-shed" not in shed.headers, "meant for the gateway, not passed on"

        admin = TokenIssuer.from_settings(identity.settings).issue(Principal(user_id="ops", role="admin"))
        health = (await gateway.get("/health", headers={"Authorization": f"Bearer {admin.token}"})).json()
        assert health["upstreams"]["identity"]["breaker"] == "closed"
        assert (await sign_in()).status_code == 200
