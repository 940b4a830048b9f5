"""The order saga end to end, on both stacks: 300 orders with good, declined and never-answered
cards, stock running out midway, and customers cancelling at every stage. Afterwards every
order is in exactly one final state its story allows, and the invariants hold: stock conserved
and nothing left reserved, nobody charged or refunded twice, every cancelled paid order
refunded, every history a valid path, every saga ended."""

from __future__ import annotations

from collections import Counter
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
from tests.e2e.system import Shop

pytestmark = pytest.mark.e2e

# A payment deadline short enough for `tok_timeout` orders to reach their `timeout` ending within
# the test, long enough that no answered charge misses it on a loaded 2-core machine.
FAST_SAGA = {"SAGA_PAYMENT_TIMEOUT_S": "20", "PAYMENT_TIMEOUT_MS": "500", "KITCHEN_STAGE_MS": "150"}


async def test_three_hundred_orders_each_end_as_their_story_allows(
    stack: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    _, env = stack
    system = await start_system(tmp_path, {**env, **FAST_SAGA, **MANY_ORDERS})
    shop = Shop(system)
    try:
        await wait_for_menu_sync(shop, await shop.menu())
        await stock_up(shop)
        await shop.set_stock("dough", 500)  # runs out about halfway through the orders below
        cards = ("tok_visa",) * 6 + ("tok_declined",) * 2 + ("tok_timeout",)
        placed = await place_orders(shop, 300, concurrency=25, seed=31, cards=cards, cancel_share=0.15)
        final = await wait_until_settled(shop, placed, timeout=300)
        await check_outcomes(shop, placed, final)
        await check_invariants(shop)

        endings = Counter((o["status"], o["cancel_reason"]) for o in final.values())
        # Every ending of the saga happened at least once, or the test did not test it.
        for ending in (
            ("delivered", None),
            ("cancelled", "out_of_stock"),
            ("cancelled", "payment_failed"),
            ("cancelled", "timeout"),
            ("cancelled", "customer_cancelled"),
        ):
            assert endings[ending] > 0, f"no order ended {ending}: {dict(endings)}"
    finally:
        await shop.close()
        system.stop()
