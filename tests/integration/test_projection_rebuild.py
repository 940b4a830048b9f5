"""The order read model is rebuilt from the events into a new generation while the current one
keeps answering; reads switch over once the new one has caught up, and nothing changes for
the reader."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.services.orders import projection
from tests.integration.services import embedded_settings, running
from tests.support.tokens import bearer


async def test_rebuild_switches_generations_without_a_gap_for_readers(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    async with (
        running("catalog", settings, headers=bearer("chef", "staff")) as (_, catalog),
        running("orders", settings, headers=bearer("ann")) as (app, orders),
    ):
        runtime: ServiceRuntime = app.state.runtime
        item = (await catalog.get("/api/v1/menu")).json()["items"][0]
        body = {
            "items": [{"menu_item_id": item["id"], "size": "medium", "quantity": 1}],
            "delivery_address": "1 Main St",
            "payment": {"token": "tok_visa"},
        }
        placed: list[str] = []
        deadline = time.monotonic() + 30
        while len(placed) < 12:
            response = await orders.post("/api/v1/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
            if response.status_code == 202:
                placed.append(response.json()["id"])
            else:  # the menu copy is still on its way
                assert time.monotonic() < deadline, response.text
                await asyncio.sleep(0.05)
        await orders.post(f"/api/v1/orders/{placed[0]}/cancel")  # a fact of another kind in the history

        async def listing() -> dict[str, Any]:
            page = (await orders.get("/api/v1/orders", params={"limit": 100})).json()
            return {o["id"]: o for o in page["items"]}

        deadline = time.monotonic() + 30
        while len(before := await listing()) < len(placed) or not before[placed[0]]["cancel_requested"]:
            assert time.monotonic() < deadline, "the read model never caught up"
            await asyncio.sleep(0.05)

        async with runtime.db.transaction() as conn:
            assert await projection.request_rebuild(conn) == 2
        async with runtime.db.transaction() as conn:
            assert await projection.request_rebuild(conn) is None, "one rebuild at a time"

        deadline = time.monotonic() + 60
        while True:  # readers see every order at every moment of the rebuild
            assert await listing() == before
            async with runtime.db.read() as conn:
                state = await projection.status(conn)
            if state["active_generation"] == 2 and 1 not in state["rows"]:
                break
            assert time.monotonic() < deadline, f"the rebuild never switched over: {state}"
            await asyncio.sleep(0.05)
        assert state["building_generation"] is None
        assert state["rows"][2] >= len(placed)
        after = await listing()
        assert after == before, "the rebuilt views say exactly what the old ones did"
