"""Cache-aside on both stores (in-process and Redis): hits and misses counted, and a read after a
change never returns what was there before it — for the menu (changed over HTTP) and for order
views (changed by the events the read model consumes)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from prometheus_client import REGISTRY

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.cache import TOMBSTONE, Cache, InProcessCache, RedisCache
from pizzeria.services.orders import projection
from tests.integration.services import embedded_settings, running
from tests.support.polling import eventually
from tests.support.tokens import bearer

REDIS_URL = "redis://127.0.0.1:6379/15"
UNREACHABLE_URL = "redis://127.0.0.1:1/15"  # nothing listens on port 1


def looked_up(cache: str, result: str) -> float:
    return REGISTRY.get_sample_value("pizzeria_cache_requests_total", {"cache": cache, "result": result}) or 0.0


@pytest.fixture(params=["in-process", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    made: Cache = (
        InProcessCache(name, ttl_s=30, tombstone_s=0.3)
        if request.param == "in-process"
        else RedisCache(name, REDIS_URL, ttl_s=30, tombstone_s=0.3, prefix=f"pizzeria:test:{name}")
    )
    yield made
    await made.close()


async def test_a_miss_is_filled_and_then_hit(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.fill("k", b"v1")
    assert await cache.get("k") == b"v1"
    assert (looked_up(cache.name, "miss"), looked_up(cache.name, "hit")) == (1, 1)


async def test_a_fill_never_replaces_a_value_or_undoes_an_invalidation(cache: Cache) -> None:
    await cache.fill("k", b"v1")
    await cache.fill("k", b"other")
    assert await cache.get("k") == b"v1"
    # A reader loaded the old value before a change; the change invalidates; the reader's fill
    # arrives afterwards and must not bring the old value back.
    await cache.invalidate("k")
    await cache.fill("k", b"stale")
    assert await cache.get("k") is None

    async def filled_again() -> bool:  # once the tombstone is gone, reads fill the cache again
        await cache.fill("k", b"v2")
        return await cache.get("k") == b"v2"

    await eventually(filled_again, "the tombstone never went away", 10)


async def test_entries_expire() -> None:
    now = [0.0]
    cache = InProcessCache("expiry", ttl_s=30, tombstone_s=1, clock=lambda: now[0])
    await cache.fill("k", b"v")
    now[0] = 29.9
    assert await cache.get("k") == b"v"
    now[0] = 30.0
    assert await cache.get("k") is None


@pytest.fixture(params=["in-process", "redis"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "redis":  # keys of this test only: nothing cached by another run is read
        return {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": f"pz-test-{uuid.uuid4().hex}"}
    return {}


async def test_menu_reads_are_cached_and_never_stale_after_a_change(tmp_path: Path, store_env: dict[str, str]) -> None:
    settings = embedded_settings(tmp_path, **store_env)
    async with running("catalog", settings, headers=bearer("chef", "staff")) as (_, catalog):
        item = (await catalog.get("/api/v1/menu")).json()["items"][0]
        hits = looked_up("menu", "hit")
        await catalog.get(f"/api/v1/menu/{item['id']}")
        assert (await catalog.get(f"/api/v1/menu/{item['id']}")).json()["name"] == item["name"]
        assert looked_up("menu", "hit") > hits
        body = {k: item[k] for k in ("name", "description", "category", "currency", "sizes", "recipe")}

        async def keep_reading(stop: asyncio.Event) -> None:  # readers racing the writer, filling the cache
            while not stop.is_set():
                await catalog.get(f"/api/v1/menu/{item['id']}")
                await catalog.get("/api/v1/menu")

        stop = asyncio.Event()
        readers = [asyncio.create_task(keep_reading(stop)) for _ in range(3)]
        try:
            for n in range(15):
                name = f"Margherita No. {n}"
                assert (await catalog.put(f"/api/v1/menu/{item['id']}", json={**body, "name": name})).status_code == 200
                assert (await catalog.get(f"/api/v1/menu/{item['id']}")).json()["name"] == name
                listed = {i["id"]: i for i in (await catalog.get("/api/v1/menu")).json()["items"]}
                assert listed[item["id"]]["name"] == name
        finally:
            stop.set()
            await asyncio.gather(*readers)
        assert (await catalog.delete(f"/api/v1/menu/{item['id']}")).status_code == 204
        assert (await catalog.get(f"/api/v1/menu/{item['id']}")).status_code == 404
        assert item["id"] not in {i["id"] for i in (await catalog.get("/api/v1/menu")).json()["items"]}
        metrics = (await catalog.get("/metrics")).text
        assert 'pizzeria_cache_requests_total{cache="menu",result="hit"}' in metrics


async def test_order_reads_are_cached_and_follow_the_events_that_change_them(
    tmp_path: Path, store_env: dict[str, str]
) -> None:
    # A short tombstone: reads fill the cache again soon after the order's last change.
    settings = embedded_settings(tmp_path, CACHE_TOMBSTONE_S="0.3", **store_env)
    async with (
        running("catalog", settings) as (_, catalog),
        running("orders", settings, headers=bearer("ann")) as (app, orders),
    ):
        runtime: ServiceRuntime = app.state.runtime
        item = (await catalog.get("/api/v1/menu")).json()["items"][0]
        body = {
            "items": [{"menu_item_id": item["id"], "size": "medium", "quantity": 1}],
            "delivery_address": "1 Main St",
            "payment": {"token": "tok_visa"},
        }
        deadline = time.monotonic() + 30
        while (
            placed := await orders.post("/api/v1/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
        ).status_code != 202:
            assert time.monotonic() < deadline, placed.text  # the menu copy is on its way
            await asyncio.sleep(0.05)
        order_id = uuid.UUID(placed.json()["id"])

        async def in_read_model() -> Any:
            async with runtime.db.read() as conn:
                return await projection.view_of(conn, 1, order_id)

        while await in_read_model() is None:
            assert time.monotonic() < deadline, "the order never reached the read model"
            await asyncio.sleep(0.05)
        first = (await orders.get(f"/api/v1/orders/{order_id}")).json()
        assert first["cancel_requested"] is False
        hits = looked_up("orders", "hit")
        while looked_up("orders", "hit") == hits:  # filled once the tombstone of its last change is gone
            assert (await orders.get(f"/api/v1/orders/{order_id}")).json() == first
            assert time.monotonic() < deadline + 10, "order reads never came from the cache"
            await asyncio.sleep(0.05)

        assert (await orders.post(f"/api/v1/orders/{order_id}/cancel")).status_code == 202
        # The cancel reaches the read model through its event; the moment the view has it, every
        # read must have it too.
        while not (await in_read_model()).cancel_requested:
            assert (await orders.get(f"/api/v1/orders/{order_id}")).status_code == 200  # keeps the cache warm
            assert time.monotonic() < deadline + 30, "the cancellation never reached the read model"
            await asyncio.sleep(0.01)  # (a read on SQLite need not give the loop to the consumer)
        for _ in range(5):
            assert (await orders.get(f"/api/v1/orders/{order_id}")).json()["cancel_requested"] is True
        # Another customer's read of a cached order is still refused.
        stranger = await orders.get(f"/api/v1/orders/{order_id}", headers=bearer("bob"))
        assert stranger.status_code == 404


@pytest.mark.parametrize("count", [0, 1, 40])
async def test_invalidation_tombstones_every_key_it_is_given(cache: Cache, count: int) -> None:
    keys = [f"k{n}" for n in range(count)]
    for key in [*keys, "untouched"]:
        await cache.fill(key, b"v")
    await cache.invalidate(*keys)
    assert [await cache.get(key) for key in keys] == [None] * count
    assert await cache.get("untouched") == b"v"
    for key in keys:  # a reader's late fill does not undo the invalidation
        await cache.fill(key, b"stale")
    assert [await cache.get(key) for key in keys] == [None] * count


async def test_redis_tombstones_expire_after_their_own_time_and_survive_a_script_flush() -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    prefix = f"pizzeria:test:{name}"
    cache = RedisCache(name, REDIS_URL, ttl_s=30, tombstone_s=20, prefix=prefix)
    admin = redis.Redis.from_url(REDIS_URL)
    try:
        await cache.fill("a", b"v")
        await cache.invalidate("a", "b")
        for key in ("a", "b"):
            assert await admin.get(f"{prefix}:{key}") == TOMBSTONE
            assert 0 < await admin.pttl(f"{prefix}:{key}") <= 20_000
        # A server that forgot the script (restarted, flushed) is sent it again.
        await admin.script_flush()
        await cache.fill("c", b"v")
        await cache.invalidate("c")
        assert await cache.get("c") is None
        assert 0 < await admin.pttl(f"{prefix}:c") <= 20_000
    finally:
        await cache.close()
        await admin.aclose()


async def test_an_unreachable_redis_is_a_miss_and_never_an_error() -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    cache = RedisCache(name, UNREACHABLE_URL, ttl_s=30, tombstone_s=1, prefix=f"pizzeria:test:{name}")
    try:
        assert await cache.get("k") is None
        await cache.fill("k", b"v")
        await cache.invalidate("k", "l")
        assert REGISTRY.get_sample_value("pizzeria_cache_errors_total", {"cache": name}) == 3
    finally:
        await cache.close()
