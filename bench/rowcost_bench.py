"""What a written row costs, and whether the way it is written changes that: rows shaped as the
audit log's (`audit_log` as declared: its key, its unique message id and four indexes, two of
them partial; JSON data; the most written table, ~20 rows an order)
inserted in transactions as a consumer's run writes them.

- SQLite: the pragmas the services open their databases with (WAL, `synchronous=NORMAL`)
  against the same with a memory map (`mmap_size`), a larger page cache (`cache_size`) and
  fewer checkpoints (`wal_autocheckpoint`), one at a time and all together; and the indexes of
  a user's entries as declared against the whole `user_id` index they replaced and none at all.
- SQLite, the small rows an order writes several of under a key of its own (an order's
  history, the kitchen's reservations: a UUID and a number or a name): the table as declared
  (SQLite's rowid table beside an index of its key) against the same `WITHOUT ROWID` (one
  B-tree, the rows in the key's order).
- PostgreSQL: asyncpg's executemany of a one-row INSERT (what `kit.upsert.insert_rows` runs)
  against one `INSERT .. SELECT FROM unnest(<one array a column>)` for the whole run, counting
  the server backend's CPU (`/proc/<pid>/stat`) and this process's.

    python -m bench.rowcost_bench [--rows 30000] [--run 50] [--rounds 3] [--skip-postgres]

PostgreSQL is `PIZZERIA_TEST_PG` (default postgresql://postgres@127.0.0.1:5432/postgres, as
the tests); the table is made and dropped there. Prints µs of CPU per row for each way and
round (the ways alternate, so a slower spell of the machine falls on each)."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from bench.stats import process_cpu_s
from pizzeria.services.audit.tables import audit_log
from pizzeria.services.kitchen.tables import reservations
from pizzeria.services.orders.tables import order_history

COLUMNS = [c.name for c in audit_log.c if c.name != "seq"]
PRAGMAS = {
    "as the services": [],
    "mmap 256 MB": ["mmap_size=268435456"],
    "cache 32 MB": ["cache_size=-32000"],
    "checkpoint 10k": ["wal_autocheckpoint=10000"],
    "all three": ["mmap_size=268435456", "cache_size=-32000", "wal_autocheckpoint=10000"],
}


class Rows:
    """Audit-shaped rows: ids increasing (UUIDv7-like, as the system's), a customer among 5,000
    on about half of them, a person acting on one in a hundred."""

    def __init__(self) -> None:
        self.n = 0
        self.rng = random.Random(7)

    def take(self, count: int) -> list[tuple[Any, ...]]:
        now = datetime.now(UTC)
        out = []
        for _ in range(count):
            self.n += 1
            order = f"{(1 << 120) + self.n * 7919:032x}"
            data = {"order_id": order, "status": "baking", "reason": None, "note": "x" * 200}
            message = (f"{self.n:032x}", "orders.events", "pizzeria.orders.OrderStatusChanged.v1", "/pizzeria/orders")
            # about half of an order's messages name its customer; a person acts in few
            customer = f"customer-{self.rng.randrange(5000)}" if self.rng.random() < 0.55 else None
            actor = "staff-1" if self.rng.random() < 0.01 else None
            about = (order, order, customer, actor, order, f"{self.n - 1:032x}")
            out.append((*message, *about, f"{self.rng.getrandbits(128):032x}", now, now, orjson.dumps(data).decode()))
        return out


#: The audit log's user indexes, as declared and as they were: what each costs a row (SQLite).
USER_INDEXES = {
    "as declared": None,
    "user index whole": "CREATE INDEX ix_audit_user ON {t} (user_id, seq)",  # before migration 0003
    "no user, no actor": "",
}


def ddl(dialect: Any, name: str, user_index: str | None = None) -> list[str]:
    """The table and its indexes; `user_index` replaces the user and actor indexes."""
    table = audit_log.to_metadata(sa.MetaData(), name=name)
    mine = [i for i in table.indexes if user_index is None or i.name not in ("ix_audit_user", "ix_audit_actor")]
    return (
        [str(CreateTable(table).compile(dialect=dialect))]
        + [str(CreateIndex(i).compile(dialect=dialect)) for i in mine]
        + ([user_index.format(t=name)] if user_index else [])
    )


def sqlite_round(pragmas: list[str], total: int, run: int, prefill: int, user_index: str | None = None) -> float:
    with tempfile.TemporaryDirectory(prefix="pz-rowcost-") as tmp:
        db = sqlite3.connect(Path(tmp) / "audit.db", isolation_level=None)
        for pragma in ["journal_mode=WAL", "synchronous=NORMAL", *pragmas]:
            db.execute(f"PRAGMA {pragma}")
        for statement in ddl(sqlite.dialect(), "audit_log", user_index):
            db.execute(statement)
        sql = f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        rows = Rows()
        fix = [(*r[:11], r[11].isoformat(" "), r[12].isoformat(" "), r[13]) for r in rows.take(prefill)]
        for i in range(0, prefill, 1000):
            db.execute("BEGIN")
            db.executemany(sql, fix[i : i + 1000])
            db.execute("COMMIT")
        work = [(*r[:11], r[11].isoformat(" "), r[12].isoformat(" "), r[13]) for r in rows.take(total)]
        started = time.process_time()
        for i in range(0, total, run):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(sql, work[i : i + run])
            db.execute("COMMIT")
        took = time.process_time() - started
        db.close()
    return took / total * 1e6


def _history_rows(order: str, at: str) -> list[tuple[Any, ...]]:
    return [(order, seq, "baking", at, None) for seq in range(6)]


def _reservation_rows(order: str, at: str) -> list[tuple[Any, ...]]:
    return [(order, name, 2, "held", at) for name in ("dough", "sauce", "cheese", "ham", "basil", "olives", "onion")]


#: Tables keyed by an order and something of it, with the rows one order gives them.
KEYED = {"order history": (order_history, _history_rows), "reservations": (reservations, _reservation_rows)}


def keyed_round(table: sa.Table, rows_of: Any, without_rowid: bool, orders: int, prefill: int) -> float:
    """µs a row written into `table` (as declared, or `WITHOUT ROWID`), two orders' rows a
    transaction as a consumer's run under load writes them."""
    create = str(CreateTable(table).compile(dialect=sqlite.dialect())).rstrip() + (
        " WITHOUT ROWID" if without_rowid else ""
    )
    sql = f"INSERT INTO {table.name} VALUES ({', '.join('?' * len(table.c))})"
    at = datetime.now(UTC).isoformat(" ")[:-6]
    serial = iter(range(1 << 40))

    def order() -> str:  # increasing, as UUIDv7s are
        return f"{(1 << 120) + next(serial) * 7919:032x}"

    with tempfile.TemporaryDirectory(prefix="pz-rowcost-") as tmp:
        db = sqlite3.connect(Path(tmp) / "keyed.db", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
            db.execute(f"PRAGMA {pragma}")
        db.execute(create)
        db.execute("BEGIN")
        db.executemany(sql, [r for _ in range(prefill) for r in rows_of(order(), at)])
        db.execute("COMMIT")
        work = [rows_of(order(), at) + rows_of(order(), at) for _ in range(orders // 2)]
        started = time.process_time()
        for part in work:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(sql, part)
            db.execute("COMMIT")
        took = time.process_time() - started
        db.close()
    return took / sum(len(p) for p in work) * 1e6


async def postgres_rounds(total: int, run: int, rounds: int, prefill: int) -> None:
    dsn = os.environ.get("PIZZERIA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    conn = await asyncpg.connect(dsn)
    name = f"rowcost_{os.getpid()}"
    try:
        for statement in ddl(postgresql.dialect(), name):
            await conn.execute(statement)
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        one = (
            f"INSERT INTO {name} ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))})"
            " ON CONFLICT DO NOTHING"
        )
        types = [
            "timestamptz" if c in ("occurred_at", "recorded_at") else "jsonb" if c == "data" else "text"
            for c in COLUMNS
        ]
        arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        unnest = f"INSERT INTO {name} ({', '.join(COLUMNS)}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING"
        rows = Rows()
        for i in range(0, prefill, 1000):
            async with conn.transaction():
                await conn.executemany(one, rows.take(min(1000, prefill - i)))
        for n in range(rounds):
            for way in ("executemany", "unnest"):
                work = rows.take(total)
                server, client = process_cpu_s(pid), time.process_time()
                for i in range(0, total, run):
                    part = work[i : i + run]
                    async with conn.transaction():
                        if way == "executemany":
                            await conn.executemany(one, part)
                        else:
                            await conn.execute(unnest, *(list(column) for column in zip(*part, strict=True)))
                server, client = process_cpu_s(pid) - server, time.process_time() - client
                print(
                    f"PostgreSQL  {way:12s} round {n + 1}: server {server / total * 1e6:6.1f} µs a row, "
                    f"this process {client / total * 1e6:6.1f}",
                    flush=True,
                )
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=30000, help="rows written per way and round")
    parser.add_argument("--run", type=int, default=50, help="rows per transaction")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefill", type=int, default=100000, help="rows in the table before")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    for n in range(args.rounds):
        for label, pragmas in PRAGMAS.items():
            took = sqlite_round(pragmas, args.rows, args.run, args.prefill)
            print(f"SQLite      {label:16s} round {n + 1}: {took:6.1f} µs a row", flush=True)
        for label, user_index in USER_INDEXES.items():
            took = sqlite_round([], args.rows, args.run, args.prefill, user_index)
            print(f"SQLite      {label:17s} round {n + 1}: {took:6.1f} µs a row", flush=True)
        for label, (table, rows_of) in KEYED.items():
            for without_rowid in (False, True):
                took = keyed_round(table, rows_of, without_rowid, 2000, args.prefill // 5)
                way = "WITHOUT ROWID" if without_rowid else "as declared"
                print(f"SQLite      {label}, {way:13s} round {n + 1}: {took:6.1f} µs a row", flush=True)
    if not args.skip_postgres:
        asyncio.run(postgres_rounds(args.rows, args.run, args.rounds, args.prefill))


if __name__ == "__main__":
    main()
