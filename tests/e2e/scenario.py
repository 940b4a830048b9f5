"""Orders placed the way customers place them, each with a story (its card, whether its customer
tries to cancel), and the checks every run must pass: each order ends as its story allows, and
the system's invariants hold."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from pizzeria.chaos.stories import TERMINAL, Placed, allowed_endings, expected_notifications, order_body
from pizzeria.contracts.orders import is_valid_path
from pizzeria.services.orders.domain import MAX_LINES
from tests.e2e.system import Shop

#: Orders end on their own (and fast) with the autopilots moving tickets and deliveries.
AUTOPILOT = {"KITCHEN_AUTOPILOT": "1", "DELIVERY_AUTOPILOT": "1", "KITCHEN_STAGE_MS": "50", "DELIVERY_STAGE_MS": "50"}
#: `place_orders`' 25 customers place hundreds of orders in a minute, far more at once than any
#: customer would: the systems it loads let a customer have any number of unpaid orders (the
#: limit itself is tested in test_attacks).
MANY_ORDERS = {"ORDER_MAX_UNPAID": "100000"}


async def wait_for_menu_sync(shop: Shop, menu: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Orders learns the menu from catalog events: wait until it knows every item of `menu`, by
    placing warm-up orders that name each item once (an order naming an item orders has not
    heard of yet is refused, and placed again until it is accepted)."""
    placed = []
    for start in range(0, len(menu), MAX_LINES):
        body = order_body(menu, "tok_visa", "first@example.com", None, random.Random(1))
        body["items"] = [
            {"menu_item_id": item["id"], "size": item["sizes"][0]["size"], "quantity": 1}
            for item in menu[start : start + MAX_LINES]
        ]
        placed.append(await shop.place(body, customer=f"warmup{start}", retry_for=120))
    return placed


async def place_orders(
    shop: Shop,
    count: int,
    *,
    concurrency: int = 20,
    seed: int = 7,
    cards: tuple[str, ...] = ("tok_visa", "tok_declined"),
    cancel_share: float = 0.0,
) -> list[Placed]:
    """Place `count` orders; every card appears at least once. A `cancel_share` of the customers
    change their mind right after placing (some before the kitchen starts, some after)."""
    rng = random.Random(seed)
    menu = await shop.menu()
    plans = []
    for i in range(count):
        card = cards[i % len(cards)] if i < len(cards) else rng.choice(cards)
        email = f"customer{i}@example.com" if rng.random() < 0.9 else None
        phone = f"+4915{rng.randint(10_000_000, 99_999_999)}" if rng.random() < 0.5 or email is None else None
        wants_cancel = rng.random() < cancel_share
        plans.append(
            (
                str(uuid.uuid4()),
                card,
                email,
                phone,
                order_body(menu, card, email, phone, rng),
                f"c{i % 25}",
                wants_cancel,
                rng.random() * 0.3,
            )
        )
    gate = asyncio.Semaphore(concurrency)

    async def one(plan: tuple[str, str, str | None, str | None, dict[str, Any], str, bool, float]) -> Placed:
        key, card, email, phone, body, customer, wants_cancel, thinking = plan
        async with gate:
            placed = Placed(key, card, email, phone, await shop.place(body, customer=customer, key=key))
        if wants_cancel:
            await asyncio.sleep(thinking)  # a customer's hesitation, so cancels land at every stage
            placed.cancel, placed.cancel_uncertain = await shop.cancel(placed.id, customer=customer)
        return placed

    return list(await asyncio.gather(*(one(p) for p in plans)))


async def holds_within(check: Callable[[], Awaitable[None]], timeout: float, interval: float = 0.5) -> None:
    """Run `check` again and again until it passes (raises no AssertionError) or `timeout`
    seconds have gone; then its last failure is the test's."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await check()
            return
        except AssertionError:
            if loop.time() > deadline:
                raise
        await asyncio.sleep(interval)


async def wait_until_settled(shop: Shop, placed: list[Placed], timeout: float = 240.0) -> dict[str, dict[str, Any]]:
    """Poll every order until each has reached a final status."""
    final: dict[str, dict[str, Any]] = {}
    gate = asyncio.Semaphore(20)

    async def look(p: Placed) -> dict[str, Any]:
        async with gate:
            return await shop.order(p.id)

    async def all_final() -> None:
        pending = [p for p in placed if p.id not in final]
        looked = await asyncio.gather(*(look(p) for p in pending))
        for order in looked:
            if order["status"] in TERMINAL and not order.get("cancel_requested"):
                final[order["id"]] = order
        stuck = Counter(o["status"] for o in looked if o["id"] not in final)
        assert not stuck, f"{len(placed) - len(final)} orders never settled: {dict(stuck)}"

    await holds_within(all_final, timeout)
    return final


async def check_outcomes(shop: Shop, placed: list[Placed], final: dict[str, dict[str, Any]]) -> None:
    """Every order ended as its story allows; nobody was charged or refunded twice; every
    cancelled paid order was refunded; every status a customer is told of was notified
    exactly once per channel."""
    assert len({p.id for p in placed}) == len(placed), "two requests created the same order"
    for p in placed:
        order = final[p.id]
        path = [h["status"] for h in order["history"]]
        assert is_valid_path(path), f"{p.id}: impossible history {path}"
        ending = (order["status"], order["cancel_reason"])
        assert ending in allowed_endings(p), f"{p.id} ({p.card}, cancel {p.cancel}) ended {ending}"
        if p.cancel == 409 and not p.cancel_uncertain:
            assert "preparing" in path or order["cancel_reason"] in ("out_of_stock", "payment_failed", "timeout"), (
                f"{p.id}: cancel refused while cancellable: {path}"
            )

    async def payment_checks(p: Placed) -> None:
        # The read model is eventually consistent: an order's final status and its payment's
        # last fact come from different topics (and, with replicas, may be projected by
        # different processes), so the payment status may follow the status by a moment. The
        # checks are made again until they hold or a deadline passes; the order as last read is
        # what the notification check below expects from.

        async def again() -> None:
            final[p.id] = await shop.order(p.id)
            await payment_check(p)

        await holds_within(again, 30.0)

    async def payment_check(p: Placed) -> None:
        order = final[p.id]
        payments, charges = await asyncio.gather(shop.payments(p.id), shop.charges(p.id))
        succeeded = [c for c in charges if c["status"] == "succeeded"]
        assert len(succeeded) <= 1, f"{p.id}: charged {len(succeeded)} times"
        assert len(payments) <= 1, f"{p.id}: {len(payments)} payments"
        refunds = [r for r in await shop.refunds() if succeeded and r["charge"] == succeeded[0]["id"]]
        assert len(refunds) <= 1, f"{p.id}: refunded {len(refunds)} times"
        if order["status"] == "delivered":
            found = (len(succeeded), len(refunds), order["payment_status"])
            assert found == (1, 0, "completed"), f"{p.id} delivered: {found}, {charges}"
        elif succeeded:  # cancelled after the money was taken: it must be back
            assert len(refunds) == 1, f"{p.id}: cancelled but its charge was not refunded"
            assert order["payment_status"] == "refunded", p.id
        if order["cancel_reason"] == "out_of_stock":
            assert not charges, f"{p.id}: charged although nothing could be reserved"

    gate = asyncio.Semaphore(20)

    async def gated(check: Any, p: Placed) -> None:
        async with gate:
            await check(p)

    await asyncio.gather(*(gated(payment_checks, p) for p in placed))

    async def notified(p: Placed) -> None:
        wants = expected_notifications(p, final[p.id])

        async def as_expected() -> None:
            got = Counter((n["template"], n["channel"]) for n in await shop.notifications(p.id))
            assert got in wants, f"{p.id}: notifications {dict(got)} != {' or '.join(str(dict(w)) for w in wants)}"

        await holds_within(as_expected, 60.0)

    await asyncio.gather(*(gated(notified, p) for p in placed))


async def stock_up(shop: Shop, amount: int = 10_000_000) -> None:
    """Plenty of everything, so that no order of the test runs out."""
    for item in await shop.inventory():
        await shop.set_stock(item["ingredient"], amount)


def assert_nothing_ran_out(final: dict[str, dict[str, Any]]) -> None:
    ran_out = [o["id"] for o in final.values() if o["cancel_reason"] == "out_of_stock"]
    assert not ran_out, f"{len(ran_out)} orders ran out of stock although stock was plentiful"


async def check_invariants(shop: Shop) -> None:
    """Stock is conserved and nothing stays reserved once every order ended; no saga is left
    running or compensating."""
    for item in await shop.inventory():
        assert item["on_hand"] + item["reserved"] + item["consumed"] == item["received"], item
        assert item["reserved"] == 0, f"{item['ingredient']}: a reservation outlived its order"
    counts = await shop.saga_counts()
    assert counts.get("running", 0) == 0, counts
    assert counts.get("compensating", 0) == 0, counts


async def check_one_ticket_and_delivery_each(shop: Shop, final: dict[str, dict[str, Any]]) -> None:
    """No order got two kitchen tickets or two deliveries; every delivered order has one of
    each, finished."""
    tickets, deliveries = await asyncio.gather(shop.tickets(), shop.deliveries())
    assert len(tickets) < 500, "more tickets than one page: place fewer orders"
    for kind, rows in (("tickets", tickets), ("deliveries", deliveries)):
        twice = [order_id for order_id, n in Counter(r["order_id"] for r in rows).items() if n > 1]
        assert not twice, f"orders with two {kind}: {twice[:5]}"
    delivered = {order_id for order_id, order in final.items() if order["status"] == "delivered"}
    finished = {t["order_id"] for t in tickets if t["status"] == "ready"}
    handed_over = {d["order_id"] for d in deliveries if d["status"] == "delivered"}
    assert delivered <= finished, f"delivered without a finished ticket: {sorted(delivered - finished)[:5]}"
    assert delivered <= handed_over, f"delivered without a delivery: {sorted(delivered - handed_over)[:5]}"
