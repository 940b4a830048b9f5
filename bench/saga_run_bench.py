"""What a run of saga replies costs orders' repository, per order: its orders loaded and locked
(`repository.load_many`), each moved one status on (`handlers.move`), the run committed, as the
orders consumer group's handler does for every run. The orders have `--lines` lines and have
already passed `--steps` statuses when the runs start, so what loading an order's lines and
past history would cost shows.

    python -m bench.saga_run_bench [--orders 2000] [--run 100] [--lines 2] [--steps 3] [--rounds 3] [--skip-postgres]

Prints µs of this process's CPU (`time.process_time`) per order moved, for each round, on
SQLite and on PostgreSQL (a new database on the test server, `PIZZERIA_TEST_PG` as the tests
name it; its own CPU is not counted). Run it on two commits, alternating, to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Sequence
from uuid import UUID

from tests.support.participant import Participant
from tests.support.postgres import create_database, drop_database

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.ids import uuid7
from pizzeria.kit.migrations import upgrade
from pizzeria.messaging.saga import SagaEngine
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS
from pizzeria.services.orders import handlers, repository
from pizzeria.services.orders.domain import Line, Order, Status
from pizzeria.services.orders.saga import place_order_saga
from pizzeria.services.orders.settings import OrdersSettings
from pizzeria.services.orders.tables import metadata

#: The statuses an order passes through on its way to the door, in order.
ONWARD = [Status.PAID, Status.PREPARING, Status.BAKING, Status.READY, Status.OUT_FOR_DELIVERY, Status.DELIVERED]


def placed(customer: str, lines: int) -> Order:
    return Order.place(
        id=uuid7(),
        customer_id=customer,
        lines=[Line(uuid.uuid4(), f"Pizza {n}", "medium", 1 + n % 3, 900 + 50 * n) for n in range(lines)],
        currency="EUR",
        payment_token="tok_visa",
        delivery_address="1 Main St",
        email="someone@example.com",
        phone=None,
        at=utcnow(),
    )


async def move_all(shop: Participant, ids: Sequence[UUID], run: int, status: Status) -> None:
    for first in range(0, len(ids), run):
        chunk = ids[first : first + run]
        async with shop.runtime.uow() as uow:
            await repository.load_many(uow, chunk)
            for order_id in chunk:
                if not await handlers.move(uow, order_id, status):
                    raise RuntimeError(f"order {order_id} did not move to {status}")
            await uow.commit()


async def rounds(url: str, args: argparse.Namespace) -> list[float]:
    if args.steps + args.rounds > len(ONWARD):
        raise SystemExit(f"--steps + --rounds is at most {len(ONWARD)}: an order has no more statuses to pass")
    await upgrade(url, [MESSAGING_MIGRATIONS])
    db = Database(url)
    try:
        engine = SagaEngine(place_order_saga(OrdersSettings()), listener=handlers.on_saga_transition)
        shop = await Participant.create(db, metadata, handlers.build_handlers(engine), service="orders")
        ids: list[UUID] = []
        for first in range(0, args.orders, args.run):
            async with shop.runtime.uow() as uow:
                for n in range(first, min(first + args.run, args.orders)):
                    order = placed(f"customer{n}", args.lines)
                    repository.add(uow, order)
                    ids.append(order.id)
                await uow.commit()
        for status in ONWARD[: args.steps]:
            await move_all(shop, ids, args.run, status)
        taken = []
        for status in ONWARD[args.steps : args.steps + args.rounds]:
            started = time.process_time()
            await move_all(shop, ids, args.run, status)
            taken.append((time.process_time() - started) / len(ids) * 1e6)
        return taken
    finally:
        await db.dispose()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        sqlite = await rounds(f"sqlite:///{workdir}/orders.db", args)
    print(f"SQLite:     µs per order moved, rounds {' '.join(f'{t:.1f}' for t in sqlite)}")
    if not args.skip_postgres:
        url = await create_database("pz_sagarun")
        try:
            postgres = await rounds(url, args)
        finally:
            await drop_database(url)
        print(f"PostgreSQL: µs per order moved (this process), rounds {' '.join(f'{t:.1f}' for t in postgres)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--run", type=int, default=100, help="orders in a run (a consumer's run of replies)")
    parser.add_argument("--lines", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="statuses each order has passed before the rounds")
    parser.add_argument("--rounds", type=int, default=3, help="runs over every order, each one status on")
    parser.add_argument("--skip-postgres", action="store_true")
    asyncio.run(main(parser.parse_args()))
