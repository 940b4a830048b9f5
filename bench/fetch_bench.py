"""The statements of the log, the inbox and the relay: SQLAlchemy's `execute` against
`kit.statements` (`fetch_rows`, `execute`, `begin`, `commit`) and `kit.upsert` (`insert_rows`,
`update_rows`, `insert_returning`), each statement as its site runs it; on SQLite, or on
PostgreSQL (asyncpg) with `--database-url` (an empty database: the bench makes its tables).

    python -m bench.fetch_bench --runs 2000 --rounds 5
    python -m bench.fetch_bench --database-url postgresql+asyncpg://postgres@127.0.0.1/bench?ssl=disable

Prints µs of CPU (`time.process_time`) per call of each statement alone, for each way and
round (the two ways alternate, so a slower spell of the machine falls on both); on PostgreSQL
also the CPU its server processes of the bench's connections spent (`/proc`, when the server
runs on this machine; in clock ticks of 10 ms, so only a round of many calls says much).
Writes run in a transaction rolled back after each call, so every call finds the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.db import Database
from pizzeria.kit.statements import begin, commit, execute, fetch_rows, scalar_one
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
        *_messaging_sites(sqlite),
    ]


def _messaging_sites(dialect: Any) -> list[Site]:
    """The inbox's, the relay's and an order's load, on either database."""
    now = datetime.now(UTC)
    claims = [{"group_id": "kitchen", "message_id": f"new-{i}", "processed_at": now} for i in range(5)]
    claim_stmt = dialect.insert(inbox).on_conflict_do_nothing().returning(inbox.c.message_id)
    mark = {"seqs": [1, 2, 3, 4, 5], "at": now}
    return [
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


def _postgres_sites() -> list[Site]:
    """The sites of a PostgreSQL order (the log is Kafka there), and a many-row update and insert."""
    now = datetime.now(UTC)
    updates = [{"order_id": i, "status": "preparing", "version": 4} for i in _ORDER_IDS * 2]
    update = orders.update().where(orders.c.id == sa.bindparam("order_id"))
    rows = [
        {"id": f"new-{i}", "topic": "orders.events", "key": f"k{i}", "headers": _HEADERS, "payload": b"{}"}
        | {"created_at": now}
        for i in range(3)
    ]
    return [
        *_messaging_sites(postgresql),
        Site("update_rows 10", True, lambda c: c.execute(update, updates), lambda c: update_rows(c, update, updates)),
        Site("insert_rows 3", True, lambda c: c.execute(outbox.insert(), rows), lambda c: insert_rows(c, outbox, rows)),
    ]


_LOADS = (orders_repository._ORDERS_FOR_UPDATE, orders_repository._HISTORY_LAST)


async def _load_orders(conn: AsyncConnection) -> Any:
    """An order run's load: the orders and the number of the last history entry of each (`load_many`)."""
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
        for topic in _TOPICS if not database.is_postgres else ():
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


async def _round(database: Database, site: Site, call: Call, runs: int) -> tuple[float, float | None]:
    """µs of CPU per call of the statement alone; and of the server's (PostgreSQL), per call of
    the whole round (its BEGIN and ROLLBACK too)."""
    spent = 0.0
    server = await _server_cpu(database)
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
    return spent / runs * 1e6, await _per_call(database, server, runs)


async def _server_cpu(database: Database) -> float | None:
    """Seconds of CPU the server processes of this database's sessions have spent (`/proc`),
    None where that cannot be read (SQLite, or a server elsewhere)."""
    if not database.is_postgres:
        return None
    sessions = sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    async with database.read() as conn:
        pids = [r[0] for r in await conn.execute(sessions)]
    return _process_cpu(pids)


def _process_cpu(pids: list[int]) -> float | None:
    """Seconds of CPU of these processes of this machine (user and system), None if one is not."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def _per_call(database: Database, before: float | None, runs: int) -> float | None:
    after = await _server_cpu(database) if before is not None else None
    return None if before is None or after is None else (after - before) / runs * 1e6


async def _transaction_round(
    database: Database, direct: bool, runs: int, statement: bool
) -> tuple[float, float | None]:
    """µs of CPU per write transaction begun and committed (as `Database.begin_write` and
    `transaction` do), empty or with one statement (its BEGIN goes with it on PostgreSQL)."""
    spent = 0.0
    server = await _server_cpu(database)
    count = sa.select(sa.func.count()).select_from(outbox)
    for _ in range(runs):
        conn = await database.writer.connect()
        try:
            before = time.process_time()
            if direct:
                await begin(conn)
                if statement:
                    await fetch_rows(conn, count)
                await commit(conn)
            else:
                await conn.begin()
                if statement:
                    await conn.execute(count)
                await conn.commit()
            spent += time.process_time() - before
        finally:
            await conn.close()
    return spent / runs * 1e6, await _per_call(database, server, runs)


async def _begin_round(database: Database, direct: bool, runs: int) -> tuple[float, None]:
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
    return spent / runs * 1e6, None


Found = dict[str, list[tuple[float, float | None]]]


async def _main(url: str | None, runs: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        database = Database(url or f"sqlite:///{folder}/bench.db")
        try:
            await _setup(database)
            for site in _postgres_sites() if database.is_postgres else _sites():
                ways = {"sqlalchemy": site.sqlalchemy, "direct": site.direct}
                for way in ways.values():  # warm: statements compiled, plans made
                    await _round(database, site, way, 50)
                found: Found = {w: [] for w in ways}
                for _ in range(rounds):
                    for label, way in ways.items():
                        found[label].append(await _round(database, site, way, runs))
                _print(site.name, found)
            if database.is_postgres:
                for name, statement in (("begin+commit", False), ("begin+1+commit", True)):
                    found = {"sqlalchemy": [], "direct": []}
                    for _ in range(rounds):
                        for label, values in found.items():
                            values.append(await _transaction_round(database, label == "direct", runs, statement))
                    _print(name, found)
                return
            begins: Found = {"sqlalchemy": [], "direct": []}
            for _ in range(rounds):
                for label, values in begins.items():
                    values.append(await _begin_round(database, label == "direct", runs))
            _print("begin immediate", begins)
        finally:
            await database.dispose()


def _print(name: str, found: Found) -> None:
    for label, values in found.items():
        ours = [v for v, _ in values]
        figures = ", ".join(f"{v:.1f}" for v in ours)
        line = f"{name:18} {label:11} µs a call: {figures}  (min {min(ours):.1f})"
        server = [v for _, v in values if v is not None]
        if server:
            line += f"  server: {', '.join(f'{v:.0f}' for v in server)}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000, help="calls a round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each way")
    parser.add_argument("--database-url", help="a PostgreSQL database (asyncpg) instead of a SQLite file")
    args = parser.parse_args()
    asyncio.run(_main(args.database_url, args.runs, args.rounds))


if __name__ == "__main__":
    main()
