"""The audit log is append-only in the database itself (SQLite and PostgreSQL): an entry can be
added, never changed or removed; a message recorded twice is there once; data no store can
keep (NUL in its text) is refused at once, for the dead letters, not tried again and again; and
a user's entries are found through indexes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID, uuid4

import orjson
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from pizzeria.contracts.orders import Contact, OrderLine, OrderPlaced, OrderStatus, OrderStatusChanged, PaymentMethod
from pizzeria.contracts.payments import PaymentCompleted
from pizzeria.kit.db import Database
from pizzeria.kit.migrations import upgrade
from pizzeria.kit.upsert import insert_ignore
from pizzeria.messaging.consumer import Incoming, PermanentError
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.audit import analytics
from pizzeria.services.audit.app import MIGRATIONS
from pizzeria.services.audit.handlers import build_handlers, entry, query
from pizzeria.services.audit.tables import analytics_orders, audit_log
from tests.integration.services import embedded_settings
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


AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
PLACED = OrderPlaced.type_name()


def fact(message_id: str, message: Message) -> Incoming:
    """`message` as the audit group gets it: undecoded, its data the bytes that were sent."""
    return Incoming(None, dataclasses.replace(Envelope.wrap(message, source="/pizzeria/test"), id=message_id))


def placed(order_id: UUID, *, currency: str = "EUR", total: int = 2400) -> OrderPlaced:
    line = OrderLine(menu_item_id=uuid4(), name="Margherita", size="m", quantity=2, unit_price=1200)
    return OrderPlaced(
        order_id=order_id,
        customer_id="c-1",
        items=[line],
        total=total,
        currency=currency,
        payment_method=PaymentMethod(token="tok_visa"),
        delivery_address="1 Main St",
        contact=Contact(email="a@example.com"),
        placed_at=AT,
    )


def paid(order_id: UUID) -> PaymentCompleted:
    return PaymentCompleted(
        payment_id=uuid4(), order_id=order_id, amount=2400, currency="EUR", provider_charge_id="ch-1", at=AT
    )


def changed(order_id: UUID, status: OrderStatus, reason: str | None = None, at: datetime = AT) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id=order_id, customer_id="c-1", status=status, previous_status=OrderStatus.PENDING, reason=reason, at=at
    )


async def test_the_analytics_are_kept_from_the_audit_logs_runs_once_whatever_comes_twice(audit_db: Database) -> None:
    """The audit group keeps the analytics read model in the log's own transactions: a run's
    facts fill their orders' rows; the same run again (a redelivery: no inbox) changes nothing."""
    delivered, cancelled = uuid4(), uuid4()
    run = [
        fact("m-1", placed(delivered)),
        fact("m-2", paid(delivered)),
        fact("m-3", placed(cancelled, total=900)),
        fact("m-4", changed(cancelled, OrderStatus.CANCELLED, "payment_failed", AT + timedelta(minutes=1))),
        fact("m-5", changed(delivered, OrderStatus.DELIVERED, at=AT + timedelta(minutes=30))),
    ]
    for _ in range(2):
        await handle(audit_db, run)
    async with audit_db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(audit_log))).scalar() == 5
        rows = {r.order_id: r for r in await conn.execute(sa.select(analytics_orders))}
    assert set(rows) == {str(delivered), str(cancelled)}
    first, second = rows[str(delivered)], rows[str(cancelled)]
    assert (first.status, first.total, first.payment_outcome, first.delivered_at) == (
        "delivered",
        2400,
        "completed",
        AT + timedelta(minutes=30),
    )
    assert first.items == [{"name": "Margherita", "quantity": 2}]
    assert (second.status, second.total, second.cancel_reason) == ("cancelled", 900, "payment_failed")


async def test_an_orders_facts_in_any_order_and_again_make_the_row_they_make_in_order(audit_db: Database) -> None:
    """No inbox for the analytics: the facts of one order, each in a run of its own in reverse
    (its end, its payment, its placement), then its placement again after them (a redelivery),
    leave the row that the same facts in order, once, leave for another order."""
    in_order, reversed_ = uuid4(), uuid4()

    def story(order_id: UUID) -> list[Message]:
        return [placed(order_id), paid(order_id), changed(order_id, OrderStatus.DELIVERED, at=AT + timedelta(hours=1))]

    await handle(audit_db, [fact(f"a-{n}", f) for n, f in enumerate(story(in_order))])
    later = story(reversed_)
    for n in reversed(range(len(later))):
        await handle(audit_db, [fact(f"b-{n}", later[n])])
    await handle(audit_db, [fact("b-0", later[0])])
    async with audit_db.read() as conn:
        rows = {r.order_id: r._asdict() for r in await conn.execute(sa.select(analytics_orders))}
    first, second = (rows[str(o)] | {"order_id": None} for o in (in_order, reversed_))
    assert first == second
    assert (first["status"], first["payment_outcome"], first["total"]) == ("delivered", "completed", 2400)


async def test_a_fact_the_analytics_cannot_hold_is_kept_in_the_log_and_its_neighbours_counted(
    audit_db: Database,
) -> None:
    """Facts their schemas take but the read model's columns cannot hold (a currency of four
    letters, a reason of 65 characters, a time before year 1 once in UTC, a total past 64
    bits), another version of a fact and one its schema refuses, in the middle of a run: the
    log keeps every message, the analytics leave those and take the rest (a statement with them
    would fail, and the log's entries with it)."""
    good, bad = uuid4(), uuid4()
    run = [
        fact("m-1", placed(good)),
        fact("m-2", placed(bad, currency="EURO")),
        fact("m-3", changed(bad, OrderStatus.CANCELLED, "x" * 65)),
        fact("m-4", changed(bad, OrderStatus.DELIVERED, at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))),
        Incoming(None, Envelope(id="m-5", source="/forged", type="pizzeria.orders.OrderPlaced.v9", data=b"{}")),
        Incoming(None, Envelope(id="m-7", source="/forged", type=PLACED, data=b'{"order_id": "not an id"}')),
        fact("m-8", placed(bad, total=2**70)),
        fact("m-6", changed(good, OrderStatus.DELIVERED, at=AT + timedelta(minutes=20))),
    ]
    names = ("pizzeria.orders.OrderPlaced", "pizzeria.orders.OrderStatusChanged")
    before = [unread(name) for name in names]
    await handle(audit_db, run)
    async with audit_db.read() as conn:
        logged = (await conn.execute(sa.select(audit_log.c.message_id).order_by(audit_log.c.seq))).scalars().all()
        rows = {r.order_id: r for r in await conn.execute(sa.select(analytics_orders))}
    assert logged == ["m-1", "m-2", "m-3", "m-4", "m-5", "m-7", "m-8", "m-6"]
    assert set(rows) == {str(good)}
    assert (rows[str(good)].status, rows[str(good)].currency) == ("delivered", "EUR")
    assert [unread(name) - count for name, count in zip(names, before, strict=True)] == [4, 2]


def unread(name: str) -> float:
    """How many facts of type `name` (without its version) the analytics left so far."""
    return REGISTRY.get_sample_value("pizzeria_analytics_facts_unread_total", {"type": name}) or 0.0


async def test_the_analytics_are_rebuilt_from_the_log_as_they_were(audit_db: Database) -> None:
    """`pizzeria projections rebuild analytics`: every fact in the log applied again, in chunks;
    an order the read model lost comes back as it was, the others stay as they are."""
    orders = [uuid4() for _ in range(5)]
    run = [fact(f"p-{n}", placed(o, total=100 * (n + 1))) for n, o in enumerate(orders)]
    run += [
        fact(f"d-{n}", changed(o, OrderStatus.DELIVERED, at=AT + timedelta(minutes=n))) for n, o in enumerate(orders)
    ]
    await handle(audit_db, run)
    async with audit_db.read() as conn:
        before = sorted(tuple(r) for r in await conn.execute(sa.select(analytics_orders)))
    async with audit_db.transaction() as conn:
        lost = [str(o) for o in orders[1:3]]
        await conn.execute(analytics_orders.delete().where(analytics_orders.c.order_id.in_(lost)))
    assert await analytics.rebuild(audit_db, chunk=3) == 10
    async with audit_db.read() as conn:
        after = sorted(tuple(r) for r in await conn.execute(sa.select(analytics_orders)))
    assert after == before
    assert len(after) == 5


async def handle(database: Database, run: list[Incoming]) -> None:
    """`run` through the audit group's handler, in one transaction, as its consumer hands it."""
    route = build_handlers().get("pizzeria.orders.OrderPlaced.v1")
    assert route is not None
    assert route.batch is not None
    async with UnitOfWork(database, source="/pizzeria/audit") as uow:
        await route.batch(run, uow)
        await uow.commit()


async def test_the_command_rebuilds_the_analytics_of_a_services_database(tmp_path: Path) -> None:
    """`pizzeria projections rebuild analytics` and `status analytics`, as an operator runs them
    against the audit service's database (here the embedded one under `PIZZERIA_VAR_DIR`)."""
    env = {**os.environ, "PIZZERIA_VAR_DIR": str(tmp_path)}
    url = embedded_settings(tmp_path).database_url_for("audit")
    await upgrade(url, [MESSAGING_MIGRATIONS, MIGRATIONS])
    database = Database(url, pool_size=1)
    try:
        orders = [uuid4() for _ in range(3)]
        await handle(database, [fact(f"p-{n}", placed(o)) for n, o in enumerate(orders)])
        async with database.transaction() as conn:
            await conn.execute(analytics_orders.delete())
    finally:
        await database.dispose()

    def pizzeria(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pizzeria", "projections", *args, "analytics"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert orjson.loads(pizzeria("status"))["orders"] == 0
    assert "applied the 3 facts" in pizzeria("rebuild")
    assert orjson.loads(pizzeria("status"))["orders"] == 3
