"""Many-row updates on SQLite: SQLAlchemy's executemany against `kit.upsert.update_rows`, on
tables shaped as the order views and the sagas (the two most updated a order), each run a
transaction of `--rows` rows as a consumer's run writes them.

    python -m bench.update_bench --rows 10 --runs 400 --rounds 5

Prints µs of CPU (`time.process_time`) per row, with its transaction and in the update call
alone, for each way and round (the two ways alternate, so a slower spell of the machine falls
on both).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from pizzeria.kit.db import Database
from pizzeria.kit.ids import new_id
from pizzeria.kit.upsert import insert_rows, update_rows
from pizzeria.messaging.tables import sagas
from pizzeria.services.orders.tables import order_views

_VIEW = order_views.update().where(
    order_views.c.generation == sa.bindparam("g"), order_views.c.id == sa.bindparam("order_id")
)
_SAGA = sagas.update().where(sagas.c.id == sa.bindparam("saga_id"))
_COLUMNS = [c.name for c in order_views.c if c.name not in ("generation", "id")]


def _view(n: int, at: datetime) -> dict[str, Any]:
    return {
        "customer_id": f"customer-{n % 50}",
        "status": "preparing",
        "items": [{"menu_item_id": str(new_id()), "name": "Margherita", "quantity": 2, "unit_price": 1100}],
        "total": 2200,
        "currency": "EUR",
        "delivery_address": "1 Main Street",
        "cancel_reason": None,
        "cancel_requested": False,
        "payment_status": "completed",
        "courier_name": None,
        "history": [{"status": "pending", "at": at.isoformat()}, {"status": "accepted", "at": at.isoformat()}],
        "created_at": at,
        "updated_at": at,
    }


def _saga(saga_id: str, at: datetime) -> dict[str, Any]:
    return {
        "id": saga_id,
        "type": "order",
        "state": "running",
        "step": "awaiting_payment",
        "reason": None,
        "data": {"order_id": saga_id, "customer_id": "c", "total": 2200, "attempts": 1},
        "deadline_at": at + timedelta(seconds=30),
        "resends": 0,
        "created_at": at,
        "updated_at": at,
    }


async def _setup(database: Database, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`count` views and sagas; returns the rows that update them (keys as the services give)."""
    at = datetime.now(UTC)
    views = [{"generation": 1, "id": uuid.uuid4(), **_view(n, at)} for n in range(count)]
    started = [_saga(str(new_id()), at) for _ in range(count)]
    async with database.transaction() as conn:
        await conn.run_sync(order_views.metadata.create_all)
        await conn.run_sync(sagas.metadata.create_all)
        await insert_rows(conn, order_views, views)
        await insert_rows(conn, sagas, started)
    view_rows = [{"g": 1, "order_id": v["id"], **{c: v[c] for c in _COLUMNS}} for v in views]
    saga_rows = [{**s, "saga_id": s["id"], "state": "compensating"} for s in started]
    return view_rows, saga_rows


Way = Callable[[Any, sa.Update, list[dict[str, Any]]], Awaitable[Any]]


async def _sqlalchemy(conn: Any, stmt: sa.Update, rows: list[dict[str, Any]]) -> Any:
    return await conn.execute(stmt, rows)


async def _round(
    database: Database, way: Way, stmt: sa.Update, rows: list[dict[str, Any]], size: int, runs: int
) -> tuple[float, float]:
    """µs of CPU per row: with its transaction, and in the update alone."""
    start, alone = time.process_time(), 0.0
    for run in range(runs):
        at = (run * size) % (len(rows) - size)
        async with database.transaction() as conn:
            before = time.process_time()
            await way(conn, stmt, rows[at : at + size])
            alone += time.process_time() - before
    return (time.process_time() - start) / (runs * size) * 1e6, alone / (runs * size) * 1e6


async def _main(size: int, runs: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite:///{folder}/bench.db")
        try:
            view_rows, saga_rows = await _setup(database, 2000)
            ways: dict[str, Way] = {"sqlalchemy": _sqlalchemy, "update_rows": update_rows}
            for name, stmt, rows in (("order_views", _VIEW, view_rows), ("sagas", _SAGA, saga_rows)):
                for way in ways.values():  # warm: statements compiled, pages cached
                    await _round(database, way, stmt, rows, size, 20)
                found: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
                for _ in range(rounds):
                    for label, way in ways.items():
                        found[label].append(await _round(database, way, stmt, rows, size, runs))
                for label, values in found.items():
                    total = ", ".join(f"{t:.1f}" for t, _ in values)
                    alone = ", ".join(f"{a:.1f}" for _, a in values)
                    print(f"{name:12} {label:12} {size}-row runs, µs a row: with its transaction {total}")
                    print(f"{'':12} {'':12} {'':14}  in the update alone {alone}")
        finally:
            await database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10, help="rows a transaction")
    parser.add_argument("--runs", type=int, default=400, help="transactions a round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each way")
    args = parser.parse_args()
    asyncio.run(_main(args.rows, args.runs, args.rounds))


if __name__ == "__main__":
    main()
