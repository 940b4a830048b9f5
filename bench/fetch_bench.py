"""The statements of the log, the inbox and the relay on SQLite: SQLAlchemy's `execute` against
`kit.statements` (`fetch_rows`, `execute`, `begin`) and `kit.upsert` (`insert_rows`,
`update_rows`, `insert_returning`), each statement as its site runs it.

    python -m bench.fetch_bench --runs 2000 --rounds 5

Prints µs of CPU (`time.process_time`) per call of each statement alone, for each way and
round (the two ways alternate, so a slower spell of the machine falls on both). Writes run in
a transaction rolled back after each call, so every call finds the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.db import Database
from pizzeria.kit.statements import begin, execute, fetch_rows, scalar_one
from pizzeria.kit.upsert import insert_returning, insert_rows, update_rows
from pizzeria.messaging import sqllog
from pizzeria.messaging.inbox import _NEW
from pizzeria.messaging.relay import _MARK, _PENDING
from pizzeria.messaging.tables import inbox, outbox
from pizzeria.messaging.tables import metadata as messaging
from pizzeria.services.orders import repository as orders_repository
from pizzeria.services.orders.tables import order_history, order_lines, orders

_ORDER_IDS = [uuid.UUID(int=i + 1) for i in range(5)]

_TOPICS = ["orders.events", "orders.commands", "payments.events"]
_HEADERS = orjson.dumps({f"ce_{k}": "x" * 20 for k in ("id", "type", "source", "time", "traceparent")}).decode()

Call = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass
class Site:
    """One statement as its site runs it: SQLAlchemy's way and the driver's."""

    name: str
    write: bool
    sqlalchemy: Call
    direct: Call


def _sites() -> list[Site]:
    now = datetime.now(UTC)
    names = {f"t{i}": t for i, t in enumerate(_TOPICS)}
    ends = sqllog._ends(len(_TOPICS))
    read = sqllog._read(3)
    wanted: dict[str, Any] = {}
    for i in range(3):
        wanted |= {f"t{i}": _TOPICS[i], f"p{i}": 1, f"o{i}": 10, f"n{i}": 5}
    take = {"t": "orders.events", "p": 1, "n": 3}
    records = [
        {
            "topic": "orders.events",
            "partition": 2,
            "offset": 10_000 + i,
            "key": f"order-{i}",
            "value": b"{" + b"x" * 300 + b"}",
            "headers": _HEADERS,
            "timestamp_ms": 1,
        }
        for i in range(3)
    ]
    offsets = [{"g": "kitchen", "m": "member", "now": 0.0, "t": "orders.events", "p": 1, "c": 42}]
    commit = sqllog._commit_offsets("sqlite")
    claims = [{"group_id": "kitchen", "message_id": f"new-{i}", "processed_at": now} for i in range(5)]
    claim_stmt = sa.dialects.sqlite.insert(inbox).on_conflict_do_nothing().returning(inbox.c.message_id)
    mark = {"seqs": [1, 2, 3, 4, 5], "at": now}
    return [
        Site("log ends", False, lambda c: _all(c, ends, names), lambda c: fetch_rows(c, ends, names)),
        Site("log read 3x5", False, lambda c: _all(c, read, wanted), lambda c: fetch_rows(c, read, wanted)),
        Site(
            "log take offsets",
            True,
            lambda c: _scalar(c, sqllog._TAKE_OFFSETS, take),
            lambda c: _scalar_direct(c, sqllog._TAKE_OFFSETS, take),
        ),
        Site(
            "log insert 3",
            True,
            lambda c: c.execute(sqllog.records_t.insert(), records),
            lambda c: insert_rows(c, sqllog.records_t, records),
        ),
        Site("log offsets", True, lambda c: c.execute(commit, offsets), lambda c: update_rows(c, commit, offsets)),
        Site(
            "inbox claim 5",
            True,
            lambda c: _all(c, claim_stmt, claims),
            lambda c: insert_returning(c, inbox, claims, _NEW, ignore=True),
        ),
        Site(
            "relay pending",
            False,
            lambda c: _all(c, _PENDING, {"n": 505}),
            lambda c: fetch_rows(c, _PENDING, {"n": 505}),
        ),
        Site("relay mark 5", True, lambda c: c.execute(_MARK, mark), lambda c: execute(c, _MARK, mark)),
        Site("orders load 5", True, _load_orders, _load_orders_direct),
    ]


_LOADS = (orders_repository._ORDERS_FOR_UPDATE, orders_repository._LINES, orders_repository._HISTORY)


async def _load_orders(conn: AsyncConnection) -> Any:
    """An order run's load: the orders, their lines and their history (`load_many`)."""
    return [(await conn.execute(stmt, {"ids": _ORDER_IDS})).all() for stmt in _LOADS]


async def _load_orders_direct(conn: AsyncConnection) -> Any:
    return [await fetch_rows(conn, stmt, {"ids": _ORDER_IDS}) for stmt in _LOADS]


async def _all(conn: AsyncConnection, stmt: Any, params: Any) -> Any:
    return (await conn.execute(stmt, params)).all()


async def _scalar(conn: AsyncConnection, stmt: Any, params: Any) -> Any:
    return (await conn.execute(stmt, params)).scalar_one()


async def _scalar_direct(conn: AsyncConnection, stmt: Any, params: Any) -> Any:
    return scalar_one(await fetch_rows(conn, stmt, params))


async def _setup(database: Database) -> None:
    now = datetime.now(UTC)
    async with database.transaction() as conn:
        await conn.run_sync(sqllog.metadata.create_all)
        await conn.run_sync(messaging.create_all)
        for topic in _TOPICS:
            await conn.execute(
                sqllog.partitions_t.insert(), [{"topic": topic, "partition": p, "next_offset": 40} for p in range(3)]
            )
            await insert_rows(
                conn,
                sqllog.records_t,
                [
                    {
                        "topic": topic,
                        "partition": p,
                        "offset": o,
                        "key": f"order-{o}",
                        "value": b"{" + b"x" * 300 + b"}",
                        "headers": _HEADERS,
                        "timestamp_ms": 1,
                    }
                    for p in range(3)
                    for o in range(40)
                ],
            )
        await conn.execute(
            sqllog.leases_t.insert().values(
                group_id="kitchen", topic="orders.events", partition=1, member_id="member", expires_at=1e12
            )
        )
        await conn.run_sync(orders.metadata.create_all)
        await insert_rows(
            conn,
            orders,
            [
                {
                    "id": i,
                    "customer_id": "customer",
                    "status": "paid",
                    "payment_status": "completed",
                    "payment_id": uuid.uuid4(),
                    "currency": "EUR",
                    "total": 2200,
                    "payment_token": "tok_visa",
                    "delivery_address": "1 Main Street",
                    "email": "a@example.com",
                    "phone": None,
                    "cancel_reason": None,
                    "cancel_requested": False,
                    "created_at": now,
                    "updated_at": now,
                    "version": 3,
                }
                for i in _ORDER_IDS
            ],
        )
        lines = [
            {
                "order_id": i,
                "line_no": n,
                "menu_item_id": uuid.uuid4(),
                "name": "Margherita",
                "size": "m",
                "quantity": 1,
            }
            | {"unit_price": 1100}
            for i in _ORDER_IDS
            for n in range(2)
        ]
        await insert_rows(conn, order_lines, lines)
        steps = [
            {"order_id": i, "seq": n, "status": s, "at": now, "reason": None}
            for i in _ORDER_IDS
            for n, s in enumerate(("pending", "paid"))
        ]
        await insert_rows(conn, order_history, steps)
        await insert_rows(
            conn,
            outbox,
            [
                {
                    "id": f"m-{i}",
                    "topic": "orders.events",
                    "key": f"k{i}",
                    "headers": _HEADERS,
                    "payload": b"{}",
                    "created_at": now,
                }
                for i in range(5)
            ],
        )


async def _round(database: Database, site: Site, call: Call, runs: int) -> float:
    """µs of CPU per call of the statement alone."""
    spent = 0.0
    for _ in range(runs):
        if site.write:
            conn = await database.begin_write()
            try:
                before = time.process_time()
                await call(conn)
                spent += time.process_time() - before
            finally:
                await conn.rollback()
                await conn.close()
        else:
            async with database.read(snapshot=False) as conn:
                before = time.process_time()
                await call(conn)
                spent += time.process_time() - before
    return spent / runs * 1e6


async def _begin_round(database: Database, direct: bool, runs: int) -> float:
    """µs of CPU per `BEGIN IMMEDIATE` of a write transaction (as `Database.begin_write`)."""
    spent = 0.0
    for _ in range(runs):
        conn = await database.writer.connect()
        before = time.process_time()
        if direct:
            await begin(conn, "BEGIN IMMEDIATE")
        else:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        spent += time.process_time() - before
        await conn.rollback()
        await conn.close()
    return spent / runs * 1e6


async def _main(runs: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite:///{folder}/bench.db")
        try:
            await _setup(database)
            for site in _sites():
                ways = {"sqlalchemy": site.sqlalchemy, "direct": site.direct}
                for way in ways.values():  # warm: statements compiled, plans made
                    await _round(database, site, way, 50)
                found: dict[str, list[float]] = {w: [] for w in ways}
                for _ in range(rounds):
                    for label, way in ways.items():
                        found[label].append(await _round(database, site, way, runs))
                _print(site.name, found)
            begins: dict[str, list[float]] = {"sqlalchemy": [], "direct": []}
            for _ in range(rounds):
                for label, values in begins.items():
                    values.append(await _begin_round(database, label == "direct", runs))
            _print("begin immediate", begins)
        finally:
            await database.dispose()


def _print(name: str, found: dict[str, list[float]]) -> None:
    for label, values in found.items():
        figures = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:18} {label:11} µs a call: {figures}  (min {min(values):.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000, help="calls a round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each way")
    args = parser.parse_args()
    asyncio.run(_main(args.runs, args.rounds))


if __name__ == "__main__":
    main()
