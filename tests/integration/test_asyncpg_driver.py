"""On PostgreSQL the planned statements run on asyncpg directly (`kit.asyncpg_driver`), in
SQLAlchemy's transaction: what they write is part of it and goes with its rollback, what they
read sees its snapshot, refusals are SQLAlchemy's (a failed transaction stays failed, a lost
connection is invalidated), every statement is counted, a statement is prepared once per
connection, and COMMIT ends SQLAlchemy's transaction as its own does."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.db import Database, _sqlstate, is_outage, is_transient_error, one_of
from pizzeria.kit.statements import begin, commit, execute, fetch_rows
from pizzeria.kit.upsert import insert_returning, insert_rows, update_rows
from tests.support.polling import eventually
from tests.support.sqlvalues import databases, sqlalchemy_runs, statements

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(20), nullable=False, unique=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("price", sa.Numeric(10, 2), nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
_BY_IDS = sa.select(items.c.name, items.c.count).where(one_of(items.c.id, "ids")).order_by(items.c.name)
_ALL = sa.select(items.c.name).order_by(items.c.name)
_COUNT = sa.select(sa.func.count()).select_from(items)
_RENAME = items.update().where(items.c.id == sa.bindparam("item_id")).values(name=sa.bindparam("to"))
_SET_COUNT = items.update().where(items.c.id == sa.bindparam("item_id"))
_SLEEP = sa.select(sa.func.pg_sleep(sa.bindparam("seconds", type_=sa.Float)))


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with databases("postgresql", tmp_path, metadata, 1) as (database,):
        yield database


def _item(name: str, **values: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4(), "name": name, "count": 1, "price": None, "at": datetime.now(UTC)} | values


async def _names(database: Database) -> list[str]:
    async with database.read() as conn:
        return [r.name for r in (await conn.execute(_ALL)).all()]


async def test_a_write_on_the_driver_is_part_of_sqlalchemys_transaction(database: Database) -> None:
    """Before and after SQLAlchemy's statements, or first (its BEGIN then sent by the adapter):
    one server transaction, gone with its rollback."""
    kept = _item("kept")
    async with database.transaction() as conn:
        await insert_rows(conn, items, [kept])
    for driver_first in (True, False):
        conn = await database.begin_write()
        try:
            with sqlalchemy_runs(database) as ran:
                if driver_first:
                    await insert_rows(conn, items, [_item("a")])
                else:
                    await conn.execute(items.insert(), [_item("a")])
                txid = (await conn.execute(sa.select(sa.func.txid_current_if_assigned()))).scalar()
                assert await execute(conn, _RENAME, {"item_id": kept["id"], "to": "renamed"}) == 1
                await insert_returning(conn, items, [_item("b")], ("id",))
                assert [r.name for r in await fetch_rows(conn, _ALL)] == ["a", "b", "renamed"]
                assert (await conn.execute(sa.select(sa.func.txid_current_if_assigned()))).scalar() == txid
            assert txid is not None
            assert len(ran) == 2 + (not driver_first)  # (SQLAlchemy's own statements only)
        finally:
            await conn.rollback()
            await conn.close()
        assert await _names(database) == ["kept"]


async def test_a_read_on_the_driver_sees_the_transactions_snapshot(database: Database) -> None:
    """The isolation level set on the connection is the server transaction's, begun by the
    driver's first statement: a row committed meanwhile is not seen by either way."""
    async with database.transaction() as conn:
        await insert_rows(conn, items, [_item("a")])
    async with database.writer.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")  # noqa: PLW2901 (conn's own)
        await begin(conn)
        with sqlalchemy_runs(database) as ran:
            assert (await fetch_rows(conn, _COUNT))[0][0] == 1
        assert ran == []
        async with database.transaction() as other:
            await insert_rows(other, items, [_item("b")])
        assert (await fetch_rows(conn, _COUNT))[0][0] == 1
        assert (await conn.execute(_COUNT)).scalar() == 1
        assert (await conn.execute(sa.text("SHOW transaction_isolation"))).scalar() == "repeatable read"
        await commit(conn)
        assert not conn.in_transaction()
        assert (await fetch_rows(conn, _COUNT))[0][0] == 2  # (a snapshot of its own, SQLAlchemy's)
        await commit(conn)


Run = Callable[[AsyncConnection], Awaitable[Any]]


async def _outcome(database: Database, first: Run, then: Run | None = None) -> list[tuple[type, str]]:
    """What each of `first` and `then` (in one transaction) raised: the exception's type and
    SQLSTATE."""
    found: list[tuple[type, str]] = []
    async with database.writer.connect() as conn:
        await begin(conn)
        for run in (first, then):
            if run is None:
                continue
            with pytest.raises(sa.exc.DBAPIError) as caught:
                await run(conn)
            found.append((type(caught.value), _sqlstate(caught.value)))
        await conn.rollback()
    return found


async def test_a_refusal_is_sqlalchemys_and_leaves_the_transaction_failed(database: Database) -> None:
    """A unique violation is SQLAlchemy's `IntegrityError` with asyncpg's SQLSTATE; the next
    statement of the transaction is refused as after SQLAlchemy's own failed statement."""
    taken = _item("taken")
    async with database.transaction() as conn:
        await insert_rows(conn, items, [taken, _item("other")])
    duplicate = _item("taken")
    ways: list[tuple[Run, Run]] = [
        (lambda c: insert_rows(c, items, [duplicate]), lambda c: c.execute(items.insert(), [duplicate])),
        (
            lambda c: insert_returning(c, items, [duplicate], ("id",)),
            lambda c: c.execute(items.insert().returning(items.c.id), [duplicate]),
        ),
        (
            lambda c: execute(c, _RENAME, {"item_id": taken["id"], "to": "other"}),
            lambda c: c.execute(_RENAME, {"item_id": taken["id"], "to": "other"}),
        ),
        (
            lambda c: update_rows(c, _SET_COUNT, [{"item_id": taken["id"], "count": None}] * 2),
            lambda c: c.execute(_SET_COUNT, [{"item_id": taken["id"], "count": None}] * 2),
        ),
        (
            lambda c: fetch_rows(c, sa.select(sa.cast(sa.bindparam("x", type_=sa.String), sa.Integer)), {"x": "z"}),
            lambda c: c.execute(sa.select(sa.cast(sa.bindparam("x", type_=sa.String), sa.Integer)), {"x": "z"}),
        ),
    ]
    for ours, theirs in ways:
        after = [lambda c: fetch_rows(c, _COUNT), lambda c: c.execute(_COUNT)]
        outcomes = [await _outcome(database, run, next_) for run in (ours, theirs) for next_ in after]
        assert all(o == outcomes[0] for o in outcomes), outcomes
        assert outcomes[0][1][1] == "25P02"  # in a failed transaction
    assert (await _outcome(database, ways[0][0]))[0] == (sa.exc.IntegrityError, "23505")
    assert sorted(await _names(database)) == ["other", "taken"]


async def _backend(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.pg_backend_pid()))).scalar_one())


async def _terminate(database: Database, pid: int) -> None:
    """End the server's session `pid` and wait until it is gone."""
    async with database.read() as other:
        await other.execute(sa.select(sa.func.pg_terminate_backend(pid)))
        deadline = time.monotonic() + 10
        gone = sa.select(sa.func.count()).where(sa.text("pid = :pid")).select_from(sa.text("pg_stat_activity"))
        while (await other.execute(gone, {"pid": pid})).scalar() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("way", ["driver", "sqlalchemy"])
async def test_a_lost_connection_is_invalidated_as_sqlalchemy_does(database: Database, way: str) -> None:
    """The server ends the session mid-transaction: SQLAlchemy's invalidated connection (a
    transient error, an outage), not handed back to the pool; the next checkout connects anew."""
    conn = await database.begin_write()
    try:
        pid = await _backend(conn)
        await _terminate(database, pid)
        with pytest.raises(sa.exc.DBAPIError) as caught:
            if way == "driver":
                await fetch_rows(conn, _COUNT)
            else:
                await conn.execute(_COUNT)
        assert conn.invalidated
    finally:
        await conn.close()
    assert caught.value.connection_invalidated
    # asyncpg says "connection is closed" (InterfaceError), or, when the server's notice that it
    # ended the session reaches the protocol in the middle of the next operation, "cannot switch
    # to state" (InternalClientError): SQLAlchemy's own path gives either, and invalidates on both.
    assert isinstance(caught.value, sa.exc.InterfaceError | sa.exc.InternalError)
    assert is_transient_error(caught.value)
    assert is_outage(caught.value)
    async with database.transaction() as conn:
        assert await _backend(conn) != pid
        assert (await fetch_rows(conn, _COUNT))[0][0] == 0


_SLEEPING = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid AND query LIKE '%pg_sleep%'")


async def _until_sleeping(other: AsyncConnection, pid: int) -> None:
    """Wait (10 s at most) until the server's session `pid` runs its `pg_sleep`."""
    deadline = time.monotonic() + 10
    while not (await other.execute(_SLEEPING, {"pid": pid})).scalar() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def test_a_statement_cancelled_midway_invalidates_its_connection(database: Database) -> None:
    """As SQLAlchemy does with a task cancelled in its statement: the connection, its protocol
    midway, is not handed back to the pool."""
    conn = await database.begin_write()
    try:
        pid = await _backend(conn)
        task = asyncio.ensure_future(fetch_rows(conn, _SLEEP, {"seconds": 30}))
        async with database.read() as other:
            await _until_sleeping(other, pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert conn.invalidated
    finally:
        await conn.close()
    async with database.transaction() as conn:
        assert await _backend(conn) != pid


@pytest.mark.parametrize("way", ["driver", "sqlalchemy"])
async def test_a_statement_cancelled_midway_is_cancelled_in_the_server(database: Database, way: str) -> None:
    """As SQLAlchemy's invalidation of the connection does (a graceful close, with asyncpg's
    cancel request): the server's session ends with the task, not when the statement does,
    holding its transaction's locks and a connection until then."""
    conn = await database.begin_write()
    async with database.read() as other:
        try:
            pid = await _backend(conn)
            running = asyncio.ensure_future(
                fetch_rows(conn, _SLEEP, {"seconds": 60}) if way == "driver" else conn.execute(_SLEEP, {"seconds": 60})
            )
            await _until_sleeping(other, pid)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
        finally:
            await conn.close()
        alive = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")

        async def ended() -> bool:
            return not (await other.execute(alive, {"pid": pid})).scalar()

        await eventually(ended, "the server's session outlived the task", 10, every=0.01)


def _transactions() -> float:
    return REGISTRY.get_sample_value("pizzeria_db_transactions_total") or 0.0


async def test_each_statement_and_commit_is_counted(database: Database) -> None:
    """The bench's statements per order come from these counts, as when SQLAlchemy ran them."""
    rows = [_item(f"n{i}") for i in range(3)]
    before = statements(), _transactions()
    async with database.transaction() as conn:
        with sqlalchemy_runs(database) as ran:
            await insert_rows(conn, items, rows)
            await fetch_rows(conn, _BY_IDS, {"ids": [r["id"] for r in rows]})
            await execute(conn, _RENAME, {"item_id": rows[0]["id"], "to": "z"})
            await update_rows(conn, _SET_COUNT, [{"item_id": r["id"], "count": 5} for r in rows])
            await update_rows(conn, _SET_COUNT, [{"item_id": rows[0]["id"], "count": 6}])
            await insert_returning(conn, items, [_item("x"), _item("y")], ("id",))
    assert ran == []
    assert (statements() - before[0], _transactions() - before[1]) == (6, 1)


async def test_a_statement_is_prepared_once_per_connection(database: Database) -> None:
    """`= ANY($1)` with any number of values is one text, prepared once on the connection (the
    adapter's cache, shared with SQLAlchemy's own runs of it)."""
    rows = [_item(f"n{i}") for i in range(5)]
    async with database.transaction() as conn:
        await insert_rows(conn, items, rows)
    async with database.read() as conn:
        for some in ([], rows[:1], rows, rows[2:], []):
            found = await fetch_rows(conn, _BY_IDS, {"ids": {r["id"] for r in some}})
            assert [r.name for r in found] == sorted(r["name"] for r in some)
            assert found == (await conn.execute(_BY_IDS, {"ids": {r["id"] for r in some}})).all()
        prepared = sa.text("SELECT statement FROM pg_prepared_statements WHERE statement = :text")
        text = str(_BY_IDS.compile(dialect=conn.dialect))
        assert len((await conn.execute(prepared, {"text": text})).all()) == 1


async def test_commit_ends_sqlalchemys_transaction_as_its_own_commit(database: Database) -> None:
    async with database.writer.connect() as conn:
        for _ in range(2):
            await begin(conn)
            await insert_rows(conn, items, [_item(f"n{uuid.uuid4().hex[:8]}")])
            await commit(conn)
            assert not conn.in_transaction()
            assert conn.get_transaction() is None
        await commit(conn)  # (none begun: nothing, as SQLAlchemy's)
    assert len(await _names(database)) == 2


async def test_a_failed_commit_is_sqlalchemys(database: Database) -> None:
    """A COMMIT the server refuses (a deferred constraint): SQLAlchemy's `IntegrityError`, and its
    transaction left as after its own failed commit, to roll back."""
    async with database.transaction() as conn:
        await conn.execute(
            sa.text("CREATE TABLE later (id int, CONSTRAINT one UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)")
        )
    found = []
    for ours in (True, False):
        async with database.writer.connect() as conn:
            await begin(conn)
            await conn.execute(sa.text("INSERT INTO later VALUES (1), (1)"))
            with pytest.raises(sa.exc.IntegrityError) as caught:
                await (commit(conn) if ours else conn.commit())
            found.append((_sqlstate(caught.value), conn.in_transaction(), conn.invalidated))
            await conn.rollback()
            assert (await conn.execute(sa.text("SELECT count(*) FROM later"))).scalar() == 0
    assert found[0] == found[1] == ("23505", False, False)


async def test_what_the_driver_cannot_run_as_sqlalchemy_does_is_sqlalchemys(database: Database) -> None:
    """Outside SQLAlchemy's transaction (it begins one at its first statement), in a savepoint,
    on a connection of execution options SQLAlchemy applies: SQLAlchemy runs the statement."""
    async with database.transaction() as conn:
        await insert_rows(conn, items, [_item("a")])
    async with database.writer.connect() as conn:
        with sqlalchemy_runs(database) as ran:
            assert (await fetch_rows(conn, _COUNT))[0][0] == 1
        assert len(ran) == 1
        assert conn.in_transaction()
        async with conn.begin_nested():
            with sqlalchemy_runs(database) as ran:
                assert (await fetch_rows(conn, _COUNT))[0][0] == 1
            assert len(ran) == 1
        with sqlalchemy_runs(database) as ran:
            assert (await fetch_rows(conn, _COUNT))[0][0] == 1
        assert ran == []
        await conn.rollback()
        readonly = await conn.execution_options(postgresql_readonly=True)
        await begin(readonly)
        with sqlalchemy_runs(database) as ran:
            assert (await fetch_rows(readonly, _COUNT))[0][0] == 1
        assert len(ran) == 1
        await commit(readonly)
