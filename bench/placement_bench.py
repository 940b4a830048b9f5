"""CPU per order placement in the orders service's use case, with `callers` placing at once.

Each caller places its orders one after another, as a storefront's requests would come in
(every order its own customer and idempotency key, two lines priced from the menu copy, the
unpaid limit checked, the saga started). No HTTP: the figure is the placement's own, in this
process (on SQLite the database works in it too; on PostgreSQL the server's CPU is not in it).

    .venv/bin/python -m bench.placement_bench --callers 1 10 50 --orders 2000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY as METRICS
from tests.fakes import InMemoryBroker

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.db import Database
from pizzeria.kit.settings import Settings
from pizzeria.messaging.saga import SagaEngine
from pizzeria.messaging.tables import metadata as messaging_metadata
from pizzeria.services.orders import handlers, repository
from pizzeria.services.orders.domain import MenuEntry, OrderLimits, RequestedLine
from pizzeria.services.orders.saga import place_order_saga
from pizzeria.services.orders.settings import OrdersSettings
from pizzeria.services.orders.tables import metadata as orders_metadata

MENU = [MenuEntry(uuid.uuid4(), f"Pizza {n}", "EUR", {"medium": 1000 + n}, True, 1) for n in range(8)]
LIMITS = OrderLimits(max_unpaid=3)


def command(n: int) -> handlers.PlaceOrder:
    return handlers.PlaceOrder(
        customer_id=f"customer-{n}",
        idempotency_key=str(uuid.uuid4()),
        request_hash="h",
        lines=[RequestedLine(MENU[n % 8].id, "medium", 2), RequestedLine(MENU[(n + 3) % 8].id, "medium", 1)],
        payment_token="tok_visa",
        delivery_address="1 Main St",
        email="c@example.com",
        phone=None,
    )


async def measure(url: str, callers: int, orders: int, *, alone: bool) -> tuple[float, float]:
    """µs of CPU per placement, and placements per transaction."""
    db = Database(url, pool_size=callers + 2)
    async with db.transaction() as conn:
        await conn.run_sync(messaging_metadata.create_all)
        await conn.run_sync(orders_metadata.create_all)
        for entry in MENU:
            await repository.apply_menu_entry(conn, entry)
    runtime = ServiceRuntime(service="orders", settings=Settings(), db=db, broker=InMemoryBroker())
    engine = SagaEngine(place_order_saga(OrdersSettings()), listener=handlers.on_saga_transition)
    place: Callable[[handlers.PlaceOrder], Awaitable[object]] = placer(runtime, engine, alone=alone)
    numbers = iter(range(orders))

    async def caller() -> None:
        for n in numbers:
            await place(command(n))

    await asyncio.gather(*(caller() for _ in range(callers)))  # warm-up
    numbers = iter(range(orders, 2 * orders))
    commits = METRICS.get_sample_value("pizzeria_db_transactions_total") or 0.0
    started = time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    cpu = time.process_time() - started
    commits = (METRICS.get_sample_value("pizzeria_db_transactions_total") or 0.0) - commits
    await db.dispose()
    return cpu / orders * 1e6, orders / max(commits, 1)


def placer(
    runtime: ServiceRuntime, engine: SagaEngine, *, alone: bool
) -> Callable[[handlers.PlaceOrder], Awaitable[object]]:
    """How the API places (in sets), or each placement in a transaction of its own."""
    if not alone:
        return handlers.Placer(runtime.uow, engine, LIMITS).place

    async def place(cmd: handlers.PlaceOrder) -> object:
        return await handlers.place_order(cmd, runtime.uow(), engine, LIMITS)

    return place


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--url", default="", help="a database URL (default: a fresh SQLite file per run)")
    parser.add_argument("--alone", action="store_true", help="each placement in a transaction of its own")
    args = parser.parse_args()
    for callers in args.callers:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.url or f"sqlite:///{tmp}/orders.db"
            per_order, per_commit = await measure(url, callers, args.orders, alone=args.alone)
        print(f"callers {callers:3}: {per_order:7.1f} µs CPU per placement, {per_commit:5.1f} placements per commit")


if __name__ == "__main__":
    asyncio.run(main())
