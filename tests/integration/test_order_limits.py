"""What one customer may order, at the orders service on SQLite and PostgreSQL (fed a menu by a
running catalog; nothing pays its orders, so each stays unpaid): an order over the pizzas per
line or per order is a 422 problem naming the lines, and a customer with ORDER_MAX_UNPAID orders
waiting for payment gets a 409 problem for the next one, however many they send at once, while
a retry of an order placed before is still answered and other customers still order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.services import embedded_settings, running
from tests.integration.test_service_api import assert_problem
from tests.support.polling import eventually
from tests.support.postgres import create_database, drop_database
from tests.support.tokens import bearer

MAX_UNPAID = 3


@pytest.fixture(params=["sqlite", "postgres"])
async def orders(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, list[dict[str, Any]]]]:
    """Orders with the default size limits and MAX_UNPAID, and the menu it knows."""
    monkeypatch.setenv("ORDER_MAX_UNPAID", str(MAX_UNPAID))
    url = None
    if request.param == "postgres":
        url = await create_database("pz_orders")
        monkeypatch.setenv("ORDERS_DATABASE_URL", url)
    settings = embedded_settings(tmp_path)
    try:
        async with (
            running("catalog", settings) as (_, catalog),
            running("orders", settings) as (_, client),
        ):
            menu = (await catalog.get("/api/v1/menu")).json()["items"]

            async def warmed_up() -> bool:
                return (await place(client, "warmup", order_of(menu, 1))).status_code == 202

            await eventually(warmed_up, "orders never learned the menu", 30)
            yield client, menu
    finally:
        if url is not None:
            await drop_database(url)


def order_of(menu: list[dict[str, Any]], *quantities: int) -> dict[str, Any]:
    return {
        "items": [
            {"menu_item_id": menu[n % len(menu)]["id"], "size": "medium", "quantity": q}
            for n, q in enumerate(quantities)
        ],
        "delivery_address": "1 Main St",
        "payment": {"token": "tok_visa"},
    }


async def place(client: httpx.AsyncClient, customer: str, body: dict[str, Any], key: str = "") -> httpx.Response:
    headers = {**bearer(customer), "Idempotency-Key": key or str(uuid.uuid4())}
    return await client.post("/api/v1/orders", json=body, headers=headers)


async def test_an_order_over_the_pizzas_per_line_or_per_order_is_refused(
    orders: tuple[httpx.AsyncClient, list[dict[str, Any]]],
) -> None:
    client, menu = orders
    # One unpaid 300-pizza order used to reserve all the dough.
    huge = assert_problem(await place(client, "mallory", order_of(menu, *[50] * 6)), 422)
    assert {e["field"] for e in huge["errors"]} == {"items", *(f"items.{n}.quantity" for n in range(6))}
    line = assert_problem(await place(client, "mallory", order_of(menu, 21)), 422)
    assert [e["field"] for e in line["errors"]] == ["items.0.quantity"]
    assert "1..20" in line["detail"]
    total = assert_problem(await place(client, "mallory", order_of(menu, 20, 11)), 422)
    assert [e["field"] for e in total["errors"]] == ["items"]
    assert "at most 30 pizzas" in total["detail"]
    assert (await place(client, "mallory", order_of(menu, 20, 10))).status_code == 202


async def test_a_customer_waits_for_payment_on_a_few_orders_at_most(
    orders: tuple[httpx.AsyncClient, list[dict[str, Any]]],
) -> None:
    client, menu = orders
    first = await place(client, "mallory", order_of(menu, 1), key="first")
    assert first.status_code == 202
    for _ in range(MAX_UNPAID - 1):
        assert (await place(client, "mallory", order_of(menu, 1))).status_code == 202
    refused = assert_problem(await place(client, "mallory", order_of(menu, 1)), 409, "too-many-unpaid-orders")
    assert f"{MAX_UNPAID} of your orders are waiting for payment" in refused["detail"]

    # A retry of an order placed before is the same order, not a new one.
    again = await place(client, "mallory", order_of(menu, 1), key="first")
    assert (again.status_code, again.json()["id"]) == (202, first.json()["id"])
    assert again.headers["idempotent-replayed"] == "true"
    assert (await place(client, "alice", order_of(menu, 2))).status_code == 202


async def test_orders_sent_at_once_cannot_slip_past_the_unpaid_limit(
    orders: tuple[httpx.AsyncClient, list[dict[str, Any]]],
) -> None:
    client, menu = orders
    answers = await asyncio.gather(*(place(client, "mallory", order_of(menu, 1)) for _ in range(12)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202] * MAX_UNPAID + [409] * (12 - MAX_UNPAID), [a.text for a in answers]
