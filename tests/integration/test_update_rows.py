"""`update_rows` writes what SQLAlchemy's own executemany of the update writes: the same rows,
stored alike, the same count of rows changed, and the same refusal; on SQLite and on PostgreSQL
(asyncpg) it hands the rows to the driver itself (SQLAlchemy runs nothing), elsewhere it is
SQLAlchemy's."""

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
from pizzeria.kit.upsert import insert_rows, update_rows
from tests.support.sqlvalues import BACKENDS, State, databases, documents, sqlalchemy_runs, statements, text, times

metadata = sa.MetaData()
things = sa.Table(
    "things",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("id", sa.Uuid, nullable=False, unique=True),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("data", JSONType, nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("plain_at", sa.DateTime, nullable=True),
    sa.Column("owner", sa.Uuid, nullable=True),
)
stamped = sa.Table(
    "stamped",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("label", sa.String(20), nullable=False),
    sa.Column("stamp", sa.String(20), nullable=True, onupdate="stamped here"),
)


# The shapes the services use: columns set by their names, the row found by its key (and a
# generation, as the order views); the values under parameters of their own, the row found
# only in a state (as reservations and the analytics).
_BY_ID = things.update().where(things.c.generation == sa.bindparam("g"), things.c.id == sa.bindparam("thing_id"))
_NAMED = (
    things.update()
    .where(things.c.id == sa.bindparam("tid"), things.c.state == sa.bindparam("from_state"))
    .values(state=sa.bindparam("to_state"), at=sa.bindparam("v_at"), data=sa.bindparam("v_data"))
)

_states = st.sampled_from([*State, "open", "held", ""])
# Documents, as the services keep, and None (JSON's null, as SQLAlchemy stores it).
_json = st.none() | documents
_values = {
    "name": text,
    "state": _states,
    "note": st.none() | text,
    "count": st.integers(-(2**63), 2**63 - 1),
    "flag": st.booleans(),
    "body": st.none() | st.binary(max_size=20),
    "data": _json,
    "at": times,
    "plain_at": st.none() | st.datetimes(min_value=datetime(1970, 1, 2)),
    "owner": st.none() | st.uuids(),
}
_row = st.fixed_dictionaries({"id": st.uuids(), "generation": st.integers(1, 2), **_values})


async def _stored(database: Database, table: sa.Table) -> list[Any]:
    """The rows as the database holds them (a JSON null and an SQL NULL differ here)."""
    async with database.transaction() as conn:
        result = await conn.exec_driver_sql(f"SELECT * FROM {table.name} ORDER BY 1")
        return [tuple(r) for r in result]


@pytest.fixture(params=BACKENDS)
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    async with databases(request.param, tmp_path, metadata) as (ours, theirs):
        yield ours, theirs


async def _both(
    pair: tuple[Database, Database], stmt: sa.Update, rows: list[dict[str, Any]]
) -> tuple[int, int, list[str]]:
    """The update by `update_rows` on ours and by SQLAlchemy on theirs: the rows each changed,
    and what SQLAlchemy ran on ours."""
    ours, theirs = pair
    async with ours.transaction() as conn:
        with sqlalchemy_runs(ours) as ran:
            changed = await update_rows(conn, stmt, rows)
    async with theirs.transaction() as conn:
        theirs_changed = (await conn.execute(stmt, rows)).rowcount
    return changed, theirs_changed, ran


async def _start(pair: tuple[Database, Database], table: sa.Table, rows: list[dict[str, Any]]) -> None:
    for database in pair:
        async with database.transaction() as conn:
            await conn.execute(table.delete())
            if rows:
                await insert_rows(conn, table, rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=5, unique_by=lambda r: r["id"]), data=st.data())
async def test_columns_set_by_name_are_those_sqlalchemy_sets(
    pair: tuple[Database, Database], rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    await _start(pair, things, rows)
    columns = data.draw(st.sets(st.sampled_from(sorted(_values)), min_size=1))
    # Some of the rows, some more than once, some in another generation, and some that are not there.
    targets = data.draw(
        st.lists(st.sampled_from([(r["generation"], r["id"]) for r in rows]) | st.tuples(st.integers(1, 2), st.uuids()))
    )
    changes = [
        {"g": g, "thing_id": i, **data.draw(st.fixed_dictionaries({c: _values[c] for c in columns}))}
        for g, i in targets
    ]
    if not changes:
        return
    ours, theirs, ran = await _both(pair, _BY_ID, changes)
    assert ran == []
    assert ours == theirs
    assert await _stored(pair[0], things) == await _stored(pair[1], things)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=5, unique_by=lambda r: r["id"]), data=st.data())
async def test_values_under_parameters_of_their_own_are_those_sqlalchemy_sets(
    pair: tuple[Database, Database], rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    await _start(pair, things, rows)
    changes = data.draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "tid": st.sampled_from([r["id"] for r in rows]) | st.uuids(),
                    "from_state": _states,
                    "to_state": _states,
                    "v_at": times,
                    "v_data": _json,
                }
            ),
            min_size=1,
            max_size=5,
        )
    )
    ours, theirs, ran = await _both(pair, _NAMED, changes)
    assert ran == []
    assert ours == theirs
    assert await _stored(pair[0], things) == await _stored(pair[1], things)


def _thing(**values: Any) -> dict[str, Any]:
    return {
        "generation": 1,
        "id": uuid.uuid4(),
        "name": "a",
        "state": "open",
        "count": 1,
        "flag": False,
        "at": datetime.now(UTC),
    } | values


async def test_each_update_is_counted_as_a_statement(pair: tuple[Database, Database]) -> None:
    """The bench's statements per order come from this count: a many-row update is one, and
    it is the driver's (SQLAlchemy, which would count it too, runs nothing)."""
    ours, _ = pair
    rows = [_thing(count=i) for i in range(3)]
    await _start(pair, things, rows)
    async with ours.transaction() as conn:
        with sqlalchemy_runs(ours) as ran:
            before = statements()
            changed = await update_rows(conn, _BY_ID, [{"g": 1, "thing_id": r["id"], "count": 7} for r in rows])
            assert statements() - before == 1
    assert ran == []
    assert changed == (-1 if ours.is_postgres else 3)  # (asyncpg counts no executemany's rows)


async def test_a_refused_row_is_refused_as_sqlalchemy_refuses_it(pair: tuple[Database, Database]) -> None:
    first, second = _thing(), _thing()
    await _start(pair, things, [first, second])
    for stmt, rows, error in (
        (_BY_ID, [{"g": 1, "thing_id": first["id"], "name": None}], "(?i)not[ -]null"),
        (_BY_ID, [{"g": 1, "thing_id": second["id"], "id": first["id"]}], "(?i)unique"),
    ):
        for database, update in zip(pair, (update_rows, _sqlalchemys), strict=True):
            with pytest.raises(sa.exc.IntegrityError, match=error):
                async with database.transaction() as conn:
                    # a row that finds nothing first: the refusal comes from a later row
                    await update(conn, stmt, [{**rows[0], "thing_id": uuid.uuid4()}, *rows])
    assert await _stored(pair[0], things) == await _stored(pair[1], things)


@pytest.mark.parametrize(
    "rows",
    [
        [{"g": 1, "thing_id": "not a uuid", "name": "b"}],  # the key
        [{"g": 1, "thing_id": uuid.uuid4(), "owner": "not a uuid"}],  # a value
        [{"g": 1, "thing_id": uuid.uuid4(), "at": "not a time"}],
        [{"g": 1, "thing_id": uuid.uuid4(), "name": "b"}, {"g": 1, "name": "c"}],  # a row without its key
    ],
)
async def test_a_value_it_cannot_take_is_refused_as_sqlalchemy_refuses_it(
    pair: tuple[Database, Database], rows: list[dict[str, Any]]
) -> None:
    await _start(pair, things, [_thing()])
    for database, update in zip(pair, (update_rows, _sqlalchemys), strict=True):
        with pytest.raises(sa.exc.StatementError):
            async with database.transaction() as conn:
                await update(conn, _BY_ID, rows)
    assert await _stored(pair[0], things) == await _stored(pair[1], things)


async def test_what_sqlalchemy_computes_it_lets_sqlalchemy_run(pair: tuple[Database, Database]) -> None:
    """A column's `onupdate` made in Python, a value written into the statement, one name for
    two parameters (the one in the WHERE of no type: SQLAlchemy converts the value by the
    other's): SQLAlchemy's executemany, with what it computes."""
    ours, theirs = pair
    await _start(pair, stamped, [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}])
    await _start(pair, things, [thing := _thing()])
    for stmt, rows in (
        (stamped.update().where(stamped.c.id == sa.bindparam("n")), [{"n": 1, "label": "x"}, {"n": 2, "label": "y"}]),
        (things.update().where(things.c.id == sa.bindparam("tid")).values(state="fixed"), [{"tid": thing["id"]}]),
        (
            things.update()
            .where(things.c.id == sa.bindparam("tid"), sa.func.coalesce(sa.bindparam("w"), None).is_not(None))
            .values(at=sa.bindparam("w")),
            [{"tid": thing["id"], "w": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)}],
        ),
    ):
        if ours.is_postgres and "w" in rows[0]:
            # PostgreSQL takes the parameter of no type as text and then refuses a time for it:
            # SQLAlchemy's refusal, whichever way.
            for database, update in zip(pair, (update_rows, _sqlalchemys), strict=True):
                with pytest.raises(sa.exc.DBAPIError, match="expected str"):
                    async with database.transaction() as conn:
                        await update(conn, stmt, rows)
            continue
        async with ours.transaction() as conn:
            with sqlalchemy_runs(ours) as ran:
                changed = await update_rows(conn, stmt, rows)
        assert ran != []
        async with theirs.transaction() as conn:
            assert changed == (await conn.execute(stmt, rows)).rowcount
    stamps = [(1, "x", "stamped here"), (2, "y", "stamped here")]
    assert await _stored(ours, stamped) == await _stored(theirs, stamped) == stamps
    assert await _stored(ours, things) == await _stored(theirs, things)


async def test_the_count_of_one_row_or_many_is_sqlalchemys(pair: tuple[Database, Database]) -> None:
    """SQLAlchemy runs one row as a statement of its own, and counts the rows it changed; asyncpg
    counts none of an executemany's (-1)."""
    rows = [_thing(count=i, data={"i": i}) for i in range(3)]
    await _start(pair, things, rows)
    for some in (rows[:1], rows[1:]):
        shut = [{"g": 1, "thing_id": r["id"], "data": {"j": 1}, "state": State.SHUT} for r in some]
        ours, theirs, ran = await _both(pair, _BY_ID, shut)
        assert ran == []
        assert ours == theirs
    assert await _stored(pair[0], things) == await _stored(pair[1], things)


async def _sqlalchemys(conn: Any, stmt: sa.Update, rows: list[dict[str, Any]]) -> int:
    return (await conn.execute(stmt, rows)).rowcount
