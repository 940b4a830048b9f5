"""Bad input to the order flow, through the gateway of the running system, beyond what
test_attacks.py sends (malformed headers, oversized bodies and headers, coerced numbers, NUL):
bodies that are not JSON or not an object, every field of the wrong type, nesting thousands deep,
text with a lone surrogate, right-to-left overrides or 100 000 characters, quantities below one
and past any integer, items and sizes not on the menu, unknown fields, and an Idempotency-Key
replayed with another body and by another customer. Each is refused with a 4xx
application/problem+json saying why, never a 5xx; nothing refused leaves an order behind (the
customers' orders are exactly those answered 202); and the next good order is delivered."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.e2e.conftest import serving
from tests.e2e.scenario import MANY_ORDERS, TERMINAL, holds_within
from tests.e2e.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

PROBLEM = "application/problem+json"
ALICE = ("alice@pizzeria.example", "alice-pizza-1")
BOB = ("bob@pizzeria.example", "bob-pizza-12")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    env = {**MANY_ORDERS, "RATE_LIMIT_PER_IP": "1000000", "RATE_LIMIT_PER_USER": "1000000"}
    async with serving(Path(tmp_path_factory.mktemp("bad-input")), env) as running:
        yield running


async def sign_in(gateway: httpx.AsyncClient, account: tuple[str, str]) -> dict[str, str]:
    response = await gateway.post("/api/v1/auth/login", json={"email": account[0], "password": account[1]})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def refused(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A 4xx problem (one of `statuses`) that says what is wrong."""
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith(PROBLEM), response.headers["content-type"]
    problem: dict[str, Any] = response.json()
    assert problem["status"] == response.status_code, problem
    assert problem["type"], problem
    assert problem["detail"], problem
    return problem


def fields(problem: dict[str, Any]) -> set[str]:
    return {e["field"] for e in problem.get("errors", [])}


def nested(depth: int) -> bytes:
    return b'{"items": ' + b"[" * depth + b"]" * depth + b', "delivery_address": "1 Main St"}'


async def all_orders(gateway: httpx.AsyncClient, who: dict[str, str]) -> set[str]:
    found: set[str] = set()
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = (await gateway.get("/api/v1/orders", params=params, headers=who)).json()
        found |= {o["id"] for o in page["items"]}
        if not page["next_cursor"]:
            return found
        params["cursor"] = page["next_cursor"]


async def test_bad_orders_are_refused_with_a_reason_and_leave_nothing_behind(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.url("gateway"), timeout=60) as gateway:
        alice, bob = await sign_in(gateway, ALICE), await sign_in(gateway, BOB)
        menu = (await gateway.get("/api/v1/menu")).json()["items"]
        item = menu[0]
        size = item["sizes"][0]["size"]
        line = {"menu_item_id": item["id"], "size": size, "quantity": 1}
        good = {"items": [line], "delivery_address": "1 Main St", "payment": {"token": "tok_visa"}}
        accepted: dict[str, set[str]] = {"alice": set(), "bob": set()}
        before = {"alice": await all_orders(gateway, alice), "bob": await all_orders(gateway, bob)}

        async def send(body: Any = None, *, raw: bytes | None = None, who: dict[str, str] = alice) -> httpx.Response:
            headers = {**who, "Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"}
            if raw is None:
                return await gateway.post("/api/v1/orders", json=body, headers=headers)
            return await gateway.post("/api/v1/orders", content=raw, headers=headers)

        # Not JSON, or JSON that is not an order.
        for raw in (b'{"items": [', b"\xff\xfe{}", b"", b"null", b"[]", b'"an order"', b"1e999999", b"{}{}"):
            refused(await send(raw=raw), 400, 422)
        # Nesting far deeper than any order: refused, not a recursion error.
        for depth in (1_000, 100_000):
            refused(await send(raw=nested(depth)), 400, 413, 422)

        # Every field of the wrong type.
        wrong: list[tuple[dict[str, Any], str]] = [
            ({**good, "items": {"0": line}}, "items"),
            ({**good, "items": "pepperoni"}, "items"),
            ({**good, "items": [[line]]}, "items.0"),
            ({**good, "items": [{**line, "quantity": [1]}]}, "items.0.quantity"),
            ({**good, "items": [{**line, "quantity": 1.5}]}, "items.0.quantity"),
            ({**good, "items": [{**line, "menu_item_id": 42}]}, "items.0.menu_item_id"),
            ({**good, "items": [{**line, "size": {"name": size}}]}, "items.0.size"),
            ({**good, "delivery_address": 12}, "delivery_address"),
            ({**good, "delivery_address": None}, "delivery_address"),
            ({**good, "payment": "tok_visa"}, "payment"),
            ({**good, "payment": {"token": ["tok_visa"]}}, "payment.token"),
            ({**good, "contact": {"email": True}}, "contact.email"),
            ({**good, "coupon": "FREEPIZZA"}, "coupon"),
            ({**good, "items": [{**line, "unit_price": 0}]}, "items.0.unit_price"),
        ]
        for body, field in wrong:
            problem = refused(await send(body), 422)
            assert any(f == field or f.startswith(f"{field}.") for f in fields(problem)), (field, problem)

        # Text no order takes: a lone surrogate (not even Unicode), a very long address; and
        # text an address may hold (right-to-left marks and overrides, any script) is kept as
        # it was sent.
        lone = (
            b'{"items": [{"menu_item_id": "%s", "size": "%s", "quantity": 1}],'
            b' "delivery_address": "\\ud800 Main St", "payment": {"token": "tok_visa"}}'
        )
        refused(await send(raw=lone % (item["id"].encode(), size.encode())), 400, 422)
        lone_size = lone.replace(b"\\ud800 Main St", b"1 Main St").replace(b'"size": "%s"', b'"size": "\\udfff"')
        refused(await send(raw=lone_size % item["id"].encode()), 400, 422)
        assert "delivery_address" in fields(refused(await send({**good, "delivery_address": "x" * 100_000}), 422))
        assert "items.0.size" in fields(refused(await send({**good, "items": [{**line, "size": "s" * 100_000}]}), 422))
        rtl = "\u202e\u0634\u0627\u0631\u0639 1\u202c \u2067Main\u2069 St \U0001f355"
        kept = await send({**good, "delivery_address": rtl})
        assert kept.status_code == 202, kept.text
        assert kept.json()["delivery_address"] == rtl
        accepted["alice"].add(kept.json()["id"])

        # Quantities below one and past any integer; too many lines.
        for quantity in (0, -1, -(2**63), 2**63, 10**30, 21):
            problem = refused(await send({**good, "items": [{**line, "quantity": quantity}]}), 422)
            assert "items.0.quantity" in fields(problem), problem
        problem = refused(await send({**good, "items": [line] * 1000}), 422)
        assert "items" in fields(problem), problem

        # Items and sizes not on the menu.
        problem = refused(await send({**good, "items": [{**line, "menu_item_id": str(uuid.uuid4())}]}), 422)
        assert "no menu item" in problem["errors"][0]["message"], problem
        problem = refused(await send({**good, "items": [{**line, "size": "gigantic"}]}), 422)
        assert "not 'gigantic'" in problem["errors"][0]["message"], problem

        # An Idempotency-Key replayed with another body is refused; by another customer it is
        # theirs alone (a new order, never the first customer's).
        key = str(uuid.uuid4())
        first = await gateway.post("/api/v1/orders", json=good, headers={**alice, "Idempotency-Key": key})
        assert first.status_code == 202, first.text
        accepted["alice"].add(first.json()["id"])
        other = {**good, "items": [{**line, "quantity": 2}]}
        problem = refused(
            await gateway.post("/api/v1/orders", json=other, headers={**alice, "Idempotency-Key": key}), 422
        )
        assert problem["type"].endswith("/idempotency-key-reused"), problem
        again = await gateway.post("/api/v1/orders", json=good, headers={**alice, "Idempotency-Key": key})
        assert (again.status_code, again.json()["id"]) == (202, first.json()["id"])
        for body in (good, other):
            theirs = await gateway.post("/api/v1/orders", json=body, headers={**bob, "Idempotency-Key": key})
            assert theirs.status_code in (202, 422), theirs.text
            if theirs.status_code == 202:
                assert theirs.json()["id"] != first.json()["id"], "another customer got Alice's order"
                assert theirs.json()["customer_id"] != first.json()["customer_id"]
                accepted["bob"].add(theirs.json()["id"])
            else:
                refused(theirs, 422)
        missing_key = await gateway.post("/api/v1/orders", json=good, headers=alice)
        refused(missing_key, 400)

        # Nothing refused left an order behind: each customer has exactly the orders answered 202
        # (once the read model has them all).
        async def only_those_accepted() -> None:
            for name, who in (("alice", alice), ("bob", bob)):
                assert await all_orders(gateway, who) - before[name] == accepted[name], name

        await holds_within(only_those_accepted, 30)

        # And the next good order goes all the way.
        placed = await send(good)
        assert placed.status_code == 202, placed.text
        deadline = time.monotonic() + 120
        while (order := (await gateway.get(f"/api/v1/orders/{placed.json()['id']}", headers=alice)).json())[
            "status"
        ] not in TERMINAL:
            assert time.monotonic() < deadline, f"the order after the bad ones never ended: {order['status']}"
            await asyncio.sleep(0.2)
        assert order["status"] == "delivered", order
