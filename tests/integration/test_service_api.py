"""The HTTP edge of each service: bad input gets a clear 4xx `application/problem+json`, never
a 500 and never a partial write; the common endpoints answer on every service."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.ids import uuid7
from pizzeria.services.delivery.tables import deliveries
from pizzeria.services.kitchen.tables import tickets as kitchen_tickets
from tests.integration.services import embedded_settings, running
from tests.support.polling import eventually
from tests.support.tokens import bearer

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    if slug:
        assert body["type"].endswith("/" + slug), body["type"]
    return body


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running("catalog", embedded_settings(tmp_path), headers=bearer("chef", "staff")) as (_, client):
        yield client


@pytest.fixture
async def orders(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Orders, fed by a running catalog (its menu copy comes from catalog events)."""
    settings = embedded_settings(tmp_path)
    async with (
        running("catalog", settings) as (_, catalog_client),
        running("orders", settings, headers=bearer("guest")) as (_, client),
    ):
        client.menu = (await catalog_client.get("/api/v1/menu")).json()["items"]  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until orders has its copy of the menu
            response = await client.post(
                "/api/v1/orders",
                json=valid_order(client.menu[0]),  # type: ignore[attr-defined]
                headers={"Idempotency-Key": "warmup"},
            )
            if response.status_code == 202:
                break
            await asyncio.sleep(0.05)
        yield client


def valid_order(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "items": [{"menu_item_id": item["id"], "size": "medium", "quantity": 1}],
        "delivery_address": "1 Main St",
        "payment": {"token": "tok_visa"},
    }


@pytest.mark.parametrize(
    "service",
    [
        "identity",
        "catalog",
        "orders",
        "payments",
        "notifications",
        "provider",
        "kitchen",
        "delivery",
        "devices",
        "telemetry",
    ],
)
async def test_every_service_has_health_ready_and_metrics(tmp_path: Path, service: str) -> None:
    async with running(service, embedded_settings(tmp_path)) as (_, client):
        health = await client.get("/health", headers={"X-Request-ID": "req-123"})
        assert health.status_code == 200
        assert health.json()["service"] == service
        assert health.headers["x-request-id"] == "req-123"
        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "pizzeria_http_request_duration_seconds_bucket" in metrics.text
        assert_problem(await client.get("/no/such/route"), 404)


async def test_catalog_rejects_bad_items_with_field_errors(catalog: httpx.AsyncClient) -> None:
    before = len((await catalog.get("/api/v1/menu")).json()["items"])
    cases = [
        {},
        {"name": "", "sizes": [{"size": "small", "price": 100}]},
        {"name": "X", "sizes": []},
        {"name": "X", "sizes": [{"size": "small", "price": -5}]},
        {"name": "X", "sizes": [{"size": "small", "price": 100}, {"size": "small", "price": 200}]},
        {"name": "X", "sizes": [{"size": "small", "price": 100}], "unknown": 1},
        {"name": "X", "sizes": [{"size": "small", "price": 100}], "currency": "euro"},
        {
            "name": "X",
            "sizes": [{"size": "small", "price": 100}],
            "recipe": [{"ingredient": "cheese", "quantity": 1}, {"ingredient": "cheese", "quantity": 2}],
        },
    ]
    for body in cases:
        problem = assert_problem(await catalog.post("/api/v1/menu", json=body), 422)
        assert problem["errors"], body
    broken = await catalog.post("/api/v1/menu", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(broken, 422)
    assert_problem(await catalog.get("/api/v1/menu/not-a-uuid"), 422)
    assert_problem(await catalog.get(f"/api/v1/menu/{uuid.uuid4()}"), 404, "not-found")
    assert_problem(await catalog.delete(f"/api/v1/menu/{uuid.uuid4()}"), 404)
    assert len((await catalog.get("/api/v1/menu")).json()["items"]) == before, "no partial writes"


async def test_catalog_create_update_delete(catalog: httpx.AsyncClient) -> None:
    body = {
        "name": "Calzone",
        "sizes": [{"size": "medium", "price": 1200}],
        "recipe": [{"ingredient": "dough", "quantity": 1}],
    }
    created = await catalog.post("/api/v1/menu", json=body)
    assert created.status_code == 201
    item = created.json()
    assert created.headers["location"] == f"/api/v1/menu/{item['id']}"
    assert item["version"] == 1
    updated = await catalog.put(f"/api/v1/menu/{item['id']}", json={**body, "name": "Calzone Grande"})
    assert updated.json()["version"] == 2
    assert (await catalog.get(f"/api/v1/menu/{item['id']}")).json()["name"] == "Calzone Grande"
    assert (await catalog.delete(f"/api/v1/menu/{item['id']}")).status_code == 204
    assert_problem(await catalog.get(f"/api/v1/menu/{item['id']}"), 404)
    assert item["id"] not in {i["id"] for i in (await catalog.get("/api/v1/menu")).json()["items"]}


async def test_orders_refuses_bad_orders_clearly(orders: httpx.AsyncClient) -> None:
    item = orders.menu[0]  # type: ignore[attr-defined]
    good = valid_order(item)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    assert_problem(await orders.post("/api/v1/orders", json=good), 400, "idempotency-key-missing")
    bad_bodies = [
        {**good, "items": []},
        {**good, "items": [{"menu_item_id": item["id"], "size": "medium", "quantity": 0}]},
        {**good, "items": [{"menu_item_id": "nope", "size": "medium", "quantity": 1}]},
        {**good, "payment": {"token": "visa"}},
        {**good, "delivery_address": ""},
        {**good, "contact": {"email": "not-an-email"}},
        {**good, "extra": True},
    ]
    for body in bad_bodies:
        assert_problem(await orders.post("/api/v1/orders", json=body, headers=key), 422)
    unknown = {**good, "items": [{"menu_item_id": str(uuid.uuid4()), "size": "medium", "quantity": 1}]}
    problem = assert_problem(await orders.post("/api/v1/orders", json=unknown, headers=key), 422, "validation-failed")
    assert problem["errors"][0]["field"] == "items.0.menu_item_id"
    wrong_size = {**good, "items": [{"menu_item_id": item["id"], "size": "gigantic", "quantity": 1}]}
    problem = assert_problem(await orders.post("/api/v1/orders", json=wrong_size, headers=key), 422)
    assert "gigantic" in problem["detail"]
    assert_problem(await orders.get(f"/api/v1/orders/{uuid.uuid4()}"), 404)
    assert_problem(await orders.get("/api/v1/orders", params={"cursor": "%%%"}), 400, "bad-cursor")
    assert_problem(await orders.get("/api/v1/orders", params={"status": "teleported"}), 422)
    assert_problem(await orders.get("/api/v1/orders", params={"limit": 0}), 422)

    # The list comes from the read model, which follows the orders a moment later.
    async def listed_orders() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await orders.get("/api/v1/orders")).json()["items"]
        return found

    listed = await eventually(listed_orders, "the warm-up order never reached the read model", 30)
    assert len(listed) == 1, "only the warm-up order exists: nothing bad was written"
    # The key was never used by a refused request: it still places the order.
    placed = await orders.post("/api/v1/orders", json=good, headers=key)
    assert placed.status_code == 202


async def test_orders_pages_through_orders_newest_first(orders: httpx.AsyncClient) -> None:
    body = valid_order(orders.menu[0])  # type: ignore[attr-defined]
    ids = []
    for _ in range(5):
        response = await orders.post(
            "/api/v1/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4()), **bearer("pager")}
        )
        ids.append(response.json()["id"])

    async def all_listed() -> bool:
        page = (await orders.get("/api/v1/orders", params={"limit": 10}, headers=bearer("pager"))).json()
        return len(page["items"]) >= 5

    await eventually(all_listed, "orders never reached the read model", 30)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await orders.get("/api/v1/orders", params=params, headers=bearer("pager"))).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_payments_and_notifications_refuse_bad_queries(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    admin = bearer("auditor", "admin")
    async with (
        running("payments", settings, headers=admin) as (_, payments),
        running("notifications", settings, headers=admin) as (_, notes),
    ):
        assert_problem(await payments.get("/api/v1/payments", params={"limit": 0}), 422)
        assert_problem(await payments.get("/api/v1/payments", params={"order_id": "x"}), 422)
        assert_problem(await payments.get(f"/api/v1/payments/{uuid.uuid4()}"), 404)
        assert (await payments.get("/api/v1/payments", params={"order_id": str(uuid.uuid4())})).json() == {"items": []}
        assert_problem(await notes.get("/api/v1/notifications", params={"limit": 1000}), 422)
        assert_problem(await notes.get("/api/v1/notifications", params={"order_id": "x"}), 422)


@pytest.mark.parametrize(
    ("service", "path", "status"),
    [("kitchen", "/api/v1/kitchen/tickets", "queued"), ("delivery", "/api/v1/deliveries", "waiting")],
)
async def test_staff_lists_page_through_everything_oldest_first(
    tmp_path: Path, service: str, path: str, status: str
) -> None:
    """The kitchen's tickets and the couriers' deliveries, more of them than one page holds:
    every one comes once, oldest first, and the last page says there is no next."""
    settings = embedded_settings(tmp_path)
    async with running(service, settings, headers=bearer("chef", "staff")) as (_, client):
        database = Database(settings.database_url_for(service))
        now = utcnow()
        ids = [uuid7() for _ in range(7)]
        rows = [
            {"id": i, "order_id": uuid7(), "status": status, "created_at": now, "updated_at": now}
            | ({"lines": []} if service == "kitchen" else {"customer_id": "c", "address": "1 Main St"})
            for i in ids
        ]
        async with database.transaction() as conn:
            await conn.execute((kitchen_tickets if service == "kitchen" else deliveries).insert(), rows)
        await database.dispose()
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            page = (await client.get(path, params={"limit": 3, **({"cursor": cursor} if cursor else {})})).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [str(i) for i in ids]
        bad = await client.get(path, params={"cursor": "not-an-id"})
        assert_problem(bad, 422)


async def test_a_courier_takes_a_delivery_out_and_home_through_the_api(tmp_path: Path) -> None:
    """The dispatcher hands a waiting delivery to a free courier; the courier's two actions take
    it out and home (freeing the courier); a third, or one on an unknown delivery, is refused."""
    settings = embedded_settings(tmp_path)
    async with running("delivery", settings, headers=bearer("rider-1", "courier")) as (_, client):
        database = Database(settings.database_url_for("delivery"))
        now = utcnow()
        delivery_id = uuid7()
        row = {"id": delivery_id, "order_id": uuid7(), "customer_id": "c", "address": "1 Main St"}
        async with database.transaction() as conn:
            await conn.execute(deliveries.insert(), [row | {"status": "waiting", "created_at": now, "updated_at": now}])
        await database.dispose()

        async def taken() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = (await client.get("/api/v1/deliveries")).json()["items"]
            return None if found[0]["status"] == "waiting" else found

        listed = await eventually(taken, "the dispatcher gave the delivery to no courier", 30)
        courier_id = listed[0]["courier_id"]
        path = f"/api/v1/deliveries/{delivery_id}/advance"

        out = await client.post(path)
        assert out.status_code == 200, out.text
        assert (out.json()["status"], out.json()["courier_id"]) == ("out_for_delivery", courier_id)
        home = await client.post(path)
        assert home.json()["status"] == "delivered"
        carrying = {c["id"]: c["delivery_id"] for c in (await client.get("/api/v1/couriers")).json()["items"]}
        assert carrying[courier_id] is None, "the courier is free again"

        assert_problem(await client.post(path), 409, "conflict")
        assert_problem(await client.post(f"/api/v1/deliveries/{uuid7()}/advance"), 404, "not-found")
