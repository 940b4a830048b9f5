"""The order flow end to end, the whole system running as processes, on both stacks: 200
orders with good and declined cards, through the saga to delivery (autopilots on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import start_system
from tests.e2e.scenario import (
    MANY_ORDERS,
    assert_nothing_ran_out,
    check_invariants,
    check_outcomes,
    place_orders,
    stock_up,
    wait_for_menu_sync,
    wait_until_settled,
)
from tests.e2e.system import Shop

pytestmark = pytest.mark.e2e


async def test_two_hundred_orders_end_as_their_cards_say(stack: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    _, env = stack
    system = await start_system(tmp_path, {**env, **MANY_ORDERS})
    shop = Shop(system)
    try:
        await wait_for_menu_sync(shop, await shop.menu())
        await stock_up(shop)
        placed = await place_orders(shop, 200)
        final = await wait_until_settled(shop, placed)
        assert_nothing_ran_out(final)
        await check_outcomes(shop, placed, final)
        await check_invariants(shop)
    finally:
        await shop.close()
        system.stop()


async def test_an_idempotency_key_gives_one_order_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    system = await start_system(tmp_path, {})
    shop = Shop(system)
    pids = [await system.pid(service) for service in system.ports]
    try:
        menu = await shop.menu()
        await wait_for_menu_sync(shop, menu)
        body = {
            "items": [{"menu_item_id": menu[0]["id"], "size": "medium", "quantity": 1}],
            "delivery_address": "1 Main St",
            "payment": {"token": "tok_visa"},
        }
        first = await shop.place(body, customer="ann", key="same-key")
        again = await shop.place(body, customer="ann", key="same-key")
        assert again["id"] == first["id"]
        other = {**body, "delivery_address": "2 Other St"}
        response = await shop.http.post(
            f"{system.url('orders')}/api/v1/orders",
            json=other,
            headers={"Idempotency-Key": "same-key", **shop.as_customer("ann")},
        )
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"].endswith("/idempotency-key-reused")
    finally:
        await shop.close()
        system.stop()  # SIGINT, as Ctrl-C sends
    assert system.process is not None
    assert system.process.returncode == 0
    output = system.output.read_text()
    assert output.index("pizzeria: stopping...") < output.index("pizzeria: stopped.")
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), (
            f"service process {pid} outlived the supervisor"
        )
