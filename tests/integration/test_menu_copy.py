"""Orders prices from its own copy of the menu, kept from catalog events: a price change or a
removal in catalog reaches orders without any call between them."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.integration.services import embedded_settings, running
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


async def eventually(check: Any, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response: httpx.Response = await check()
        if response.status_code == 202 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


async def test_price_changes_and_removals_reach_orders_through_events(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    async with (
        running("catalog", settings, headers=bearer("chef", "staff")) as (_, catalog),
        running("orders", settings, headers=bearer("ann")) as (_, orders),
    ):
        body = {"name": "Calzone", "sizes": [{"size": "medium", "price": 1200}]}
        item = (await catalog.post("/api/v1/menu", json=body)).json()

        first = await eventually(lambda: place(orders, item["id"]))
        assert first.status_code == 202
        assert first.json()["total"] == 2400

        await catalog.put(f"/api/v1/menu/{item['id']}", json={**body, "sizes": [{"size": "medium", "price": 1500}]})
        deadline = time.monotonic() + 30
        while True:  # orders sees the new price once it has consumed MenuItemUpdated
            response = await place(orders, item["id"])
            if response.json()["total"] == 3000 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert response.json()["total"] == 3000
        assert response.json()["items"][0]["unit_price"] == 1500
        assert (await orders.get(f"/api/v1/orders/{first.json()['id']}")).json()["total"] == 2400, (
            "placed orders keep the price they were placed at"
        )

        await catalog.delete(f"/api/v1/menu/{item['id']}")
        deadline = time.monotonic() + 30
        while True:
            refused = await place(orders, item["id"])
            if refused.status_code == 422 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert refused.status_code == 422
        assert "not available" in refused.json()["detail"]
