"""Inserts: many rows at once (`insert_rows`), and inserts that meet an existing row (`ON
CONFLICT DO NOTHING` and `ON CONFLICT DO UPDATE`), in the dialect of the connection (SQLite and
PostgreSQL spell them alike but are built apart); updates of many rows at once (`update_rows`).

Statements are built once per dialect and table and run with the values as parameters:
building a SQLAlchemy statement costs more than the database takes to run it.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

from pizzeria.kit import asyncpg_driver
from pizzeria.kit.statements import (
    PARAMSTYLES,
    AnyRow,
    Rows,
    TypedRows,
    driver_of,
    on_driver,
    refused,
    row_metadata,
    rows_of,
)


@functools.cache
def _insert_ignore(dialect: str, table: sa.Table) -> sa.Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


def insert_ignore(conn: AsyncConnection, table: sa.Table) -> sa.Insert:
    """`INSERT .. ON CONFLICT DO NOTHING`; the rowcount says whether the row went in."""
    return _insert_ignore(conn.dialect.name, table)


@functools.cache
def _upsert(dialect: str, table: sa.Table, keys: tuple[str, ...], only_if_newer: str | None) -> sa.Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    where = table.c[only_if_newer] < stmt.excluded[only_if_newer] if only_if_newer else None
    return stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c.name: stmt.excluded[c.name] for c in table.c if c.name not in keys},
        where=where,
    )


def upsert(
    conn: AsyncConnection,
    table: sa.Table,
    keys: Sequence[str],
    *,
    only_if_newer: str | None = None,
) -> sa.Insert:
    """`INSERT .. ON CONFLICT (keys) DO UPDATE` of every other column; with `only_if_newer`, only
    when the incoming row's value of that column is greater (a late, older version changes
    nothing)."""
    return _upsert(conn.dialect.name, table, tuple(keys), only_if_newer)


async def insert_rows(
    conn: AsyncConnection, table: sa.Table, rows: Sequence[Mapping[str, Any]], *, ignore: bool = False
) -> None:
    """Insert `rows` (each naming the same columns) in one statement run for every row, `ON
    CONFLICT DO NOTHING` with `ignore`.

    On SQLite (the inline driver, `kit.sqlite_driver`) the rows go to the driver directly, each
    value through its column type's own conversion: SQLAlchemy's executemany spends about as
    much per row on its parameters (6 to 11 µs here) as SQLite spends writing the row and its
    indexes. On PostgreSQL (asyncpg) they go to asyncpg's executemany, as SQLAlchemy's would
    (`kit.asyncpg_driver`; one row too, where SQLAlchemy asks for the new row's key back).
    Elsewhere, or for a table with defaults computed in Python, it is SQLAlchemy's."""
    if not rows:
        return
    driver = driver_of(conn, write=True)  # in its transaction
    plan = _insert_plan(conn.dialect, table, tuple(rows[0]), ignore) if driver is not None else None
    if driver is None or plan is None:
        await asyncpg_driver.release_held(conn)
        await conn.execute(insert_ignore(conn, table) if ignore else table.insert(), rows)
    elif isinstance(driver, sqlite3.Connection):
        _executemany(conn, driver, plan, rows)
    else:
        values = _values(plan, rows)
        held = asyncpg_driver.holding.get()
        part = _part(conn.dialect, table, tuple(rows[0]), ignore) if held is not None and held.conn is conn else None
        if held is not None and part is not None:
            held.parts.append((part, plan[0], values))
        else:
            await asyncpg_driver.fetch_many(conn, driver, plan[0], values)


@contextlib.asynccontextmanager
async def inserts_together(conn: AsyncConnection) -> AsyncIterator[None]:
    """On PostgreSQL, hold back the inserts `insert_rows` makes on `conn` in the block and send
    them at its end as one statement (each table's rows as one array a column, unnested, in a
    `WITH` of inserts): one round trip for however many tables, where each insert would wait for
    the server and then for the event loop on its own. Any other statement on `conn` in the
    block (through `kit.statements`, `kit.upsert`, or the COMMIT) sends what is held first, so
    statements run in the order they were made; inside the block, statements on `conn` go
    through those modules, not SQLAlchemy's `execute`.

    One statement sees the database as it was before it: an insert held must not need to read
    another held insert's rows (a foreign key to them is checked at the statement's end, so a
    child may be held with its parent). Leaving the block by an exception sends nothing (the
    transaction is rolled back). Elsewhere (SQLite, where a statement has no round trip) each
    insert runs at once."""
    driver = driver_of(conn, write=True)
    if driver is None or isinstance(driver, sqlite3.Connection) or asyncpg_driver.holding.get() is not None:
        yield
        return
    held = _Held(conn, driver)
    token = asyncpg_driver.holding.set(held)
    try:
        yield
    finally:
        asyncpg_driver.holding.reset(token)
    await held.release()


@dataclass(frozen=True, eq=False)
class _Part:
    """One table's insert in a statement of several: its text before the arrays (`INSERT INTO t
    (a, b) SELECT * FROM unnest(`), the type of each array, in the order of the plan's
    parameters, and its text after them."""

    head: str
    arrays: tuple[str, ...]
    tail: str


@functools.cache
def _part(dialect: Dialect, table: sa.Table, keys: tuple[str, ...], ignore: bool) -> _Part | None:
    """The insert `_insert_plan` plans for rows of these keys, as a part of a statement of
    several (its arrays in the order of the plan's parameters), or None where a row's values
    cannot go as arrays (a column that is an array itself: unnest would flatten it)."""
    named = sorted(c for c in keys if c in table.c)
    compiled = table.insert().compile(dialect=dialect, column_keys=named, for_executemany=True)
    columns = [table.c[name] for name in compiled.positiontup or ()]
    if not columns or any(isinstance(c.type, sa.ARRAY) for c in columns):
        return None
    quote = dialect.identifier_preparer.quote
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) SELECT * FROM unnest("
    arrays = tuple(f"{dialect.type_compiler_instance.process(c.type)}[]" for c in columns)
    return _Part(head, arrays, ") ON CONFLICT DO NOTHING" if ignore else ")")


@functools.lru_cache(maxsize=256)
def _together(parts: tuple[_Part, ...]) -> str:
    """The statement of several inserts: all but the last in a `WITH`, their arrays numbered on."""
    texts: list[str] = []
    number = 0
    for part in parts:
        arrays = []
        for array in part.arrays:
            number += 1
            arrays.append(f"${number}::{array}")
        texts.append(f"{part.head}{', '.join(arrays)}{part.tail}")
    *first, last = texts
    return f"WITH {', '.join(f'held_{k} AS ({text})' for k, text in enumerate(first))} {last}"


class _Held:
    """The inserts held back on one connection (`inserts_together`): each its part, its plan's
    text and its rows' values."""

    __slots__ = ("conn", "driver", "parts")

    def __init__(self, conn: AsyncConnection, driver: asyncpg_driver.Adapter) -> None:
        self.conn = conn
        self.driver = driver
        self.parts: list[tuple[_Part, str, list[tuple[Any, ...]]]] = []

    async def release(self) -> None:
        held, self.parts = self.parts, []
        if len(held) == 1:  # alone, as it would have gone
            _, sql, values = held[0]
            await asyncpg_driver.fetch_many(self.conn, self.driver, sql, values)
        elif held:
            arrays = [list(column) for _, _, values in held for column in zip(*values, strict=True)]
            await asyncpg_driver.fetch(self.conn, self.driver, _together(tuple(part for part, _, _ in held)), arrays)


async def update_rows(conn: AsyncConnection, stmt: sa.Update | sa.Insert, rows: Sequence[Mapping[str, Any]]) -> int:
    """Run the UPDATE `stmt` (or an INSERT of its own parameters, as `INSERT .. SELECT`) once
    for every row of `rows` (each naming the same parameters: the
    columns to set, by name, and the statement's own bind parameters); returns the rowcount
    SQLAlchemy's result would give (on SQLite the rows changed in all; asyncpg does not count
    an executemany's: -1, but one row's statement's).

    As `insert_rows`: on SQLite and PostgreSQL (asyncpg) the statement is compiled once and the
    rows go to the driver, each value through its bind parameter's type (the column's, for
    `WHERE id = :order_id`).
    Elsewhere, or for a statement SQLAlchemy must run itself (a column's `onupdate` computed
    in Python, a value given in the statement, a parameter the first row lacks, an expanding
    IN, two bind parameters of one name), it is SQLAlchemy's executemany.

    Plans are kept by the statement object: pass one built once (a module's constant, or one
    from a cached builder), not one built for each call."""
    if not rows:
        return 0
    driver = driver_of(conn, write=True)  # in its transaction
    plan = _update_plan(conn.dialect, stmt, tuple(sorted(rows[0]))) if driver is not None else None
    if driver is None or plan is None:
        await asyncpg_driver.release_held(conn)
        return (await conn.execute(stmt, list(rows))).rowcount
    if isinstance(driver, sqlite3.Connection):
        return _executemany(conn, driver, plan, rows)
    values = _values(plan, rows)
    if len(values) == 1:  # (SQLAlchemy runs one row as a statement of its own, and counts it)
        return (await asyncpg_driver.fetch(conn, driver, plan[0], values[0]))[2]
    await asyncpg_driver.fetch_many(conn, driver, plan[0], values)
    return -1


async def insert_returning(
    conn: AsyncConnection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    returning: Sequence[str],
    *,
    ignore: bool = False,
) -> Sequence[AnyRow]:
    """Insert `rows` (each naming the same columns), `ON CONFLICT DO NOTHING` with `ignore`;
    the `returning` columns of the rows that went in, in no set order (SQLAlchemy's
    `insert(...).returning(...)` run for every row).

    SQLite's driver returns no rows from an executemany, so SQLAlchemy writes several rows'
    VALUES into one statement (its "insertmanyvalues"), renumbering its parameters for every
    run; so does asyncpg's. On SQLite (the inline driver) and PostgreSQL (asyncpg) the
    statement for each number of rows is built once and the rows go to the driver directly, as
    `insert_rows`'s do."""
    if not rows:
        return []
    driver = driver_of(conn, write=True)  # in its transaction
    plan = (
        _returning_plan(conn.dialect, table, tuple(rows[0]), tuple(returning), ignore) if driver is not None else None
    )
    if driver is None or plan is None:
        await asyncpg_driver.release_held(conn)
        stmt = _insert_returning(conn.dialect.name, table, tuple(returning), ignore)
        return (await conn.execute(stmt, list(rows))).all()
    single, width, take, made = plan
    # As many rows in a statement as SQLAlchemy writes in one (as many statements counted).
    dialect = conn.dialect
    per = max(1, min(dialect.insertmanyvalues_page_size, dialect.insertmanyvalues_max_parameters // width))
    found: list[AnyRow] = []
    for first in range(0, len(rows), per):
        page = rows[first : first + per]
        sql = _many_values(single, len(page), dialect.paramstyle)
        values: list[Any] = []
        try:
            for row in page:
                values.extend(take(row))
        except Exception as exc:  # a value its column cannot take, or a row without a key
            raise sa.exc.StatementError(f"({type(exc).__name__}) {exc}", sql, values, exc) from exc
        if isinstance(driver, sqlite3.Connection):
            make, converts = cast(Rows, made)
            found += [make(converts, raw) for raw in on_driver(conn, driver, sql, values).fetchall()]
        else:
            raws, result, _ = await asyncpg_driver.fetch(conn, driver, sql, values)
            make, converts = cast(TypedRows, made).rows(result)
            found += [make(converts, raw) for raw in raws]
    return found


#: A row's values for a statement's parameters, in their order, each through its conversion.
RowValues = Callable[[Mapping[str, Any]], tuple[Any, ...]]


def row_values(keys: tuple[str, ...], processors: tuple[Callable[[Any], Any] | None, ...]) -> RowValues:
    """What takes a row's value of each key in `keys`, in order, each through the conversion
    beside it (None: the value as it is): made once a plan, as it runs for every row written.
    A missing key is a KeyError, as a row's own lookup would be."""
    if not keys:
        return lambda _: ()
    take: RowValues
    if len(keys) == 1:
        key = keys[0]
        take = lambda row: (row[key],)  # noqa: E731  (itemgetter of one key gives the value alone)
    else:
        take = cast(RowValues, operator.itemgetter(*keys))
    converted = tuple((place, p) for place, p in enumerate(processors) if p is not None)
    if not converted:
        return take

    def values(row: Mapping[str, Any]) -> tuple[Any, ...]:
        found = list(take(row))
        for place, convert in converted:
            found[place] = convert(found[place])
        return tuple(found)

    return values


#: An insert with RETURNING: its text for one row and the VALUES of that row, the number of
#: parameters a row has, what takes a row's values for them, and how a returned row is made.
_ReturningPlan = tuple[tuple[str, str], int, RowValues, Rows | TypedRows]


@functools.cache
def _insert_returning(dialect: str, table: sa.Table, returning: tuple[str, ...], ignore: bool) -> sa.Insert:
    insert = _insert_ignore(dialect, table) if ignore else table.insert()
    return insert.returning(*(table.c[c] for c in returning))


@functools.cache
def _returning_plan(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...], returning: tuple[str, ...], ignore: bool
) -> _ReturningPlan | None:
    """As `_insert_plan`, with RETURNING; None when SQLAlchemy must insert. The columns are taken
    in the table's order, as SQLAlchemy orders the parameters, whatever the order of a row's keys
    (each value is taken by its key)."""
    given = set(columns)
    columns = tuple(c.key for c in table.c if c.key in given)
    named = set(columns)
    if any(c.default is not None and c.name not in named for c in table.c) or not columns:
        return None
    stmt = _insert_returning(dialect.name, table, returning, ignore)
    compiled = stmt.compile(dialect=dialect, column_keys=list(columns), for_executemany=True)
    assert isinstance(compiled, SQLCompiler)
    many = compiled._insertmanyvalues
    by_place = row_metadata(compiled) is not None
    values = f"({many.single_values_expr})" if many is not None else ""
    if (
        many is None
        or not by_place
        or many.is_default_expr
        or many.has_upsert_bound_parameters
        or many.embed_values_counter
        or compiled.positiontup != list(columns)
        or compiled.insert_prefetch
        or compiled.string.count(values) != 1
    ):
        return None
    processors = tuple(_processor(table.c[c].type, dialect) for c in columns)
    return (compiled.string, values), len(columns), row_values(columns, processors), rows_of(dialect, compiled)


@functools.lru_cache(maxsize=512)
def _many_values(single: tuple[str, str], count: int, paramstyle: str) -> str:
    """The insert of `single` for `count` rows: its VALUES once for each, their `$n` numbered on
    (as SQLAlchemy numbers them: the row's parameters are all the statement's)."""
    sql, values = single
    if paramstyle != "numeric_dollar":
        return sql.replace(values, ", ".join([values] * count), 1)
    width = len(_NUMBERED.findall(values))
    return sql.replace(values, ", ".join(_NUMBERED.sub(_after(k * width), values) for k in range(count)), 1)


def _after(offset: int) -> Callable[[re.Match[str]], str]:
    return lambda number: f"${int(number[0][1:]) + offset}"


_NUMBERED = re.compile(r"\$\d+")


#: A statement to run on the driver: its SQL, and what takes a row's values for its parameters.
_Plan = tuple[str, RowValues]


def _values(plan: _Plan, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """The values of each row to run the plan with; refused as SQLAlchemy refuses them."""
    sql, values = plan
    try:
        return [values(row) for row in rows]
    except Exception as exc:  # a value its column cannot take, or a row without a key
        raise sa.exc.StatementError(f"({type(exc).__name__}) {exc}", sql, [], exc) from exc


def _executemany(
    conn: AsyncConnection, driver: sqlite3.Connection, plan: _Plan, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Run the plan for every row on `driver`, the driver connection of `conn`; refusals are
    SQLAlchemy's exceptions (`kit.statements.refused`)."""
    sql, take = plan
    values: list[tuple[Any, ...]] = []
    cursor: sqlite3.Cursor | None = None
    try:
        values = [take(row) for row in rows]
        cursor = driver.cursor()
        cursor.executemany(sql, values)  # its cursor counts the statement (kit.sqlite_driver)
        return cursor.rowcount
    except sqlite3.Error as exc:  # as SQLAlchemy would raise it (IntegrityError, OperationalError...)
        refused(conn, exc, sql, values, cursor)
    except Exception as exc:  # a value its column cannot take, or a row without a key
        raise sa.exc.StatementError(f"({type(exc).__name__}) {exc}", sql, values, exc) from exc


def _processor(type_: sa.types.TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a value of this type before handing it to the driver."""
    return type_.dialect_impl(dialect).bind_processor(dialect)


@functools.cache
def _insert_plan(dialect: Dialect, table: sa.Table, columns: tuple[str, ...], ignore: bool) -> _Plan | None:
    """An insert straight to the driver (on asyncpg, SQLAlchemy's text for it, with the casts it
    writes); None when a column left out has a default SQLAlchemy computes in Python
    (SQLAlchemy must insert)."""
    columns = tuple(c for c in columns if c in table.c)  # as SQLAlchemy, other keys are not looked at
    if dialect.driver == "asyncpg":
        insert = _insert_ignore(dialect.name, table) if ignore else table.insert()
        return _update_plan(dialect, insert, tuple(sorted(columns)))
    named = set(columns)
    if any(c.default is not None and c.name not in named for c in table.c):
        return None
    quote = dialect.identifier_preparer.quote
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)}){' ON CONFLICT DO NOTHING' if ignore else ''}"
    )
    return sql, row_values(columns, tuple(_processor(table.c[c].type, dialect) for c in columns))


@functools.cache
def _update_plan(dialect: Dialect, stmt: sa.Update | sa.Insert, keys: tuple[str, ...]) -> _Plan | None:
    """`stmt` compiled as SQLAlchemy compiles it for rows with these keys, to run straight on
    the driver; None when SQLAlchemy must run it (it would compute or supply a value no
    row gives, or render the statement anew for each run)."""
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    order = compiled.positiontup
    if (
        len(binds) != len(compiled.bind_names)  # one name, several parameters (maybe of other types)
        or dialect.paramstyle != PARAMSTYLES.get(dialect.driver)
        or order is None
        or compiled.update_prefetch
        or compiled.insert_prefetch
        or compiled.effective_returning
        or compiled.literal_execute_params
        or compiled.post_compile_params
        or compiled.escaped_bind_names
        or any(name not in keys or binds[name].key != name for name in order)
    ):
        return None
    return compiled.string, row_values(tuple(order), tuple(_processor(binds[name].type, dialect) for name in order))
