"""On the running system, through the gateway: a sign-out, a demotion and a deletion end the
access tokens issued before, at every service, within seconds; a refresh of another sign-in gets
a working token with what the account now is."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.e2e.conftest import start_system
from tests.e2e.system import System
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ACCOUNTS = {
    "alice": ("alice@pizzeria.example", "alice-pizza-1"),
    "bob": ("bob@pizzeria.example", "bob-pizza-12"),
    "chef": ("chef@pizzeria.example", "chef-pizza-1"),
    "admin": ("admin@pizzeria.example", "admin-pizza-1"),
}
#: Reads each of these accounts may make, by service: all refused once the token is revoked.
READS = {
    "alice": [("identity", "/api/v1/users/me"), ("orders", "/api/v1/orders"), ("payments", "/api/v1/payments")],
    "bob": [("identity", "/api/v1/users/me"), ("notifications", "/api/v1/notifications")],
    "chef": [("kitchen", "/api/v1/kitchen/tickets"), ("delivery", "/api/v1/couriers"), ("orders", "/api/v1/orders")],
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    running = await start_system(Path(tmp_path_factory.mktemp("access")), {})
    try:
        yield running
    finally:
        running.stop()


async def sign_in(gateway: httpx.AsyncClient, who: str) -> dict[str, Any]:
    email, password = ACCOUNTS[who]
    response = await gateway.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def refused_everywhere(system: System, gateway: httpx.AsyncClient, who: str, tokens: dict[str, Any]) -> bool:
    """Every read of the account answers 401, through the gateway and at its service."""
    async with httpx.AsyncClient(timeout=10) as direct:
        for service, path in READS[who]:
            for answer in (
                await gateway.get(path, headers=bearer(tokens)),
                await direct.get(system.url(service) + path, headers=bearer(tokens)),
            ):
                if answer.status_code != 401:
                    return False
        overview = await gateway.get("/api/v1/me/overview", headers=bearer(tokens))
        return overview.status_code == 401


async def test_sign_out_demotion_and_deletion_end_access_everywhere_within_seconds(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.url("gateway"), timeout=30) as gateway:
        admin = bearer(await sign_in(gateway, "admin"))
        alice_phone, alice_laptop = await sign_in(gateway, "alice"), await sign_in(gateway, "alice")
        bob, chef = await sign_in(gateway, "bob"), await sign_in(gateway, "chef")
        for who, tokens in (("alice", alice_laptop), ("bob", bob), ("chef", chef)):
            for service, path in READS[who]:
                assert (await gateway.get(path, headers=bearer(tokens))).status_code == 200, (who, service, path)
        users = {
            u["email"]: u["id"] for u in (await gateway.get("/api/v1/users?limit=50", headers=admin)).json()["items"]
        }

        started = time.monotonic()
        logout = await gateway.post("/api/v1/auth/logout", json={"refresh_token": alice_phone["refresh_token"]})
        assert logout.status_code == 204
        demoted = await gateway.put(
            f"/api/v1/users/{users[ACCOUNTS['chef'][0]]}", json={"name": "Chef", "role": "customer"}, headers=admin
        )
        assert demoted.status_code == 200, demoted.text
        deleted = await gateway.delete(f"/api/v1/users/{users[ACCOUNTS['bob'][0]]}", headers=admin)
        assert deleted.status_code == 204

        for who, tokens in (("alice", alice_phone), ("alice", alice_laptop), ("bob", bob), ("chef", chef)):
            await eventually(
                lambda w=who, t=tokens: refused_everywhere(system, gateway, w, t), f"{who} refused", 15.0, every=0.1
            )
        assert time.monotonic() - started < 15

        # Alice's other sign-in carries on with a new token; the chef's has the new role.
        laptop = (
            await gateway.post("/api/v1/auth/refresh", json={"refresh_token": alice_laptop["refresh_token"]})
        ).json()
        assert (await gateway.get("/api/v1/orders", headers=bearer(laptop))).status_code == 200
        cook = (await gateway.post("/api/v1/auth/refresh", json={"refresh_token": chef["refresh_token"]})).json()
        assert (await gateway.get("/api/v1/kitchen/tickets", headers=bearer(cook))).status_code == 403
        assert (await gateway.get("/api/v1/orders", headers=bearer(cook))).status_code == 200
        gone = await gateway.post("/api/v1/auth/refresh", json={"refresh_token": bob["refresh_token"]})
        assert gone.status_code == 401
        assert (await gateway.get("/api/v1/users?limit=1", headers=admin)).status_code == 200
