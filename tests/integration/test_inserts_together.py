"""`inserts_together`: on PostgreSQL the inserts made in the block go to the server as one
statement at its end, and write what each insert alone writes; any other statement in the
block sends what is held first; a block left by an exception sends nothing; a refusal in one
table's rows is the statement's, and leaves none of the others. On SQLite each insert runs at
once."""

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
from pizzeria.kit.statements import fetch_rows
from pizzeria.kit.upsert import insert_ignore, insert_rows, inserts_together, update_rows
from tests.support.sqlvalues import BACKENDS, databases, documents, sqlalchemy_runs, statements, text, times

metadata = sa.MetaData()
parents = sa.Table(
    "parents",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("flag", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("data", JSONType, nullable=True),
    sa.Column("price", sa.Numeric(10, 2), nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
)
children = sa.Table(
    "children",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("parent_id", sa.Uuid, sa.ForeignKey("parents.id"), nullable=False),
    sa.Column("label", sa.String(20), nullable=False),
)
marks = sa.Table(
    "marks",
    metadata,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
)

_parent = st.fixed_dictionaries(
    {
        "id": st.uuids(),
        "name": text,
        "note": st.none() | text,
        "count": st.integers(-(2**63), 2**63 - 1),
        "flag": st.booleans(),
        "body": st.none() | st.binary(max_size=20),
        "data": documents,
        "price": st.none() | st.decimals(min_value=-(10**7), max_value=10**7, places=2, allow_nan=False),
        "at": times,
    }
)


@pytest.fixture(params=BACKENDS)
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    async with databases(request.param, tmp_path, metadata) as (ours, theirs):
        yield ours, theirs


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[Database]:
    async with databases("postgresql", tmp_path, metadata, count=1) as (database,):
        yield database


async def _read(database: Database) -> list[list[Any]]:
    async with database.transaction() as conn:
        return [
            [tuple(r) for r in await conn.execute(sa.select(table).order_by(*table.primary_key.columns))]
            for table in (parents, children, marks)
        ]


async def _clear(*dbs: Database) -> None:
    for database in dbs:
        async with database.transaction() as conn:
            for table in (children, marks, parents):
                await conn.execute(table.delete())


def _now() -> datetime:
    return datetime.now(UTC)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(_parent, min_size=1, max_size=5, unique_by=lambda r: r["id"]),
    keys=st.lists(st.text("abc", min_size=1, max_size=3), min_size=1, max_size=6),
)
async def test_the_rows_held_together_are_those_each_insert_writes(
    pair: tuple[Database, Database], rows: list[dict[str, Any]], keys: list[str]
) -> None:
    """Parents, their children (a foreign key to rows of the same statement) and marks whose
    keys repeat (ignored, within the statement too), written together and by SQLAlchemy
    insert by insert: the same rows. On PostgreSQL the three inserts are one statement."""
    ours, theirs = pair
    await _clear(ours, theirs)
    kids = [{"parent_id": r["id"], "label": f"k{i}"} for i, r in enumerate(rows + rows[:1])]
    at = _now()
    seen = [{"key": k, "at": at} for k in keys]
    async with ours.transaction() as conn:
        with sqlalchemy_runs(ours) as ran:
            before = statements()
            async with inserts_together(conn):
                await insert_rows(conn, parents, rows)
                await insert_rows(conn, children, kids)
                await insert_rows(conn, marks, seen, ignore=True)
            counted = statements() - before
    async with theirs.transaction() as conn:
        await conn.execute(parents.insert(), rows)
        await conn.execute(children.insert(), kids)
        await conn.execute(insert_ignore(conn, marks), seen)
    assert ran == []
    assert counted == (1 if ours.is_postgres else 3)
    assert await _read(ours) == await _read(theirs)


async def test_one_insert_held_goes_as_it_would_alone(postgres: Database) -> None:
    rows = [{"key": "a", "at": _now()}, {"key": "b", "at": _now()}]
    async with postgres.transaction() as conn:
        before = statements()
        async with inserts_together(conn):
            await insert_rows(conn, marks, rows)
            assert statements() == before  # held
        assert statements() - before == 1
    assert [r[0] for r in (await _read(postgres))[2]] == ["a", "b"]


async def test_a_statement_in_the_block_sends_what_is_held_first(postgres: Database) -> None:
    """A read sees the rows held before it, an update changes them, and what is inserted after
    the update goes after it: statements run in the order they were made."""
    parent = {"id": uuid.uuid4(), "name": "before", "count": 1, "at": _now()}
    set_name = sa.update(parents).where(parents.c.id == sa.bindparam("pid")).values(name=sa.bindparam("name"))
    async with postgres.transaction() as conn, inserts_together(conn):
        await insert_rows(conn, parents, [parent])
        await insert_rows(conn, marks, [{"key": "first", "at": _now()}])
        found = await fetch_rows(conn, sa.select(parents.c.name).where(parents.c.id == parent["id"]))
        assert [r.name for r in found] == ["before"]
        await update_rows(conn, set_name, [{"pid": parent["id"], "name": "after"}])
        await insert_rows(conn, children, [{"parent_id": parent["id"], "label": "x"}])
        await insert_rows(conn, marks, [{"key": "second", "at": _now()}])
        # SQLAlchemy's own execute, through a helper that cannot take the driver's path.
        await update_rows(conn, parents.update().values(note="by sqlalchemy"), [{"count": 2}])
    got_parents, got_children, got_marks = await _read(postgres)
    assert [(r[1], r[2], r[3]) for r in got_parents] == [("after", "by sqlalchemy", 2)]
    assert [r[2] for r in got_children] == ["x"]
    assert sorted(r[0] for r in got_marks) == ["first", "second"]


async def test_a_block_left_by_an_exception_sends_nothing(postgres: Database) -> None:
    async with postgres.transaction() as conn:
        before = statements()
        with pytest.raises(LookupError):
            async with inserts_together(conn):
                await insert_rows(conn, marks, [{"key": "a", "at": _now()}])
                await insert_rows(conn, marks, [{"key": "b", "at": _now()}])
                raise LookupError("changed its mind")
        assert statements() == before
        assert list(await fetch_rows(conn, sa.select(marks))) == []


async def test_a_refusal_in_one_tables_rows_leaves_none_of_the_others(postgres: Database) -> None:
    """A duplicate key (not ignored) and an orphan child each fail the statement, as the insert
    alone would fail, with nothing of the statement's other inserts left."""
    async with postgres.transaction() as conn:
        await insert_rows(conn, marks, [{"key": "taken", "at": _now()}])
    orphan = {"parent_id": uuid.uuid4(), "label": "lost"}
    for refused, match in (({"key": "taken", "at": _now()}, "unique"), (None, "foreign key")):
        parent = {"id": uuid.uuid4(), "name": "p", "count": 1, "at": _now()}
        with pytest.raises(sa.exc.IntegrityError, match=rf"(?i){match}"):
            async with postgres.transaction() as conn, inserts_together(conn):
                await insert_rows(conn, parents, [parent])
                if refused is not None:
                    await insert_rows(conn, marks, [refused])
                else:
                    await insert_rows(conn, children, [orphan])
    got_parents, got_children, got_marks = await _read(postgres)
    assert (got_parents, got_children, [r[0] for r in got_marks]) == ([], [], ["taken"])


async def test_a_block_inside_a_block_leaves_the_holding_to_the_outer(postgres: Database) -> None:
    async with postgres.transaction() as conn:
        before = statements()
        async with inserts_together(conn):
            async with inserts_together(conn):
                await insert_rows(conn, marks, [{"key": "a", "at": _now()}])
            await insert_rows(conn, marks, [{"key": "b", "at": _now()}])
            assert statements() == before
        assert statements() - before == 1


async def test_on_sqlite_each_insert_runs_at_once(tmp_path: Path) -> None:
    async with databases("sqlite", tmp_path, metadata, count=1) as (database,), database.transaction() as conn:
        before = statements()
        async with inserts_together(conn):
            await insert_rows(conn, marks, [{"key": "a", "at": _now()}])
            assert statements() - before == 1
            await insert_rows(conn, marks, [{"key": "b", "at": _now()}])
            assert statements() - before == 2
