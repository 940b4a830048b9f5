"""Reading a settled system back for the checker: wait until every acknowledged order has ended
(`settle`), read everything back (`observe`), and check the two, again until the eventually
consistent read models agree or a deadline passes (`check_system`).

Everything is read through `ReadBack`, the read methods a client of the system offers: the
whole-system tests' shop (straight at each service) and `pizzeria.chaos.gateway.GatewayShop`
(through the gateway, as an administrator) both are one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from pizzeria.chaos.checker import FAILED, History, Observed, Result, check
from pizzeria.chaos.stories import TERMINAL
from pizzeria.contracts.orders import OrderPlaced, OrderStatusChanged

#: How many reads of single orders or payments are under way at once.
CONCURRENCY = 16


class ReadBack(Protocol):
    """What the checker reads, each call everything there is (every page)."""

    async def find_order(self, order_id: str) -> dict[str, Any] | None:
        """One order as its customer sees it; None when it does not exist."""

    async def all_orders(self) -> list[dict[str, Any]]: ...

    async def payments(self, order_id: str) -> list[dict[str, Any]]: ...

    async def charges(self, order_id: str | None = None) -> list[dict[str, Any]]:
        """The payment provider's charges (of one order, or all)."""

    async def refunds(self) -> list[dict[str, Any]]:
        """The payment provider's refunds."""

    async def tickets(self) -> list[dict[str, Any]]: ...

    async def deliveries(self) -> list[dict[str, Any]]: ...

    async def all_notifications(self) -> list[dict[str, Any]]: ...

    async def inventory(self) -> list[dict[str, Any]]: ...

    async def menu(self, *, include_unavailable: bool = False) -> list[dict[str, Any]]: ...

    async def saga_counts(self) -> dict[str, int]: ...

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every service's dead letters; raises when a service did not answer."""

    async def audit(self, message_type: str) -> list[dict[str, Any]]: ...


def _ended(order: dict[str, Any] | None) -> bool:
    return order is not None and order["status"] in TERMINAL and not order.get("cancel_requested")


async def _orders(shop: ReadBack, ids: list[str], every: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The orders `ids` as they stand: from `every` order the orders API lists (a few pages),
    and each one the list does not have (yet) asked for on its own; those not found are left out."""
    listed = {str(o["id"]): o for o in every}
    missing = [i for i in ids if i not in listed]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(order_id: str) -> dict[str, Any] | None:
        async with gate:
            return await shop.find_order(order_id)

    found = dict(zip(missing, await asyncio.gather(*(one(i) for i in missing)), strict=True))
    return {i: o for i in ids if (o := listed.get(i) or found.get(i)) is not None}


async def settle(
    shop: ReadBack,
    history: History,
    timeout: float,
    *,
    stalled_for: float | None = None,
    interval: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Wait (polling, up to `timeout` s; with `stalled_for`, only while some order ended in the
    last `stalled_for` s) until every acknowledged order has ended; those that have not by then
    are what `check` reports lost. How many had not; `progress(ended, all)` is told after each
    look. (A system that works through a backlog slowly — a few couriers for many orders — is
    waited for as long as it moves; one that stopped moving is not waited for in vain.)"""
    ids = [r.order_id for r in history.acknowledged if r.order_id]
    ended: set[str] = set()
    deadline = time.monotonic() + timeout
    moved = time.monotonic()
    while True:
        pending = [i for i in ids if i not in ended]
        try:
            now = await _orders(shop, pending, await shop.all_orders())
        except Exception:  # not an answer: no sign that the orders stopped moving
            now, moved = {}, time.monotonic()
        before = len(ended)
        ended.update(i for i, order in now.items() if _ended(order))
        if len(ended) > before:
            moved = time.monotonic()
        if progress is not None:
            progress(len(ended), len(ids))
        stalled = stalled_for is not None and time.monotonic() - moved > stalled_for
        if len(ended) == len(ids) or time.monotonic() > deadline or stalled:
            return len(ids) - len(ended)
        await asyncio.sleep(interval)


async def observe(shop: ReadBack, history: History) -> Observed:
    """Read everything back through the APIs."""
    gate = asyncio.Semaphore(CONCURRENCY)
    ids = [r.order_id for r in history.acknowledged if r.order_id]

    async def payments(order_id: str) -> list[dict[str, Any]]:
        async with gate:
            return await shop.payments(order_id)

    listed = await shop.all_orders()
    orders = await _orders(shop, ids, listed)
    paid = await asyncio.gather(*(payments(i) for i in ids))
    charges, refunds, tickets, deliveries, notifications = await asyncio.gather(
        shop.charges(), shop.refunds(), shop.tickets(), shop.deliveries(), shop.all_notifications()
    )
    inventory, menu, sagas, dead, placed, changed = await asyncio.gather(
        shop.inventory(),
        shop.menu(include_unavailable=True),
        shop.saga_counts(),
        shop.dead_letters(),
        shop.audit(OrderPlaced.type_name()),
        shop.audit(OrderStatusChanged.type_name()),
    )
    return Observed(
        orders=orders,
        listed=listed,
        payments=dict(zip(ids, paid, strict=True)),
        charges=charges,
        refunds=refunds,
        tickets=tickets,
        deliveries=deliveries,
        notifications=notifications,
        inventory=inventory,
        menu=menu,
        sagas=sagas,
        dead_letters=dead,
        placed_audit=placed,
        status_audit=changed,
    )


async def agree(shop: ReadBack, history: History, agree_for: float, *, interval: float = 2.0) -> Result:
    """Read back and check until the check passes or `agree_for` seconds have gone (the read
    models are eventually consistent: a payment's last fact or a notification may follow an
    order's final status by a moment). The last result; a read-back that kept failing is a
    `run failed` violation of it."""
    deadline = time.monotonic() + agree_for
    result: Result | None = None
    failure = ""
    while True:
        try:
            result = check(history, await observe(shop, history))
        except Exception as exc:
            failure = f"the read-back failed: {type(exc).__name__}: {exc}"[:300]
        if (result is not None and result.ok) or time.monotonic() > deadline:
            break
        await asyncio.sleep(interval)
    if result is None:
        result = Result(acknowledged=len(history.acknowledged))
        result.unanswered = sum(1 for r in history.records if not r.acknowledged)
        result.add(FAILED, failure)
    return result


async def check_system(
    shop: ReadBack, history: History, *, settle_for: float = 240.0, agree_for: float = 60.0
) -> Result:
    """Wait for the orders to settle (`settle`), then read back and check (`agree`)."""
    await settle(shop, history, settle_for)
    return await agree(shop, history, agree_for)
