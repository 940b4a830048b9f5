"""The tests' shop asks with access tokens that have not expired, however long it is used (a
soak outlives a token: every request of its load was refused with 401 after 15 minutes)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e import system as system_module
from tests.e2e.system import Shop, System


async def test_tokens_are_renewed_half_way_to_their_expiry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(system_module.time, "monotonic", lambda: now[0])
    shop = Shop(System(tmp_path, {"ACCESS_TOKEN_TTL_S": "60"}))
    try:
        first = shop.as_customer("c1")
        now[0] += 29.0
        assert shop.as_customer("c1") == first  # still young
        now[0] += 2.0
        renewed = shop.as_customer("c1")
        assert renewed != first
        assert shop.as_customer("c2") != renewed  # one per customer

        admin = httpx.Request("GET", "http://x/")
        await shop._as_admin(admin)
        customer = httpx.Request("GET", "http://x/", headers=renewed)
        await shop._as_admin(customer)
        assert admin.headers["authorization"].startswith("Bearer ")
        assert customer.headers["authorization"] == renewed["Authorization"]  # a customer's stays theirs
    finally:
        await shop.close()
