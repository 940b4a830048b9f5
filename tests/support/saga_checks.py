"""What must hold of the order saga over the four services of `Services` (tests/support/cluster.py),
whatever order their messages came in, however often, and whatever crashed: checked after every
step (`ALWAYS`) and once everything settled (`check_final`). Shared by the Hypothesis machine
(tests/integration/test_saga_stateful.py) and the deterministic simulation over the embedded
broker (tests/chaos/simulation.py). Each check raises AssertionError with what it found."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pizzeria.contracts.orders import is_valid_path
from pizzeria.messaging.tables import dead_letters
from pizzeria.services.kitchen.tables import ingredients, reservations
from pizzeria.services.orders import projection
from pizzeria.services.orders import repository as orders_repo
from pizzeria.services.payments import repository as payments_repo
from tests.support.cluster import Services


@dataclass
class Story:
    """What the test did to an order: the card it paid with, and whether a cancel was accepted."""

    card: str
    cancel_accepted: bool = False


Stories = Mapping[uuid.UUID, Story]


# -- reading --------------------------------------------------------------------------------------


async def rows(services: Services, node: str, query: Any) -> list[Any]:
    async with services.nodes[node].db.read() as conn:
        return list((await conn.execute(query)).all())


async def orders_of(services: Services, stories: Stories) -> list[Any]:
    async with services.nodes["orders"].db.read() as conn:
        return [await orders_repo.get(conn, order_id) for order_id in stories]


async def payments_of(services: Services, order_id: uuid.UUID) -> list[Any]:
    async with services.nodes["payments"].db.read() as conn:
        return await payments_repo.for_order(conn, order_id)


async def views_of(services: Services, stories: Stories) -> dict[uuid.UUID, tuple[str, str | None]]:
    async with services.nodes["orders"].db.read() as conn:
        return {
            order_id: (row.status, row.cancel_reason)
            for order_id in stories
            if (row := await projection.view_of(conn, 1, order_id)) is not None
        }


# -- after every step -----------------------------------------------------------------------------


async def stock_is_conserved(services: Services, stories: Stories) -> None:
    levels = await rows(services, "kitchen", sa.select(ingredients))
    held = await rows(services, "kitchen", sa.select(reservations))
    for r in levels:
        counts = f"{r.name}: on hand {r.on_hand}, reserved {r.reserved}, consumed {r.consumed}, received {r.received}"
        assert r.on_hand + r.reserved + r.consumed == r.received, f"stock not conserved: {counts}"
        assert min(r.on_hand, r.reserved, r.consumed) >= 0, f"negative stock: {counts}"
        # What the counters say is held/consumed is exactly what the reservations say.
        for status, counted in (("held", r.reserved), ("consumed", r.consumed)):
            listed = sum(h.quantity for h in held if h.ingredient == r.name and h.status == status)
            assert counted == listed, f"{counts}, but the reservations say {listed} {status}"


async def nobody_is_charged_or_refunded_twice(services: Services, stories: Stories) -> None:
    for order_id in stories:
        charges = services.provider.succeeded(str(order_id))
        assert len(charges) <= 1, f"{order_id} charged {len(charges)} times"
        for charge in charges:
            assert len(services.provider.refunds_of(charge["id"])) <= 1, f"{order_id} refunded twice"


async def every_history_is_a_valid_path(services: Services, stories: Stories) -> None:
    for order in await orders_of(services, stories):
        path = [s.value for s, _ in order.history]
        assert is_valid_path(path), f"{order.id}: {path}"


async def nothing_is_dead_lettered(services: Services, stories: Stories) -> None:
    for node in services.nodes:
        found = await rows(services, node, sa.select(dead_letters))
        assert not found, f"{node}: {[(r.message_type, r.error[:200]) for r in found]}"


Check = Callable[[Services, Stories], Awaitable[None]]
ALWAYS: tuple[Check, ...] = (
    stock_is_conserved,
    nobody_is_charged_or_refunded_twice,
    every_history_is_a_valid_path,
    nothing_is_dead_lettered,
)


# -- at the end -----------------------------------------------------------------------------------


async def check_final(services: Services, stories: Stories) -> None:
    """Everything settled: every order ended as its story allows, each cancelled paid order was
    refunded once, the money kept is what the delivered orders cost, no reservation outlived
    its order, and the read model agrees with the orders."""
    final = {o.id: o for o in await orders_of(services, stories)}
    kept = 0
    for order_id, story in stories.items():
        order = final[order_id]
        assert order.status in ("delivered", "cancelled"), f"{order_id} stuck at {order.status}"
        charges = services.provider.succeeded(str(order_id))
        refunds = [r for c in charges for r in services.provider.refunds_of(c["id"])]
        kept += sum(c["amount"] for c in charges) - sum(r["amount"] for r in refunds)
        if order.status == "delivered":
            assert story.card == "tok_visa", f"{order_id} delivered with {story.card}"
            assert (len(charges), len(refunds)) == (1, 0), order_id
            assert charges[0]["amount"] == order.total, f"{order_id} charged {charges[0]['amount']}, not {order.total}"
        else:
            assert len(refunds) == len(charges), f"{order_id}: cancelled but not refunded"
            if order.cancel_reason == "customer_cancelled":
                assert story.cancel_accepted, order_id
            if order.cancel_reason == "payment_failed":
                # A declined card; or a card the provider never answers, when payments gave
                # up on it (after its last attempt) before the saga's deadline passed.
                reasons = {p.failure_reason for p in await payments_of(services, order_id)}
                assert (story.card, reasons) in (
                    ("tok_declined", {"card_declined"}),
                    ("tok_timeout", {"provider_unavailable"}),
                ), f"{order_id}: {story.card} ended payment_failed ({reasons})"
    delivered = sum(o.total for o in final.values() if o.status == "delivered")
    assert kept == delivered, f"money kept {kept} but the delivered orders cost {delivered}"
    held = await rows(services, "kitchen", sa.select(reservations).where(reservations.c.status == "held"))
    assert not held, f"reservations outlived their orders: {held}"
    views = await views_of(services, stories)
    for order_id, order in final.items():
        assert views[order_id] == (order.status.value, order.cancel_reason), f"read model of {order_id}"
