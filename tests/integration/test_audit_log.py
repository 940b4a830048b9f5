"""The audit log is append-only in the database itself (SQLite and PostgreSQL): an entry can be
added, never changed or removed; a message recorded twice is there once; data no store can
keep (NUL in its text) is refused at once, for the dead letters, not tried again and again; and
a user's entries are found through indexes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pizzeria.kit.db import Database
from pizzeria.kit.migrations import upgrade
from pizzeria.kit.upsert import insert_ignore
from pizzeria.messaging.consumer import Incoming, PermanentError
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.audit.app import MIGRATIONS
from pizzeria.services.audit.handlers import build_handlers, entry, query
from pizzeria.services.audit.tables import audit_log
from tests.support.postgres import create_database, drop_database


@pytest.fixture(params=["sqlite", "postgres"])
async def audit_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite:///{tmp_path}/audit.db" if request.param == "sqlite" else await create_database()
    await upgrade(url, [MIGRATIONS])
    database = Database(url, pool_size=2)
    try:
        yield database
    finally:
        await database.dispose()
        if request.param == "postgres":
            await drop_database(url)


def envelope() -> Envelope:
    return Envelope(
        id="m-1",
        source="/pizzeria/orders",
        type="pizzeria.orders.OrderPlaced.v1",
        data=b'{"order_id": "o-1", "customer_id": "c-1"}',
        subject="o-1",
    )


async def test_entries_are_added_once_and_never_changed_or_removed(audit_db: Database) -> None:
    row = entry(envelope(), {"order_id": "o-1", "customer_id": "c-1"})
    for _ in range(2):
        async with audit_db.transaction() as conn:
            await conn.execute(insert_ignore(conn, audit_log), row)
    async with audit_db.read() as conn:
        [stored] = (await conn.execute(sa.select(audit_log))).all()
    assert (stored.order_id, stored.user_id, stored.topic) == ("o-1", "c-1", "orders.events")
    for change in (audit_log.update().values(user_id="someone-else"), audit_log.delete()):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            async with audit_db.transaction() as conn:
                await conn.execute(change)
    async with audit_db.read() as conn:
        assert (await conn.execute(sa.select(audit_log.c.user_id))).scalars().all() == ["c-1"]


async def test_data_with_nul_in_its_text_is_refused_at_once_and_an_escaped_one_kept(audit_db: Database) -> None:
    route = build_handlers().get("pizzeria.orders.OrderPlaced.v1")
    assert route is not None
    assert route.batch is not None
    batch = route.batch

    async def record(message_id: str, data: bytes) -> None:
        envelope = Envelope(id=message_id, source="/forged", type="pizzeria.orders.OrderPlaced.v1", data=data)
        async with UnitOfWork(audit_db, source="/pizzeria/audit") as uow:
            await batch([Incoming(None, envelope)], uow)
            await uow.commit()

    for data in (b'{"order_id": "o\\u0000"}', b'{"lines": [{"name": "\\u0000"}]}', b'{"\\u0000": 1}'):
        with pytest.raises(PermanentError, match="NUL"):
            await record("m-nul", data)
    await record("m-escaped", b'{"order_id": "o\\\\u0000"}')  # a backslash, then "u0000": text like any
    async with audit_db.read() as conn:
        [stored] = (await conn.execute(sa.select(audit_log.c.message_id, audit_log.c.data))).all()
    assert (stored.message_id, stored.data) == ("m-escaped", {"order_id": "o\\u0000"})


async def test_a_users_entries_are_found_through_indexes_not_by_reading_the_log(audit_db: Database) -> None:
    """`user_id` = entries about the user (a customer's order) or done by them (an actor): both
    sides have an index, so the filter is answered from them (an OR is served by indexes only
    when each of its sides has one); every matching entry is found, in order."""
    who = [("c-1", None), ("c-2", None), (None, "c-1"), ("c-2", "c-1"), (None, None), ("c-1", "c-1"), (None, "s-9")]
    rows = []
    for n, (user, actor) in enumerate(who):
        data = {"order_id": f"o-{n}"} | ({"customer_id": user} if user else {}) | ({"actor": actor} if actor else {})
        rows.append(
            entry(
                Envelope(id=f"m-{n}", source="/pizzeria/orders", type="pizzeria.orders.OrderPlaced.v1", data=b"{}"),
                data,
            )
        )
    async with audit_db.transaction() as conn:
        await conn.execute(audit_log.insert(), rows)
    stmt = query(order_id=None, user_id="c-1", type_=None, since=None, until=None, after=None, limit=100)
    async with audit_db.read() as conn:
        found = [r.message_id for r in await conn.execute(stmt)]
    assert found == ["m-0", "m-2", "m-3", "m-5"]
    text = str(stmt.compile(dialect=audit_db.writer.dialect, compile_kwargs={"literal_binds": True}))
    async with audit_db.transaction() as conn:
        if audit_db.is_postgres:  # (a table this small is read whole whatever its indexes)
            await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(r[0] for r in await conn.execute(sa.text(f"EXPLAIN {text}")))
        else:
            plan = "\n".join(r[-1] for r in await conn.execute(sa.text(f"EXPLAIN QUERY PLAN {text}")))
    assert "ix_audit_user" in plan, plan
    assert "ix_audit_actor" in plan, plan
