"""The order read model is rebuilt from the events into a new generation while the current one
keeps answering; reads switch over once the new one has caught up, and nothing changes for
the reader, with one orders process or with replicas of it."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.services.orders import projection
from tests.integration.services import embedded_settings, running
from tests.support.polling import eventually
from tests.support.tokens import bearer

REDIS_URL = "redis://127.0.0.1:6379/15"


async def place_orders(catalog: httpx.AsyncClient, orders: httpx.AsyncClient, count: int) -> list[str]:
    item = (await catalog.get("/api/v1/menu")).json()["items"][0]
    body = {
        "items": [{"menu_item_id": item["id"], "size": "medium", "quantity": 1}],
        "delivery_address": "1 Main St",
        "payment": {"token": "tok_visa"},
    }
    placed: list[str] = []
    deadline = time.monotonic() + 30
    while len(placed) < count:
        response = await orders.post("/api/v1/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
        if response.status_code == 202:
            placed.append(response.json()["id"])
        else:  # the menu copy is still on its way
            assert time.monotonic() < deadline, response.text
            await asyncio.sleep(0.05)
    await orders.post(f"/api/v1/orders/{placed[0]}/cancel")  # a fact of another kind in the history
    return placed


async def listing(orders: httpx.AsyncClient) -> dict[str, Any]:
    page = (await orders.get("/api/v1/orders", params={"limit": 100})).json()
    return {o["id"]: o for o in page["items"]}


async def caught_up(orders: httpx.AsyncClient, placed: list[str]) -> dict[str, Any]:
    async def views() -> dict[str, Any] | None:
        found = await listing(orders)
        return found if len(found) >= len(placed) and found[placed[0]]["cancel_requested"] else None

    seen: dict[str, Any] = await eventually(views, "the read model never caught up", 30)
    return seen


async def test_rebuild_switches_generations_without_a_gap_for_readers(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    async with (
        running("catalog", settings, headers=bearer("chef", "staff")) as (_, catalog),
        running("orders", settings, headers=bearer("ann")) as (app, orders),
    ):
        runtime: ServiceRuntime = app.state.runtime
        placed = await place_orders(catalog, orders, 12)
        before = await caught_up(orders, placed)

        async with runtime.db.transaction() as conn:
            assert await projection.request_rebuild(conn) == 2
        async with runtime.db.transaction() as conn:
            assert await projection.request_rebuild(conn) is None, "one rebuild at a time"

        deadline = time.monotonic() + 60
        while True:  # readers see every order at every moment of the rebuild
            assert await listing(orders) == before
            async with runtime.db.read() as conn:
                state = await projection.status(conn)
            if state["active_generation"] == 2 and 1 not in state["rows"]:
                break
            assert time.monotonic() < deadline, f"the rebuild never switched over: {state}"
            await asyncio.sleep(0.05)
        assert state["building_generation"] is None
        assert state["rows"][2] >= len(placed)
        after = await listing(orders)
        assert after == before, "the rebuilt views say exactly what the old ones did"


async def test_with_two_replicas_the_rebuild_switches_once_and_both_follow(
    tmp_path: Path, pg_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two orders replicas share the database and each rebuilding group's partitions: the switch
    waits for the whole group (not one replica's share), happens once, and the other replica
    takes the generation it was building as its own; readers of either never miss an order."""
    monkeypatch.setenv("ORDERS_DATABASE_URL", pg_url)
    monkeypatch.setattr(projection, "DROP_AFTER_S", 1.0)
    settings = embedded_settings(tmp_path, REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=f"pz-test-{unique}")
    async with (
        running("catalog", settings, headers=bearer("chef", "staff")) as (_, catalog),
        running("orders", settings, headers=bearer("ann")) as (first_app, first),
        running("orders", settings, headers=bearer("ann")) as (second_app, second),
    ):
        runtime: ServiceRuntime = first_app.state.runtime
        placed = await place_orders(catalog, first, 12)
        before = await caught_up(first, placed)
        assert await caught_up(second, placed) == before

        async with runtime.db.transaction() as conn:
            assert await projection.request_rebuild(conn) == 2
        managers = [app.state.parts.projections for app in (first_app, second_app)]
        deadline = time.monotonic() + 60
        while True:
            assert await listing(first) == before
            assert await listing(second) == before
            async with runtime.db.read() as conn:
                state = await projection.status(conn)
            followed = all(m.active and m.active[0] == 2 and m.building is None for m in managers)
            if state["active_generation"] == 2 and 1 not in state["rows"] and followed:
                break
            assert time.monotonic() < deadline, f"the replicas never both switched: {state}"
            await asyncio.sleep(0.05)
        for app in (first_app, second_app):
            # One projector left in each replica (the rebuilt generation's), none of the old one.
            launched = [runner.group for runner in app.state.runtime._dynamic]
            assert launched == [f"{projection.BASE_GROUP}-g2"]
        assert await listing(second) == before
