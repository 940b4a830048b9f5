"""The SQLite driver that runs inline: results read when their statement runs, and statements,
commits and checkouts of an idle connection made without a greenlet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY as METRICS
from sqlalchemy.ext.asyncio import engine as async_engine

from pizzeria.kit import sqlite_driver
from pizzeria.kit.db import Database
from tests.support.polling import eventually

items = sa.Table("items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path}/driver.db", pool_size=2)
    async with db.transaction() as conn:
        await conn.run_sync(items.metadata.create_all)
        await conn.execute(items.insert(), [{"id": i, "name": f"item {i}"} for i in range(5)])
    async with db.read() as conn:  # the reader's first connection is open (and asked its settings)
        await conn.execute(sa.select(items.c.id))
    yield db
    await db.dispose()


@pytest.fixture
def greenlets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the calls the asyncio extension (or the driver) ran in a greenlet."""
    spawned: list[str] = []

    def counting(spawn: Callable[..., Any]) -> Callable[..., Any]:
        async def spawn_and_count(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            spawned.append(getattr(fn, "__name__", repr(fn)))
            return await spawn(fn, *args, **kwargs)

        return spawn_and_count

    monkeypatch.setattr(async_engine, "greenlet_spawn", counting(async_engine.greenlet_spawn))
    monkeypatch.setattr(sqlite_driver, "greenlet_spawn", counting(sqlite_driver.greenlet_spawn))
    return spawned


async def test_a_result_holds_what_its_statement_found_after_the_next_statement(database: Database) -> None:
    async with database.transaction() as conn:
        found = await conn.execute(sa.select(items.c.id).order_by(items.c.id))
        await conn.execute(items.delete())
        assert found.scalars().all() == [0, 1, 2, 3, 4]
    async with database.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(items))).scalar_one() == 0


async def test_a_result_is_read_one_row_and_a_few_rows_at_a_time(database: Database) -> None:
    async with database.read() as conn:
        result = await conn.execute(sa.select(items.c.id).order_by(items.c.id))
        assert result.fetchone() == (0,)
        assert result.fetchmany(2) == [(1,), (2,)]
        assert result.fetchall() == [(3,), (4,)]
        assert result.fetchone() is None


async def test_a_transaction_on_an_idle_connection_runs_without_a_greenlet(
    database: Database, greenlets: list[str]
) -> None:
    async with database.transaction() as conn:
        await conn.execute(items.update().where(items.c.id == 1).values(name="changed"))
    async with database.read() as conn:
        assert (await conn.execute(sa.select(items.c.name).where(items.c.id == 1))).scalar_one() == "changed"
    assert greenlets == []


async def test_a_writer_waits_in_a_greenlet_for_the_connection_another_holds(
    database: Database, greenlets: list[str]
) -> None:
    holder = await database.begin_write()
    await holder.execute(items.update().where(items.c.id == 2).values(name="first"))
    second = asyncio.create_task(_rename(database, 2, "second"))
    # the second asks the pool, and waits for the one connection
    await eventually(lambda: "connect" in greenlets, "the second writer never asked for the connection", 10, every=0.01)
    assert not second.done()
    await holder.commit()
    await holder.close()
    await asyncio.wait_for(second, 10)
    async with database.read() as conn:
        assert (await conn.execute(sa.select(items.c.name).where(items.c.id == 2))).scalar_one() == "second"


async def test_statements_and_commits_are_counted(database: Database) -> None:
    before = _counted()
    async with database.transaction() as conn:
        await conn.execute(items.insert(), [{"id": 10, "name": "a"}, {"id": 11, "name": "b"}])
        await conn.execute(sa.select(items.c.id))
    async with database.read() as conn:
        await conn.execute(sa.select(items.c.id))
    statements, transactions = (after - b for after, b in zip(_counted(), before, strict=True))
    # BEGIN IMMEDIATE, the insert (one executemany), the select; BEGIN and the select of the read
    assert statements == 5
    assert transactions == 2  # the read's snapshot ends with a commit too


async def test_a_read_without_a_snapshot_runs_only_its_statements_each_seeing_the_latest_commit(
    database: Database,
) -> None:
    before = _counted()
    async with database.read(snapshot=False) as conn:
        first = (await conn.execute(sa.select(items.c.name).where(items.c.id == 1))).scalar_one()
        await _rename(database, 1, "renamed")  # another connection commits between the two
        second = (await conn.execute(sa.select(items.c.name).where(items.c.id == 1))).scalar_one()
    assert (first, second) == ("item 1", "renamed")
    statements, transactions = (after - b for after, b in zip(_counted(), before, strict=True))
    assert statements == 2 + 2  # the two selects; BEGIN IMMEDIATE and the update of the rename
    assert transactions == 1  # the rename's; the read began and committed nothing
    async with database.read() as conn:  # and the connection went back to the pool reusable
        assert (await conn.execute(sa.select(sa.func.count()).select_from(items))).scalar_one() == 5


async def _rename(database: Database, item: int, name: str) -> None:
    async with database.transaction() as conn:
        await conn.execute(items.update().where(items.c.id == item).values(name=name))


def _counted() -> tuple[float, float]:
    return (
        METRICS.get_sample_value("pizzeria_db_statements_total") or 0.0,
        METRICS.get_sample_value("pizzeria_db_transactions_total") or 0.0,
    )
