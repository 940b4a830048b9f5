"""`insert_rows` writes what SQLAlchemy's own insert writes: the same rows, read back alike,
and the same refusal; on SQLite and on PostgreSQL (asyncpg) it hands the rows to the driver
itself, elsewhere it is SQLAlchemy's insert."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pizzeria.kit.db import Database, JSONType, UTCDateTime
from pizzeria.kit.upsert import insert_ignore, insert_rows
from tests.support.sqlvalues import BACKENDS, databases, documents, sqlalchemy_runs, statements, text, times

metadata = sa.MetaData()
things = sa.Table(
    "things",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Uuid, nullable=False, unique=True),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("flag", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("data", JSONType, nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("plain_at", sa.DateTime, nullable=True),
)
with_python_default = sa.Table(
    "defaulted",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("label", sa.String(20), nullable=False, default="made here"),
)

_row = st.fixed_dictionaries(
    {
        "id": st.uuids(),
        "name": text,
        "note": st.none() | text,
        "count": st.integers(-(2**63), 2**63 - 1),
        "flag": st.booleans(),
        "body": st.none() | st.binary(max_size=20),
        "data": documents,
        "at": times,
        "plain_at": st.none() | st.datetimes(min_value=datetime(1970, 1, 2)),
    }
)


async def _read(database: Database, table: sa.Table) -> list[Any]:
    async with database.transaction() as conn:
        return [tuple(r) for r in await conn.execute(sa.select(table).order_by(*table.primary_key.columns))]


@pytest.fixture(params=BACKENDS)
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    async with databases(request.param, tmp_path, metadata) as (ours, theirs):
        yield ours, theirs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=6, unique_by=lambda r: r["id"]), again=st.integers(0, 5))
async def test_the_rows_are_those_sqlalchemy_writes(
    pair: tuple[Database, Database], rows: list[dict[str, Any]], again: int
) -> None:
    ours, theirs = pair
    for database in pair:
        async with database.transaction() as conn:
            await conn.execute(things.delete())
    # Some rows come twice: the second time they are ignored, by both.
    twice = rows + rows[: again % (len(rows) + 1)]
    async with ours.transaction() as conn:
        with sqlalchemy_runs(ours) as ran:
            await insert_rows(conn, things, twice, ignore=True)
    async with theirs.transaction() as conn:
        await conn.execute(insert_ignore(conn, things), twice)
    assert ran == []
    assert await _read(ours, things) == await _read(theirs, things)


async def test_a_refused_row_is_refused_as_sqlalchemy_refuses_it(pair: tuple[Database, Database]) -> None:
    ours, _ = pair
    row = {"id": uuid.uuid4(), "name": None, "count": 1, "at": datetime.now(UTC)}
    with pytest.raises(sa.exc.IntegrityError, match=r"(?i)not[ -]null"):
        async with ours.transaction() as conn:
            await insert_rows(conn, things, [row])
    assert await _read(ours, things) == []


async def test_a_duplicate_is_not_ignored_unless_asked(pair: tuple[Database, Database]) -> None:
    ours, _ = pair
    row = {"id": uuid.uuid4(), "name": "a", "count": 1, "at": datetime.now(UTC)}
    async with ours.transaction() as conn:
        await insert_rows(conn, things, [row])
    with pytest.raises(sa.exc.IntegrityError, match=r"(?i)unique"):
        async with ours.transaction() as conn:
            await insert_rows(conn, things, [row])
    assert len(await _read(ours, things)) == 1


async def test_a_default_made_in_python_is_made(pair: tuple[Database, Database]) -> None:
    ours, _ = pair
    async with ours.transaction() as conn:
        await insert_rows(conn, with_python_default, [{"id": 1}, {"id": 2}])
    assert await _read(ours, with_python_default) == [(1, "made here"), (2, "made here")]


async def test_a_default_made_in_python_is_sqlalchemys_to_make(pair: tuple[Database, Database]) -> None:
    ours, _ = pair
    async with ours.transaction() as conn:
        with sqlalchemy_runs(ours) as ran:
            await insert_rows(conn, with_python_default, [{"id": 1}])
    assert ran != []


async def test_one_row_and_many_are_written_alike(pair: tuple[Database, Database]) -> None:
    """One row (SQLAlchemy runs it as a statement of its own, on PostgreSQL returning the new
    row's key) and several (its executemany) are the driver's, and written as SQLAlchemy's."""
    ours, theirs = pair
    rows = [
        {"id": uuid.uuid4(), "name": f"n{i}", "count": i, "data": {"i": i}, "at": datetime.now(UTC)} for i in range(3)
    ]
    for some in (rows[:1], rows[1:] + rows[:1]):
        async with ours.transaction() as conn:
            with sqlalchemy_runs(ours) as ran:
                await insert_rows(conn, things, some, ignore=True)
        async with theirs.transaction() as conn:
            await conn.execute(insert_ignore(conn, things), some)
        assert ran == []
    assert await _read(ours, things) == await _read(theirs, things)


async def test_each_insert_is_counted_as_a_statement(pair: tuple[Database, Database]) -> None:
    """The bench's statements per order come from this count: a many-row insert is one."""
    ours, _ = pair
    rows = [{"id": uuid.uuid4(), "name": "a", "count": i, "at": datetime.now(UTC)} for i in range(3)]
    async with ours.transaction() as conn:
        before = statements()
        await insert_rows(conn, things, rows)
        assert statements() - before == 1


async def test_a_value_its_column_cannot_take_is_refused_as_sqlalchemy_refuses_it(
    pair: tuple[Database, Database],
) -> None:
    ours, theirs = pair
    row = {"id": "not a uuid", "name": "a", "count": 1, "at": datetime.now(UTC)}
    for database, insert in ((ours, insert_rows), (theirs, _sqlalchemys)):
        with pytest.raises(sa.exc.StatementError):
            async with database.transaction() as conn:
                await insert(conn, things, [row])
    assert await _read(ours, things) == []


async def test_keys_that_are_not_columns_are_left_as_sqlalchemy_leaves_them(pair: tuple[Database, Database]) -> None:
    ours, theirs = pair
    row = {"id": uuid.uuid4(), "name": "a", "count": 1, "at": datetime.now(UTC), "not_a_column": 1}
    for database, insert in ((ours, insert_rows), (theirs, _sqlalchemys)):
        async with database.transaction() as conn:
            await insert(conn, things, [row])
    assert await _read(ours, things) == await _read(theirs, things) != []


async def _sqlalchemys(conn: Any, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    await conn.execute(table.insert(), rows)
