"""Orders prices from its own copy of the menu, kept from catalog events: a price change or a
removal in catalog reaches orders without any call between them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.integration.services import embedded_settings, running
from tests.support.polling import eventually
from tests.support.tokens import bearer


async def place(orders: httpx.AsyncClient, item_id: str, size: str = "medium") -> httpx.Response:
    return await orders.post(
        "/api/v1/orders",
        headers={"Idempotency-Key": str(uuid.uuid4())},
        json={
            "items": [{"menu_item_id": item_id, "size": size, "quantity": 2}],
            "delivery_address": "1 Main St",
            "payment": {"token": "tok_visa"},
        },
    )


async def placed_when(orders: httpx.AsyncClient, item_id: str, holds: Any, what: str) -> httpx.Response:
    """Place an order again and again until its answer `holds`; that answer."""

    async def attempt() -> httpx.Response | None:
        response = await place(orders, item_id)
        return response if holds(response) else None

    found: httpx.Response = await eventually(attempt, what)
    return found


async def test_price_changes_and_removals_reach_orders_through_events(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    async with (
        running("catalog", settings, headers=bearer("chef", "staff")) as (_, catalog),
        running("orders", settings, headers=bearer("ann")) as (_, orders),
    ):
        body = {"name": "Calzone", "sizes": [{"size": "medium", "price": 1200}]}
        item = (await catalog.post("/api/v1/menu", json=body)).json()

        first = await placed_when(orders, item["id"], lambda r: r.status_code == 202, "the item known to orders")
        assert first.json()["total"] == 2400

        await catalog.put(f"/api/v1/menu/{item['id']}", json={**body, "sizes": [{"size": "medium", "price": 1500}]})
        # orders sees the new price once it has consumed MenuItemUpdated
        response = await placed_when(orders, item["id"], lambda r: r.json().get("total") == 3000, "the new price")
        assert response.json()["items"][0]["unit_price"] == 1500
        assert (await orders.get(f"/api/v1/orders/{first.json()['id']}")).json()["total"] == 2400, (
            "placed orders keep the price they were placed at"
        )

        await catalog.delete(f"/api/v1/menu/{item['id']}")
        refused = await placed_when(orders, item["id"], lambda r: r.status_code == 422, "the item's removal")
        assert "not available" in refused.json()["detail"]
