"""A made-up X-Forwarded-For buys no fresh budget: the gateway's per-address rate limit and
identity's sign-in throttle count the peer, unless the peer is a trusted proxy (TRUSTED_PROXIES),
whose forwarded address is then the client's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pizzeria.services.gateway.routes import UPSTREAMS
from tests.integration.gateway import Gateway, fresh_ip, problem
from tests.integration.identity import DEMO, Identity, identity_settings, running_identity
from tests.integration.test_service_api import assert_problem
from tests.support.asgi import serving

#: What a client may write into the header: addresses, lists of them, nonsense.
CLAIMS = st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=12)), min_size=1, max_size=3).map(", ".join)


@pytest.fixture
def gateway_env() -> dict[str, str]:
    return {"RATE_LIMIT_PER_IP": "5", "RATE_LIMIT_WINDOW_S": "3600", "TRUSTED_PROXIES": "10.250.0.0/16"}


async def client_from(gateway: Gateway, peer: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=gateway.app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=st.lists(CLAIMS, min_size=8, max_size=8))
async def test_the_gateway_counts_the_peer_whatever_it_claims(gateway: Gateway, claims: list[str]) -> None:
    peer = fresh_ip()
    async for client in client_from(gateway, peer):
        statuses = []
        for claim in claims:
            try:
                response = await client.get("/api/v1/menu", headers={"X-Forwarded-For": claim})
            except UnicodeEncodeError:  # the client cannot send it: nothing to count
                continue
            if response.status_code == 400:  # not header text: refused before anything counts it
                assert response.json()["type"].endswith("/bad-header")
                continue
            statuses.append(response.status_code)
            if response.status_code == 200:
                assert response.json()["headers"]["x-forwarded-for"] == peer
        assert statuses.count(200) <= 5
        assert statuses[5:] == [429] * len(statuses[5:])


async def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(gateway: Gateway) -> None:
    async for proxy in client_from(gateway, "10.250.0.9"):
        for n in range(3):
            answers = [
                (await proxy.get("/api/v1/menu", headers={"X-Forwarded-For": f"6.6.6.{n}, 198.51.100.{n}"}))
                for _ in range(5)
            ]
            assert [a.status_code for a in answers] == [200] * 5, "each client behind the proxy has its own budget"
            assert {a.json()["headers"]["x-forwarded-for"] for a in answers} == {f"198.51.100.{n}"}
        problem(await proxy.get("/api/v1/menu", headers={"X-Forwarded-For": "1.2.3.4, 198.51.100.0"}), 429)
    assert {len(gateway.upstreams[u].calls) for u in UPSTREAMS if u != "catalog"} == {0}


# -- identity's sign-in throttle -------------------------------------------------------------------


@pytest.fixture
async def identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Identity]:
    async with (
        identity_settings("sqlite", tmp_path, monkeypatch, TRUSTED_PROXIES="192.0.2.250") as settings,
        running_identity(settings, monkeypatch) as running,
    ):
        yield running


async def test_a_made_up_forwarded_address_does_not_escape_the_sign_in_throttle(identity: Identity) -> None:
    identity.clock.freeze()
    sprayer = await identity.from_ip("198.51.100.66")
    for n in range(5):
        response = await sprayer.post(
            "/api/v1/auth/login",
            json={"email": f"guess{n}@pizzeria.example", "password": "Summer2026!"},
            headers={"X-Forwarded-For": f"203.0.113.{n}"},
        )
        assert_problem(response, 401)
    refused = await sprayer.post(
        "/api/v1/auth/login",
        json={"email": DEMO["customer2"][0], "password": DEMO["customer2"][1]},
        headers={"X-Forwarded-For": "203.0.113.200"},
    )
    assert_problem(refused, 429, "login-throttled")


async def test_identity_believes_the_address_its_trusted_gateway_forwards(identity: Identity) -> None:
    identity.clock.freeze()
    gateway = await identity.from_ip("192.0.2.250")
    for n in range(5):
        response = await gateway.post(
            "/api/v1/auth/login",
            json={"email": f"guess{n}@pizzeria.example", "password": "Summer2026!"},
            headers={"X-Forwarded-For": "203.0.113.66"},
        )
        assert_problem(response, 401)
    sprayed = {"X-Forwarded-For": "203.0.113.66"}
    customer = {"email": DEMO["customer2"][0], "password": DEMO["customer2"][1]}
    assert_problem(await gateway.post("/api/v1/auth/login", json=customer, headers=sprayed), 429, "login-throttled")
    # Another client behind the same gateway is not throttled by the sprayer's failures.
    other = {"X-Forwarded-For": "203.0.113.7"}
    assert (await gateway.post("/api/v1/auth/login", json=customer, headers=other)).status_code == 200


async def test_the_server_never_takes_the_client_address_from_a_header() -> None:
    # uvicorn by itself believes X-Forwarded-For from loopback peers: anyone on the host (or
    # anything that relays for them) could pick their address. `pizzeria serve` turns that off.
    probe = FastAPI()

    @probe.get("/who")
    async def who(request: Request) -> dict[str, str | None]:
        return {"client": request.client.host if request.client else None}

    async with serving(probe) as url, httpx.AsyncClient(base_url=url) as client:
        answer = await client.get("/who", headers={"X-Forwarded-For": "203.0.113.99"})
    assert answer.json() == {"client": "127.0.0.1"}
