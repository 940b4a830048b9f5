"""The checker's client of a running system's gateway, against a gateway faked with
httpx.MockTransport: customers registered and signed in through the API and signed in again once
their token is half way to expiry; an order asked again with the same Idempotency-Key after a 429
or a 503; a refusal reported as one; a system nobody can sign in to is unusable."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import pytest

from pizzeria.chaos.checker import DEADLINE_PASSED, PROVIDER_UNREACHABLE
from pizzeria.chaos.gateway import GatewayShop, Unusable
from pizzeria.chaos.load import Refused
from pizzeria.chaos.run import CheckedLoad


class Gateway:
    def __init__(self, *, expires_in: int = 900, admin_ok: bool = True) -> None:
        self.expires_in = expires_in
        self.admin_ok = admin_ok
        self.calls: Counter[str] = Counter()
        self.order_answers: list[httpx.Response] = []
        self.keys: list[str] = []
        self.tokens_seen: list[str] = []
        self.busy = 0  # sign-ups and sign-ins answered 429 before they are taken
        self.lose_sign_up = False  # the first sign-up is taken, and its answer lost (a 502)
        self.accounts: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls[f"{request.method} {path}"] += 1
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        if path in ("/api/v1/auth/register", "/api/v1/auth/login") and self.busy:
            self.busy -= 1
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "slow down"})
        if path == "/api/v1/auth/register":
            if body["email"] in self.accounts:
                return httpx.Response(409, json={"detail": "that email is taken"})
            self.accounts.add(body["email"])
            if self.lose_sign_up:
                self.lose_sign_up = False
                return httpx.Response(502, json={"detail": "identity did not answer"})
            return httpx.Response(201, json={"id": f"user-{body['email']}"})
        if path == "/api/v1/users/me":
            n = self.calls["POST /api/v1/auth/login"]
            return httpx.Response(200, json={"id": f"user-of-token-t{n}"})
        if path == "/api/v1/auth/login":
            if body["email"].startswith("admin") and not self.admin_ok:
                return httpx.Response(401, json={"detail": "wrong email or password"})
            n = self.calls["POST /api/v1/auth/login"]
            return httpx.Response(200, json={"access_token": f"t{n}", "expires_in": self.expires_in})
        if path == "/api/v1/menu":
            return httpx.Response(200, json={"items": [{"id": "m", "sizes": [{"size": "m"}]}]})
        if path == "/api/v1/orders" and request.method == "POST":
            self.keys.append(request.headers["idempotency-key"])
            self.tokens_seen.append(request.headers["authorization"])
            return self.order_answers.pop(0)
        return httpx.Response(404, json={"detail": "not here"})


def shop_at(gateway: Gateway) -> GatewayShop:
    return GatewayShop("http://gateway.test", transport=httpx.MockTransport(gateway))


async def test_an_order_is_asked_again_with_the_same_key_until_it_is_accepted() -> None:
    gateway = Gateway()
    gateway.order_answers = [
        httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "slow down"}),
        httpx.Response(503, json={"detail": "orders cannot be reached"}),
        httpx.Response(202, json={"id": "o-1"}),
    ]
    shop = shop_at(gateway)
    customer = await shop.customer("c1")
    assert customer == "user-check-" + shop.run + "-c1@pizzeria.example"
    answers: list[str] = []
    order = await shop.place({"items": []}, customer=customer, key="k-1", answers=answers)
    assert order == {"id": "o-1"}
    assert answers == ["429", "503", "202"]
    assert gateway.keys == ["k-1", "k-1", "k-1"]
    assert await shop.customer("c1") == customer
    assert gateway.calls["POST /api/v1/auth/register"] == 1  # once per customer
    await shop.close()


async def test_a_refused_order_is_refused_at_once() -> None:
    gateway = Gateway()
    gateway.order_answers = [httpx.Response(409, json={"detail": "too many unpaid orders"})]
    shop = shop_at(gateway)
    customer = await shop.customer("c1")
    answers: list[str] = []
    with pytest.raises(Refused, match="too many unpaid orders"):
        await shop.place({"items": []}, customer=customer, answers=answers)
    assert answers == ["409"]
    await shop.close()


async def test_a_customer_signs_in_again_once_their_token_is_half_way_to_expiry() -> None:
    gateway = Gateway(expires_in=0)  # every token is past half its life at once
    gateway.order_answers = [httpx.Response(202, json={"id": "o-1"}), httpx.Response(202, json={"id": "o-2"})]
    shop = shop_at(gateway)
    customer = await shop.customer("c1")
    await shop.place({"items": []}, customer=customer)
    await shop.place({"items": []}, customer=customer)
    assert gateway.calls["POST /api/v1/auth/login"] == 3  # signed up, then before each order
    assert len(set(gateway.tokens_seen)) == 2
    await shop.close()


async def test_a_system_nobody_can_sign_in_to_is_unusable() -> None:
    shop = shop_at(Gateway(admin_ok=False))
    with pytest.raises(Unusable, match="embedded mode only"):
        await shop.open()
    await shop.close()


def test_the_switches_turned_during_a_run_explain_and_excuse_what_they_cause() -> None:
    run = CheckedLoad(shop_at(Gateway()), rate=2)
    run.fault("consumer:delivery", True)
    run.fault("provider", True)
    run.fault("broker", True)
    run.fault("broker", False)
    run.fault("kill:kitchen", True)
    assert run.history.failing_groups == {"delivery"}
    assert [(e.fault, e.endings) for e in run.history.excuses] == [("broker", DEADLINE_PASSED)]
    run.fault("provider", False)
    assert [(e.fault, e.endings) for e in run.history.excuses][-1] == ("provider", PROVIDER_UNREACHABLE)
    assert len(run.faults) == 6


async def test_a_customer_is_signed_up_even_when_sign_ups_are_rate_limited() -> None:
    """A load's first customers are signed up all at once: a 429 is waited out, not taken for
    a customer who cannot be signed up (an order the load would silently not place)."""
    gateway = Gateway()
    shop = shop_at(gateway)
    gateway.busy = 3
    assert await shop.customer("chaos-1") == "user-check-" + shop.run + "-chaos-1@pizzeria.example"
    assert gateway.calls["POST /api/v1/auth/register"] + gateway.calls["POST /api/v1/auth/login"] == 5
    await shop.close()


async def test_a_sign_up_whose_answer_was_lost_is_signed_in_to() -> None:
    """Identity took the sign-up but its answer was lost (a 502): asked again, the email is
    taken (409), and the load signs in with the same credentials rather than losing the
    customer for the whole run."""
    gateway = Gateway()
    gateway.lose_sign_up = True
    shop = shop_at(gateway)
    customer = await shop.customer("chaos-2")
    assert customer.startswith("user-of-token-")
    assert gateway.calls["POST /api/v1/auth/register"] == 2
    await shop.close()
