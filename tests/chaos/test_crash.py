"""Processes die at the worst moments; nothing is lost and nobody is charged twice.

- payments is SIGKILLed while orders stream in (some charges in flight, offsets uncommitted);
- orders dies between committing orders and publishing their events (a failpoint kills it
  inside the outbox relay, after the rows are read and before the broker sees them).
`pizzeria up` restarts each; every accepted order must still end as its card says, with one
payment, one provider charge, and one notification per status told and channel.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.conftest import start_system
from tests.e2e.scenario import (
    MANY_ORDERS,
    check_invariants,
    check_outcomes,
    place_orders,
    stock_up,
    wait_for_menu_sync,
    wait_until_settled,
)
from tests.e2e.system import Shop, System

pytestmark = pytest.mark.e2e


async def _charges_at_least(shop: Shop, system: System, n: int) -> bool:
    response = await shop.http.get(f"{system.url('provider')}/v1/charges")
    return len(response.json()["items"]) >= n


async def _restarted(system: System, service: str, old_pid: int) -> bool:
    try:
        return await system.pid(service) != old_pid
    except Exception:
        return False


async def test_payments_killed_while_orders_stream_in(stack: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    _, env = stack
    system = await start_system(tmp_path, {**env, **MANY_ORDERS, "PAYMENT_LATENCY_MS": "30"})
    shop = Shop(system)
    try:
        await wait_for_menu_sync(shop, await shop.menu())
        await stock_up(shop)
        streaming = asyncio.create_task(place_orders(shop, 150, concurrency=6, seed=11))
        await system.wait_until(lambda: _charges_at_least(shop, system, 30), 120, "some charges made")
        killed = await system.kill("payments")
        await system.wait_until(lambda: _restarted(system, "payments", killed), 120, "payments restarted")
        placed = await streaming
        final = await wait_until_settled(shop, placed, timeout=240)
        await check_outcomes(shop, placed, final)
        await check_invariants(shop)
        assert "payments exited with code -9" in system.output.read_text()
    finally:
        await shop.close()
        system.stop()


async def test_orders_dies_between_commit_and_publish(tmp_path: Path) -> None:
    system = await start_system(tmp_path, {**MANY_ORDERS, "PIZZERIA_FAILPOINTS": "orders:relay.before_publish=crash@5"})
    shop = Shop(system)
    try:
        await wait_for_menu_sync(shop, await shop.menu())
        await stock_up(shop)
        old_pid = await system.pid("orders")
        placed = await place_orders(shop, 150, concurrency=6, seed=23)
        await system.wait_until(lambda: _restarted(system, "orders", old_pid), 60, "orders restarted")
        final = await wait_until_settled(shop, placed, timeout=240)
        await check_outcomes(shop, placed, final)
        await check_invariants(shop)
        assert "orders exited with code 137" in system.output.read_text()
        assert (tmp_path / "var" / "failpoints" / "orders" / "relay.before_publish.fired").exists()
    finally:
        await shop.close()
        system.stop()
