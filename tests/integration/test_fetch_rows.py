"""`fetch_rows`, `execute` and `insert_returning` give what SQLAlchemy's own execution gives:
the same rows (values of the same types, by attribute, index, name and column), the same
counts and the same refusals; on SQLite and on PostgreSQL (asyncpg) they run on the driver
(SQLAlchemy runs nothing), elsewhere, and where SQLAlchemy must, it is SQLAlchemy's."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pizzeria.kit import statements as statements_module
from pizzeria.kit.db import Database, JSONType, UTCDateTime, is_transient_error, one_of
from pizzeria.kit.statements import execute, fetch_rows, scalar_one
from pizzeria.kit.upsert import insert_returning, insert_rows
from tests.support.sqlvalues import BACKENDS, State, databases, documents, sqlalchemy_runs, statements, text, times

metadata = sa.MetaData()
things = sa.Table(
    "things",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Uuid, nullable=False, unique=True),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("kind", sa.Enum(State, native_enum=False, length=10), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("price", sa.Numeric(12, 2), nullable=True),
    sa.Column("ratio", sa.Float, nullable=True),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("data", JSONType, nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("plain_at", sa.DateTime, nullable=True),
    sa.Column("owner", sa.Uuid, nullable=True),
)
claims = sa.Table(
    "claims",
    metadata,
    sa.Column("group_id", sa.String(40), primary_key=True),
    sa.Column("message_id", sa.String(64), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
)

# The shapes the services read: a row by its key, rows of a state in a window of time, rows
# whose key is one of many (an expanding IN), a LIMIT, a join with labels, a union of runs.
_BY_ID = sa.select(things).where(things.c.id == sa.bindparam("thing_id"))
_WINDOW = (
    sa.select(things.c.id, things.c.state, things.c.at, things.c.data)
    .where(things.c.state == sa.bindparam("state"), things.c.at >= sa.bindparam("since"))
    .order_by(things.c.seq)
    .limit(sa.bindparam("n"))
)
_ONE_OF = (
    sa.select(things).where(one_of(things.c.id, "ids"), things.c.flag == sa.bindparam("flag")).order_by(things.c.seq)
)
_OWNED = sa.select(things.c.seq, things.c.owner.label("who"), (things.c.count + 1).label("next")).where(
    things.c.owner.in_(sa.bindparam("owners", expanding=True))
)
_UNION = sa.union_all(
    sa.select(sa.select(things.c.seq, things.c.name).where(things.c.flag.is_(True)).limit(2).subquery()),
    sa.select(sa.select(things.c.seq, things.c.name).where(things.c.flag.is_(False)).limit(2).subquery()),
).order_by(sa.column("seq"))
# One parameter under two names' worth of places, one of no type (SQLAlchemy converts the value
# as it chose for the name), values the statement carries (an IN of a list, a CASE), as the
# payments' claim has them.
_DUE = (
    sa.select(things.c.id, things.c.kind)
    .where(
        sa.or_(things.c.state.in_([State.OPEN.value, "held"]), things.c.flag.is_(True)),
        things.c.at <= sa.bindparam("now"),
        sa.or_(things.c.plain_at.is_(None), sa.func.coalesce(sa.bindparam("now"), None).is_not(None)),
    )
    .order_by(things.c.seq)
    .limit(sa.bindparam("n"))
)
_HOLD = (
    things.update()
    .where(one_of(things.c.id, "ids"))
    .values(state=sa.case((things.c.state == State.OPEN.value, State.SHUT.value), else_=things.c.state))
)
_RENAME = things.update().where(one_of(things.c.id, "ids")).values(name=sa.bindparam("to"))
_BUMP = (
    things.update()
    .where(things.c.id == sa.bindparam("thing_id"))
    .values(count=things.c.count + sa.bindparam("by"))
    .returning(things.c.count, things.c.at)
)

_row = st.fixed_dictionaries(
    {
        "id": st.uuids(),
        "name": text,
        "state": st.sampled_from([*State, "held", ""]),
        "kind": st.none() | st.sampled_from(State),
        "note": st.none() | text,
        "count": st.integers(-(2**62), 2**62),
        "price": st.none() | st.decimals(min_value=-(10**9), max_value=10**9, places=2),
        "ratio": st.none() | st.floats(allow_nan=False, allow_infinity=False),
        "flag": st.booleans(),
        "body": st.none() | st.binary(max_size=20),
        "data": st.none() | documents,
        "at": times,
        "plain_at": st.none() | st.datetimes(min_value=datetime(1970, 1, 2)),
        "owner": st.none() | st.uuids(),
    }
)


_short = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[Database]:
    async with databases("sqlite", tmp_path, metadata, 1) as (database,):
        yield database


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with databases(request.param, tmp_path, metadata, 1) as (database,):
        yield database


@pytest.fixture(params=BACKENDS)
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    """Ours (written the way under test) and theirs (written by SQLAlchemy)."""
    async with databases(request.param, tmp_path, metadata) as (ours, theirs):
        yield ours, theirs


def _same(ours: Sequence[Any], theirs: Sequence[Any], columns: Sequence[Any]) -> None:
    """Rows alike in every way a caller reads them."""
    assert ours == theirs
    for mine, its in zip(ours, theirs, strict=True):
        assert [type(v) for v in mine] == [type(v) for v in its]
        assert mine._fields == its._fields
        assert dict(mine._mapping) == dict(its._mapping)
        for key in mine._fields:
            assert getattr(mine, key) == getattr(its, key)
        for column in columns:
            assert mine._mapping[column] == its._mapping[column]


async def _reads_alike(database: Database, stmt: Any, params: dict[str, Any], columns: Sequence[Any] = ()) -> None:
    for snapshot in (True, False):
        async with database.read(snapshot=snapshot) as conn:
            with sqlalchemy_runs(database) as ran:
                ours = await fetch_rows(conn, stmt, params)
            theirs = (await conn.execute(stmt, params)).all()
        assert ran == []
        _same(ours, theirs, columns)


async def _fill(database: Database, rows: list[dict[str, Any]]) -> None:
    async with database.transaction() as conn:
        await conn.execute(things.delete())
        if rows:
            await insert_rows(conn, things, rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, max_size=6, unique_by=lambda r: r["id"]), data=st.data())
async def test_rows_are_those_sqlalchemy_gives(
    database: Database, rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    await _fill(database, rows)
    ids = [r["id"] for r in rows]
    some = data.draw(st.lists(st.sampled_from(ids) | st.uuids(), max_size=5) if ids else st.lists(st.uuids()))
    pick = st.sampled_from(ids) | st.uuids() if ids else st.uuids()
    await _reads_alike(database, _BY_ID, {"thing_id": data.draw(pick)}, [things.c.id, things.c.at, things.c.data])
    await _reads_alike(
        database,
        _WINDOW,
        {
            "state": data.draw(st.sampled_from([*State, "held"])),
            "since": data.draw(times),
            "n": data.draw(st.integers(0, 7)),
        },
        [things.c.at],
    )
    await _reads_alike(database, _ONE_OF, {"ids": some, "flag": data.draw(st.booleans())}, [things.c.price])
    owners = data.draw(
        st.lists(st.sampled_from([r["owner"] for r in rows]) | st.uuids(), max_size=4) if rows else st.lists(st.uuids())
    )
    await _reads_alike(database, _OWNED, {"owners": owners})
    await _reads_alike(database, _UNION, {})
    await _reads_alike(database, _DUE, {"now": data.draw(times), "n": data.draw(st.integers(0, 7))})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=6, unique_by=lambda r: r["id"]), data=st.data())
async def test_writes_change_and_return_what_sqlalchemys_do(
    pair: tuple[Database, Database], rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    ours, theirs = pair
    for database in (ours, theirs):
        await _fill(database, rows)
    ids = data.draw(st.lists(st.sampled_from([r["id"] for r in rows]) | st.uuids(), max_size=5))
    to = data.draw(text)
    bump = {
        "thing_id": data.draw(st.sampled_from([r["id"] for r in rows]) | st.uuids()),
        "by": data.draw(st.integers(-5, 5)),
    }
    async with ours.transaction() as conn:
        with sqlalchemy_runs(ours) as ran:
            changed = await execute(conn, _RENAME, {"ids": ids, "to": to})
            bumped = await fetch_rows(conn, _BUMP, bump)
            held = await execute(conn, _HOLD, {"ids": ids[:2]})
    async with theirs.transaction() as conn:
        theirs_changed = (await conn.execute(_RENAME, {"ids": ids, "to": to})).rowcount
        theirs_bumped = (await conn.execute(_BUMP, bump)).all()
        theirs_held = (await conn.execute(_HOLD, {"ids": ids[:2]})).rowcount
    assert ran == []
    assert (changed, held) == (theirs_changed, theirs_held)
    _same(bumped, theirs_bumped, [things.c.count])
    async with ours.read() as a, theirs.read() as b:
        everything = sa.select(things).order_by(things.c.seq)
        assert (await a.execute(everything)).all() == (await b.execute(everything)).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.lists(_short, max_size=6, unique=True),
    second=st.lists(_short, min_size=1, max_size=6, unique=True),
    at=times,
)
async def test_an_insert_returns_the_rows_sqlalchemy_returns(
    pair: tuple[Database, Database], first: list[str], second: list[str], at: datetime
) -> None:
    ours, theirs = pair
    dialect = sa.dialects.postgresql if ours.is_postgres else sa.dialects.sqlite
    stmt = dialect.insert(claims).on_conflict_do_nothing().returning(claims.c.message_id, claims.c.at)
    for database in pair:
        async with database.transaction() as conn:
            await conn.execute(claims.delete())
    for ids in (first, second):
        rows = [{"group_id": "g", "message_id": m, "at": at} for m in ids]
        async with ours.transaction() as conn:
            with sqlalchemy_runs(ours) as ran:
                got = await insert_returning(conn, claims, rows, ("message_id", "at"), ignore=True)
        async with theirs.transaction() as conn:
            theirs_got = (await conn.execute(stmt, rows)).all() if rows else []
        assert ran == []
        _same(sorted(got), sorted(theirs_got), [claims.c.at])


async def test_an_insert_of_rows_keyed_in_another_order_than_the_tables_runs_on_the_driver(
    pair: tuple[Database, Database],
) -> None:
    """Each value is taken by its key: rows naming their columns in any order insert the same."""
    ours, theirs = pair
    at = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    rows = [{"at": at, "message_id": m, "group_id": "g"} for m in ("a", "b")]
    async with ours.transaction() as conn:
        with sqlalchemy_runs(ours) as ran:
            got = await insert_returning(conn, claims, rows, ("group_id", "message_id", "at"))
    async with theirs.transaction() as conn:
        theirs_got = (
            await conn.execute(claims.insert().returning(claims.c.group_id, claims.c.message_id, claims.c.at), rows)
        ).all()
    assert ran == []
    _same(sorted(got), sorted(theirs_got), [claims.c.at])
    assert sorted(got) == [("g", "a", at), ("g", "b", at)]


def _thing(**values: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "name": "a",
        "state": "open",
        "count": 1,
        "flag": False,
        "at": datetime.now(UTC),
        "price": Decimal("1.50"),
    } | values


async def test_each_is_counted_as_one_statement(database: Database) -> None:
    """The bench's statements per order come from this count, as when SQLAlchemy ran them;
    a many-row insert is as many statements as SQLAlchemy's pages of rows."""
    await _fill(database, [_thing()])
    async with database.transaction() as conn:
        for run in (
            lambda: fetch_rows(conn, _ONE_OF, {"ids": [uuid.uuid4()], "flag": True}),
            lambda: execute(conn, _RENAME, {"ids": [uuid.uuid4()], "to": "b"}),
            lambda: insert_returning(
                conn, claims, [{"group_id": "g", "message_id": "m", "at": datetime.now(UTC)}], ("message_id",)
            ),
        ):
            before = statements()
            await run()
            assert statements() - before == 1
        many = [{"group_id": "h", "message_id": str(i), "at": datetime.now(UTC)} for i in range(1500)]
        before = statements()
        assert len(await insert_returning(conn, claims, many, ("message_id",))) == 1500
        assert statements() - before == 2  # SQLAlchemy's pages: 1000 rows at most


async def test_a_refusal_is_sqlalchemys(database: Database) -> None:
    taken = _thing()
    await _fill(database, [taken])
    duplicate = [{"group_id": "g", "message_id": "m", "at": datetime.now(UTC)}] * 2
    cases: list[tuple[Any, type[Exception]]] = [
        (lambda conn: fetch_rows(conn, _BY_ID, {}), sa.exc.StatementError),  # a parameter left out
        (lambda conn: fetch_rows(conn, _BY_ID, {"thing_id": "not a uuid"}), sa.exc.StatementError),
        (
            lambda conn: fetch_rows(conn, _WINDOW, {"state": "open", "since": "not a time", "n": 1}),
            sa.exc.StatementError,
        ),
        (lambda conn: execute(conn, _RENAME, {"ids": [taken["id"]], "to": None}), sa.exc.IntegrityError),
        (lambda conn: insert_returning(conn, claims, duplicate, ("message_id",)), sa.exc.IntegrityError),
        (
            lambda conn: insert_returning(conn, claims, [{"group_id": "g", "message_id": "m"}], ("message_id",)),
            sa.exc.IntegrityError,
        ),
        (
            lambda conn: insert_returning(conn, claims, [duplicate[0], {"group_id": "g"}], ("message_id",)),
            sa.exc.StatementError,
        ),
    ]
    for run, error in cases:
        with pytest.raises(error):
            async with database.transaction() as conn:
                await run(conn)
    # (SQLAlchemy refuses them alike)
    async with database.read() as conn:
        with pytest.raises(sa.exc.StatementError):
            await conn.execute(_BY_ID, {"thing_id": "not a uuid"})
        with pytest.raises(sa.exc.StatementError):
            await conn.execute(_BY_ID, {})
    async with database.read() as conn:
        assert [r.name for r in await fetch_rows(conn, sa.select(things.c.name), {})] == ["a"]


async def test_what_sqlalchemy_must_run_it_lets_sqlalchemy_run(database: Database) -> None:
    """Result columns matched by name (textual SQL), execution options, a missing table's
    refusal as SQLAlchemy's: SQLAlchemy runs them, with the same answers."""
    await _fill(database, [_thing(name="b")])
    textual = sa.text("SELECT name, count FROM things").columns(things.c.name, things.c.count)
    optioned = sa.select(things.c.name).execution_options(max_row_buffer=10)
    async with database.read() as conn:
        for stmt in (sa.select(textual.subquery()), optioned):
            with sqlalchemy_runs(database) as ran:
                ours = await fetch_rows(conn, stmt, {})
            assert ran != [] or stmt is not optioned
            assert ours == (await conn.execute(stmt)).all()
        assert scalar_one(await fetch_rows(conn, sa.select(sa.func.count()).select_from(things), {})) == 1
        with pytest.raises(sa.exc.NoResultFound):
            scalar_one(await fetch_rows(conn, _BY_ID, {"thing_id": uuid.uuid4()}))
    missing = sa.select(sa.table("missing", sa.column("x")))
    for run in (lambda conn: fetch_rows(conn, missing, {}), lambda conn: conn.execute(missing)):
        with pytest.raises(sa.exc.DBAPIError, match=r'no such table|relation "missing" does not exist') as caught:
            async with database.read() as conn:
                await run(conn)
        assert type(caught.value) is (sa.exc.ProgrammingError if database.is_postgres else sa.exc.OperationalError)


async def test_values_come_back_as_sqlalchemy_gives_them(database: Database) -> None:
    rows = [_thing(count=i, data={"i": i}, owner=uuid.uuid4()) for i in range(3)]
    await _fill(database, rows)
    async with database.transaction() as conn:
        with sqlalchemy_runs(database) as ran:
            found = await fetch_rows(conn, _ONE_OF, {"ids": [r["id"] for r in rows[:2]], "flag": False})
            changed = await execute(conn, _RENAME, {"ids": [rows[0]["id"]], "to": "z"})
            new = await insert_returning(
                conn,
                claims,
                [{"group_id": "g", "message_id": "m", "at": datetime.now(UTC)}],
                ("message_id",),
                ignore=True,
            )
    assert ran == []
    assert [(r.count, r.data, r.price) for r in found] == [
        (0, {"i": 0}, Decimal("1.50")),
        (1, {"i": 1}, Decimal("1.50")),
    ]
    assert changed == 1
    assert [tuple(r) for r in new] == [("m",)]


_NOT_ONE_OF = sa.select(things.c.seq).where(~one_of(things.c.id, "ids")).order_by(things.c.seq)


@pytest.mark.parametrize(
    "make",
    [set, frozenset, lambda ids: dict.fromkeys(ids).keys(), dict.fromkeys, tuple],
    ids=["set", "frozenset", "keys", "dict", "tuple"],
)
async def test_an_in_takes_any_collection_as_sqlalchemy_does(database: Database, make: Any) -> None:
    """`one_of` takes any collection (a set, a dict's keys): the driver runs it as SQLAlchemy."""
    rows = [_thing(flag=True) for _ in range(3)]
    await _fill(database, rows)
    ids = [r["id"] for r in rows[:2]] + [uuid.uuid4()]
    await _reads_alike(database, _ONE_OF, {"ids": make(ids), "flag": True}, [things.c.id])
    await _reads_alike(database, _NOT_ONE_OF, {"ids": make(ids)})
    async with database.transaction() as conn:
        with sqlalchemy_runs(database) as ran:
            assert await execute(conn, _RENAME, {"ids": make(ids), "to": "b"}) == 2
    assert ran == []


async def test_any_number_of_values_of_an_in_is_one_of_a_few_plans(database: Database) -> None:
    """An IN's plan serves every number of values up to its own (the values padded with the
    last, which changes neither IN nor NOT IN): not a compilation and a plan kept for each
    number; none for the statement SQLAlchemy runs beyond the most. (On PostgreSQL `one_of`
    is one plan for any number: `= ANY($n)`.)"""
    rows = [_thing(flag=i % 2 == 0) for i in range(40)]
    await _fill(database, rows)
    ids = [r["id"] for r in rows]
    before = statements_module._expanded.cache_info().currsize
    for count in range(41):
        some = ids[40 - count :]  # the last the one padded with
        await _reads_alike(database, _ONE_OF, {"ids": some, "flag": True}, [things.c.id])
        await _reads_alike(database, _NOT_ONE_OF, {"ids": some})
    # 0 to 8 values, 16, 32, 64; for each statement
    assert statements_module._expanded.cache_info().currsize - before <= 2 * 12
    many = [*ids, *(uuid.uuid4() for _ in range(2000))]
    async with database.read() as conn:
        with sqlalchemy_runs(database) as ran:
            found = await fetch_rows(conn, _ONE_OF, {"ids": many, "flag": False})
    assert len(ran) == (0 if database.is_postgres else 1)
    assert len(found) == 20


_ON_DRIVER: list[Any] = [
    lambda conn: fetch_rows(conn, _ONE_OF, {"ids": [uuid.uuid4()], "flag": True}),
    lambda conn: execute(conn, _RENAME, {"ids": [uuid.uuid4()], "to": "c"}),
    lambda conn: insert_rows(conn, things, [_thing()]),
    lambda conn: insert_returning(
        conn, claims, [{"group_id": "g", "message_id": "m", "at": datetime.now(UTC)}], ("at",)
    ),
]


@pytest.mark.parametrize("run", _ON_DRIVER, ids=["fetch_rows", "execute", "insert_rows", "insert_returning"])
async def test_a_closed_connection_is_invalidated_as_sqlalchemy_does(sqlite_database: Database, run: Any) -> None:
    """The driver's 'closed database': SQLAlchemy's connection is invalidated (a transient
    error), not handed back to the pool to fail again; the next checkout connects anew.
    (PostgreSQL's: `test_asyncpg_driver`.)"""
    database = sqlite_database
    await _fill(database, [_thing(flag=True)])
    if run is _ON_DRIVER[0]:  # a read outside a transaction, its connection closed in the pool
        await database.reader.dispose()
        conn = await database.reader.connect()
        conn.sync_connection.connection.driver_connection.close()  # type: ignore[union-attr]
        await conn.close()
        with pytest.raises(sa.exc.DBAPIError) as caught:
            async with database.read(snapshot=False) as conn:
                await run(conn)
    else:
        conn = await database.writer.connect()
        try:
            await conn.begin()
            conn.sync_connection.connection.driver_connection.close()  # type: ignore[union-attr]
            with pytest.raises(sa.exc.DBAPIError) as caught:
                await run(conn)
            assert conn.invalidated
        finally:
            with contextlib.suppress(sa.exc.DBAPIError):  # (its rollback, on a connection not invalidated)
                await conn.close()
    assert caught.value.connection_invalidated
    assert is_transient_error(caught.value)
    async with database.read(snapshot=False) as conn:
        assert len(await fetch_rows(conn, _ONE_OF, {"ids": [uuid.uuid4()], "flag": True})) == 0
    async with database.transaction() as conn:
        assert await execute(conn, _RENAME, {"ids": [uuid.uuid4()], "to": "c"}) == 0


async def test_a_connection_of_execution_options_sqlalchemy_applies_is_sqlalchemys(
    sqlite_database: Database, tmp_path: Path
) -> None:
    """A `schema_translate_map` (another schema's table) is SQLAlchemy's to apply; the readers'
    AUTOCOMMIT changes nothing that runs, and the driver runs their statements."""
    database = sqlite_database
    await _fill(database, [_thing(name="main")])
    async with database.read(snapshot=False) as conn:
        await conn.exec_driver_sql(f"ATTACH DATABASE '{tmp_path}/aux.db' AS aux")
        await conn.exec_driver_sql("CREATE TABLE aux.claims (group_id, message_id, at)")
        await conn.exec_driver_sql("INSERT INTO aux.claims VALUES ('aux', 'm', '2026-01-01 00:00:00.000000')")
        translated = await conn.execution_options(schema_translate_map={None: "aux"})  # (conn's own)
        stmt = sa.select(claims.c.group_id)
        assert await fetch_rows(translated, stmt) == (await translated.execute(stmt)).all() == [("aux",)]
    async with database.read(snapshot=False) as conn:
        with sqlalchemy_runs(database) as ran:
            assert [r.name for r in await fetch_rows(conn, sa.select(things.c.name))] == ["main"]
        assert ran == []


async def test_a_key_no_column_has_is_sqlalchemys_refusal(database: Database) -> None:
    await _fill(database, [_thing()])
    async with database.read() as conn:
        ours = (await fetch_rows(conn, sa.select(things)))[0]
        theirs = (await conn.execute(sa.select(things))).all()[0]
    for row in (ours, theirs):
        for key in ("missing", claims.c.at):
            with pytest.raises(sa.exc.NoSuchColumnError):
                row._mapping[key]


async def test_a_literal_column_of_several_columns_gives_the_rows_sqlalchemy_gives(database: Database) -> None:
    """A literal column may stand for several (`things.*`): SQLAlchemy then matches the result's
    columns by name, not by place, and so must what runs on the driver (or let SQLAlchemy run
    it), not fail on rows of more columns than the statement names."""
    await _fill(database, [_thing(name="a")])
    every = sa.literal_column("things.*")
    for stmt in (sa.select(every).select_from(things), sa.select((things.c.seq * 10).label("tenfold"), every)):
        async with database.read() as conn:
            theirs = (await conn.execute(stmt)).all()
            ours = await fetch_rows(conn, stmt)
        assert len(theirs[0]) in (len(things.c), 1 + len(things.c))
        _same(ours, theirs, [])
