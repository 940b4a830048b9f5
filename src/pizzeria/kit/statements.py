"""Statements run on the driver directly, SQLite's or asyncpg's: `fetch_rows` (a SELECT, or a
write with RETURNING) and `execute` (a write, for the rows it changed); `begin` and `commit`.

SQLAlchemy spends more Python on a small statement than SQLite spends running it: an execution
context, its parameters checked and converted one by one, a cursor result with its metadata,
rows made from it. Here a statement is compiled once (for each of a few numbers of values of
an expanding IN: `_sized`), and each run hands the values to the driver through their bind
parameters' conversions and makes SQLAlchemy's own `Row`s of what comes back, each value
through its column's result conversion: the rows are those SQLAlchemy would give
(attributes, indexes, `_mapping` by name or by column). Refusals are SQLAlchemy's
exceptions; the driver's cursor counts the statement.

On PostgreSQL (asyncpg) the statement is awaited on asyncpg under SQLAlchemy's adapter, in
SQLAlchemy's transaction, without its greenlet (`kit.asyncpg_driver`); a row's conversions are
those for the types asyncpg says its columns have, as SQLAlchemy chooses them.

Elsewhere, or for a statement SQLAlchemy must run itself (a value it computes in Python, a
parameter it renders into the text, result columns it matches by name), it is SQLAlchemy's
`execute`.

Plans are kept by the statement object: pass one built once (a module's constant, or one from a
cached builder), not one built for each call.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Row
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter

from pizzeria.kit import asyncpg_driver
from pizzeria.kit.asyncpg_driver import Adapter

#: Statements whose rows `fetch_rows` reads.
Readable = sa.Select[Any] | sa.CompoundSelect[Any] | sa.Insert | sa.Update | sa.Delete
#: Statements `execute` runs.
Writable = sa.Update | sa.Delete

#: A row of any columns, as SQLAlchemy's untyped results give.
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

_EMPTY: Mapping[str, Any] = {}


async def fetch_rows(conn: AsyncConnection, stmt: Readable, params: Mapping[str, Any] = _EMPTY) -> Sequence[AnyRow]:
    """The rows of `stmt` run once with `params` (a SELECT, or a write with RETURNING), as
    SQLAlchemy's `(await conn.execute(stmt, params)).all()` gives them."""
    driver = driver_of(conn, write=not isinstance(stmt, sa.Select | sa.CompoundSelect))
    planned = _plan(conn.dialect, stmt, params, rows=True) if driver is not None else None
    if driver is None or planned is None:
        await asyncpg_driver.release_held(conn)
        return (await conn.execute(stmt, dict(params))).all()
    plan, values = planned
    if isinstance(driver, sqlite3.Connection):
        raws = on_driver(conn, driver, plan.sql, _values(plan, values)).fetchall()
        make, processors = cast(Rows, plan.rows)
    else:
        raws, columns, _ = await asyncpg_driver.fetch(conn, driver, plan.sql, _values(plan, values))
        make, processors = cast(TypedRows, plan.rows).rows(columns)
    return [make(processors, raw) for raw in raws]


async def execute(conn: AsyncConnection, stmt: Writable, params: Mapping[str, Any] = _EMPTY) -> int:
    """Run the UPDATE or DELETE `stmt` once with `params`; the rows it changed (SQLAlchemy's
    rowcount)."""
    driver = driver_of(conn, write=True)
    planned = _plan(conn.dialect, stmt, params, rows=False) if driver is not None else None
    if driver is None or planned is None:
        await asyncpg_driver.release_held(conn)
        return (await conn.execute(stmt, dict(params))).rowcount
    plan, values = planned
    if isinstance(driver, sqlite3.Connection):
        return on_driver(conn, driver, plan.sql, _values(plan, values)).rowcount
    return (await asyncpg_driver.fetch(conn, driver, plan.sql, _values(plan, values)))[2]


def driver_of(conn: AsyncConnection, *, write: bool) -> sqlite3.Connection | Adapter | None:
    """The driver under `conn` while SQLAlchemy's connection is sound and carries no execution
    option that changes what runs (a `schema_translate_map`): the `sqlite3` connection of the
    inline driver, for a write only inside its transaction (what runs is part of it; on this
    driver a read outside one is its own, as SQLAlchemy runs it); SQLAlchemy's asyncpg adapter,
    only inside its transaction, active, without a savepoint or a context manager's check
    (SQLAlchemy begins one at its first statement, and refuses one a failed commit left)."""
    name = conn.dialect.driver
    if name not in PARAMSTYLES:
        return None
    sync = conn.sync_connection
    if sync is None or sync.closed or sync.invalidated:
        return None
    options = sync._execution_options
    if options and not _NEUTRAL_OPTIONS.issuperset(options):
        return None
    if name == "inline":
        if write and not sync.in_transaction():
            return None
        driver: sqlite3.Connection | None = sync.connection.driver_connection
        return driver
    transaction = sync._transaction
    if (
        transaction is None
        or not transaction.is_active
        or sync._nested_transaction is not None
        or sync._trans_context_manager is not None
    ):
        return None
    return cast(Adapter, sync.connection.dbapi_connection)


#: The drivers run directly, with the parameter style of the text SQLAlchemy compiles for them.
PARAMSTYLES = {"inline": "qmark", "asyncpg": "numeric_dollar"}


#: Execution options of a connection that leave what a statement runs and gives as it is: the
#: readers' AUTOCOMMIT is in force on the driver connection already. Any other (a
#: `schema_translate_map`, a `compiled_cache`, an `insertmanyvalues_page_size`...) is SQLAlchemy's
#: to apply.
_NEUTRAL_OPTIONS = frozenset({"isolation_level", "logging_token"})

#: Where the value of each parameter (`?`, `$n`) comes from: the parameter's name, the index of the value in it
#: for an expanding IN (-1: the value itself), and its conversion (None: as it is).
_Bind = tuple[str, int, Callable[[Any], Any] | None]
#: How a row is made of what the driver gives: SQLAlchemy's `Row` of the result's metadata, and
#: the conversion of each column (None: none of them converts).
Rows = tuple[Callable[[Any, Any], AnyRow], Sequence[Callable[[Any], Any] | None] | None]


class TypedRows:
    """How a row is made, for each set of types the driver gives the columns (asyncpg: a column's
    conversion may depend on its type in the server, as a numeric's does, and SQLAlchemy
    chooses it by the type the driver describes)."""

    __slots__ = ("_compiled", "_dialect", "_made")

    def __init__(self, dialect: Dialect, compiled: SQLCompiler) -> None:
        self._dialect = dialect
        self._compiled = compiled
        self._made: dict[tuple[int, ...], Rows] = {}

    def rows(self, columns: Sequence[Any]) -> Rows:
        """For asyncpg's attributes of the result (each with its type's oid)."""
        types = tuple([column.type.oid for column in columns])
        made = self._made.get(types)
        if made is None:
            made = row_maker(self._dialect, self._compiled, types)
            assert made is not None  # (a plan is made only of a statement whose rows it can make)
            self._made[types] = made
        return made


def rows_of(dialect: Dialect, compiled: SQLCompiler) -> Rows | TypedRows:
    """How the driver's rows of `compiled` are made (`row_maker`; on asyncpg, `TypedRows`)."""
    if dialect.driver == "asyncpg":
        return TypedRows(dialect, compiled)
    return row_maker(dialect, compiled) or _NO_ROWS


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    binds: tuple[_Bind, ...]
    given: Mapping[str, Any]  # values the statement carries (a LIMIT's OFFSET 0), by name
    rows: Rows | TypedRows


def _plan(
    dialect: Dialect, stmt: Readable, params: Mapping[str, Any], *, rows: bool
) -> tuple[_Plan, Mapping[str, Any]] | None:
    """The plan of `stmt` for `params`, with the values to run it with: those of an expanding
    IN as a list (SQLAlchemy takes any collection, a set too), and one the plan takes more
    values than given padded with its last (an IN's answer is the same), so that a plan serves
    every number of values up to its own (`_sized`); None when SQLAlchemy must run it."""
    keys = tuple(sorted(params))
    plan = _base(dialect, stmt, keys, rows)
    if not isinstance(plan, tuple):
        return None if plan is None else (plan, params)
    counts: list[int] = []
    values = params
    for name, given, padded in plan:
        if name not in params:
            if given < 0:
                return None
            counts.append(given)
            continue
        value = params[name]
        if not isinstance(value, list | tuple):
            try:
                value = list(value)
            except TypeError:
                return None  # SQLAlchemy says what is wrong with it
        count = len(value)
        size = _sized(count) if padded else count
        if size is None:
            return None
        if size != count:
            value = [*value, *value[-1:] * (size - count)]
        if value is not params[name]:
            values = {**values, name: value}
        counts.append(size)
    return _expanded(dialect, stmt, keys, rows, tuple(counts)), values


#: The most values of an expanding IN run on the driver: a plan for each number up to 8, then
#: for each power of two up to this (more SQLAlchemy runs, expanding the IN anew each time).
_MOST_VALUES = 1024


def _sized(count: int) -> int | None:
    """The number of values of the plan for `count` values of an IN: every number of values a
    text of its own would cost a compilation and a plan kept (about 95 bytes a value)."""
    if count <= 8:
        return count
    if count > _MOST_VALUES:
        return None
    return 1 << (count - 1).bit_length()


@functools.cache
def _base(
    dialect: Dialect, stmt: Readable, keys: tuple[str, ...], rows: bool
) -> _Plan | tuple[tuple[str, int, bool], ...] | None:
    """The plan of `stmt` for parameters of these names; when its text depends on the numbers
    of values of its expanding parameters (`_expanded`), their names, each with the number of
    the values the statement carries for it (-1: none, or computed when it runs) and whether
    its values may be padded (it is only ever the list of an IN or a NOT IN, which repeated
    values do not change); None when SQLAlchemy must run it."""
    compiled = _compiled(dialect, stmt, keys, rows)
    if compiled is None:
        return None
    if compiled.post_compile_params:
        given = _given(compiled)
        text = compiled.string
        return tuple(
            (
                name,
                len(given[name]) if isinstance(given.get(name), list | tuple) else -1,
                text.count(f"__[POSTCOMPILE_{name}]") == text.count(f" IN (__[POSTCOMPILE_{name}])"),
            )
            for name in sorted(compiled.bind_names[b] for b in compiled.post_compile_params)
        )
    processors = cast(Mapping[str, Callable[[Any], Any]], compiled._bind_processors)
    return _Plan(
        compiled.string,
        tuple((name, -1, processors.get(name)) for name in compiled.positiontup or ()),
        _given(compiled),
        rows_of(dialect, compiled) if rows else _NO_ROWS,
    )


def _compiled(dialect: Dialect, stmt: Readable, keys: tuple[str, ...], rows: bool) -> SQLCompiler | None:
    """`stmt` compiled as SQLAlchemy compiles it for parameters of these names; None when
    SQLAlchemy must run it."""
    if stmt._execution_options:  # (what they ask of the execution only SQLAlchemy knows)
        return None
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    assert isinstance(compiled, SQLCompiler)
    binds = compiled.bind_names
    if (
        dialect.paramstyle != PARAMSTYLES.get(dialect.driver)
        or compiled.positiontup is None
        or not _one_value_a_name(binds)
        or compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.literal_execute_params
        or compiled.escaped_bind_names
        or any(not b.expanding or b.type._is_tuple_type for b in compiled.post_compile_params)
        or (isinstance(stmt, sa.Insert) and not rows)  # (SQLAlchemy reads the key it inserted)
        or bool(compiled.effective_returning) != (rows and isinstance(stmt, sa.Insert | sa.Update | sa.Delete))
        or (rows and row_metadata(compiled) is None)
    ):
        return None
    return compiled


def _one_value_a_name(binds: Mapping[BindParameter[Any], str]) -> bool:
    """Whether each name is one value: a name of several parameters is one given by the run
    (converted as SQLAlchemy converts it, by the type it took for the name), none of them
    carrying a value of its own."""
    if len(set(binds.values())) == len(binds):
        return True
    seen: dict[str, int] = {}
    for name in binds.values():
        seen[name] = seen.get(name, 0) + 1
    return all(bind.required for bind, name in binds.items() if seen[name] > 1)


@functools.lru_cache(maxsize=512)  # (numbers of values are `_sized`: 16 of them for an IN)
def _expanded(dialect: Dialect, stmt: Readable, keys: tuple[str, ...], rows: bool, counts: tuple[int, ...]) -> _Plan:
    """The plan for these numbers of values of the expanding parameters (in name order): the
    text SQLAlchemy renders for them."""
    compiled = _compiled(dialect, stmt, keys, rows)
    assert compiled is not None
    expanding = sorted(compiled.bind_names[b] for b in compiled.post_compile_params)
    values: dict[str, Any] = dict.fromkeys(compiled.bind_names.values())
    values.update({name: [None] * count for name, count in zip(expanding, counts, strict=True)})
    state = compiled.construct_expanded_state(values, escape_names=False)
    where = {
        expanded: (name, i) for name, names in state.parameter_expansion.items() for i, expanded in enumerate(names)
    }
    processors = cast(dict[str, Callable[[Any], Any]], {**compiled._bind_processors, **state.processors})
    binds = tuple((*where.get(name, (name, -1)), processors.get(name)) for name in state.positiontup or ())
    return _Plan(state.statement, binds, _given(compiled), rows_of(dialect, compiled) if rows else _NO_ROWS)


def _given(compiled: SQLCompiler) -> Mapping[str, Any]:
    """The values the statement itself carries, for the parameters a run may leave out."""
    given: dict[str, Any] = {}
    for bind, name in compiled.bind_names.items():
        assert isinstance(bind, BindParameter)
        if not bind.required:
            given[name] = _Call(bind.callable) if bind.callable is not None else bind.value
    return given


@dataclass(frozen=True, slots=True)
class _Call:
    """A value computed when the statement runs (a bind parameter's `callable_`)."""

    make: Callable[[], Any]


_NO_ROWS: Rows = (lambda processors, raw: raw, None)


def row_maker(dialect: Dialect, compiled: SQLCompiler, types: Sequence[Any] | None = None) -> Rows | None:
    """How SQLAlchemy makes a row of each result row of `compiled` (its columns matched by
    their place, each through its type's result conversion, for the type the driver gives the
    column in `types` if it says); None when it matches them by name instead, or when a name
    means two columns (`row_metadata`)."""
    metadata = row_metadata(compiled)
    if metadata is None:
        return None
    key_to_index = metadata._key_to_index
    columns = compiled._result_columns
    assert types is None or len(types) == len(columns)
    processors = [
        type_._cached_result_processor(dialect, types[i] if types is not None else None)
        for i, (*_, type_) in enumerate(columns)
    ]

    def make(processors: Any, raw: Any) -> AnyRow:
        return Row(metadata, processors, key_to_index, raw)

    return make, processors if any(p is not None for p in processors) else None


def row_metadata(compiled: SQLCompiler) -> SimpleResultMetaData | None:
    """The metadata of SQLAlchemy's rows of `compiled`, when it matches their columns by their
    place; None when it matches them by name instead (or may: a literal column), or when a name
    means two columns."""
    columns = compiled._result_columns
    if not columns or not compiled._ordered_columns or compiled._textual_ordered_columns:
        return None
    if compiled._loose_column_name_matching:
        return None
    if any(getattr(o, "is_literal", False) for _, _, objects, _ in columns for o in objects):
        return None  # (a literal column may stand for several, `t.*`: SQLAlchemy then matches by name)
    keys = [keyname for keyname, *_ in columns]
    extra = [_more_keys(keyname, (name, *objects)) for keyname, name, objects, _ in columns]
    every = [key for key, more in zip(keys, extra, strict=True) for key in (key, *more)]
    if len(set(every)) != len(every):  # (SQLAlchemy would refuse the ambiguous name)
        return None
    return _Metadata(keys, extra)


class _Metadata(SimpleResultMetaData):
    """The metadata of the rows: a key no column has is SQLAlchemy's `NoSuchColumnError` (a
    `KeyError`), as a cursor result's rows say it."""

    __slots__ = ()

    def _key_fallback(self, key: Any, err: Exception | None, raiseerr: bool = True) -> NoReturn:
        raise sa.exc.NoSuchColumnError(
            f"Could not locate column in row for column '{sa.util.string_or_unprintable(key)}'"
        ) from err


def _more_keys(keyname: str, keys: Sequence[Any]) -> tuple[Any, ...]:
    """The other keys SQLAlchemy finds a result column by (its name, its column objects), each once."""
    more: dict[Any, None] = {}
    for key in keys:
        if not (isinstance(key, str) and key == keyname):
            more[key] = None
    return tuple(more)


def _values(plan: _Plan, params: Mapping[str, Any]) -> list[Any]:
    """The values to run the plan with, each through its conversion; refused as SQLAlchemy
    refuses them."""
    values: list[Any] = []
    try:
        for name, index, convert in plan.binds:
            value = params[name] if name in params else _value(plan.given, name)
            if index >= 0:
                value = value[index]
            values.append(convert(value) if convert is not None else value)
    except Exception as exc:  # a value its parameter cannot take, or a parameter left out
        raise sa.exc.StatementError(f"({type(exc).__name__}) {exc}", plan.sql, values, exc) from exc
    return values


async def begin(conn: AsyncConnection, sql: str = "BEGIN") -> None:
    """Open SQLite's transaction with `sql` (`BEGIN`, `BEGIN IMMEDIATE`) on `conn` and begin
    SQLAlchemy's with it, as `conn.exec_driver_sql(sql)` does (SQLAlchemy's own BEGIN sends
    nothing on this driver), without an execution context and a result for it.

    On PostgreSQL (asyncpg) SQLAlchemy's transaction, as `await conn.begin()` begins it but
    without a greenlet: it sends nothing (`sql` is SQLite's), the adapter sends BEGIN, with the
    connection's isolation level, before the first statement."""
    sync = conn.sync_connection
    if conn.dialect.driver == "asyncpg":
        if sync is None or sync.closed or sync.invalidated or sync.in_transaction():
            await conn.begin()
        else:
            sync.begin()
        return
    driver = driver_of(conn, write=False)
    if driver is None or sync is None or sync.in_transaction() or not isinstance(driver, sqlite3.Connection):
        await conn.exec_driver_sql(sql)
        return
    sync.begin()
    on_driver(conn, driver, sql, ())


async def commit(conn: AsyncConnection) -> None:
    """`await conn.commit()`; on PostgreSQL (asyncpg), with the COMMIT awaited on the driver
    (`kit.asyncpg_driver.commit`) where the statements would run on it."""
    driver = driver_of(conn, write=True)
    if driver is None or isinstance(driver, sqlite3.Connection):
        await conn.commit()
    else:
        await asyncpg_driver.commit(conn, driver)


def on_driver(conn: AsyncConnection, driver: sqlite3.Connection, sql: str, values: Sequence[Any]) -> sqlite3.Cursor:
    """Run `sql` once on `driver`, the driver connection of `conn`; its refusal is SQLAlchemy's
    exception (`refused`)."""
    cursor: sqlite3.Cursor | None = None
    try:
        cursor = driver.cursor()
        cursor.execute(sql, values)  # its cursor counts the statement (kit.sqlite_driver)
        return cursor
    except sqlite3.Error as exc:
        refused(conn, exc, sql, values, cursor)


def refused(
    conn: AsyncConnection, exc: sqlite3.Error, sql: str, values: Sequence[Any], cursor: sqlite3.Cursor | None
) -> NoReturn:
    """Raise the driver's `exc` as SQLAlchemy raises it (`IntegrityError`, `OperationalError`...)
    and do what SQLAlchemy does with its connection: one the driver says is gone (a closed
    database) is invalidated, with the pool's others (SQLAlchemy's `connection_invalidated`:
    a transient error, the next checkout connects anew), not handed back to the pool."""
    sync = conn.sync_connection
    if sync is None:
        raise sa.exc.DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
    sync._handle_dbapi_exception(exc, sql, values, cast(Any, cursor), None)


def _value(given: Mapping[str, Any], name: str) -> Any:
    if name not in given:
        raise sa.exc.InvalidRequestError(f"A value is required for bind parameter {name!r}")
    value = given[name]
    return value.make() if isinstance(value, _Call) else value


def scalar_one(rows: Sequence[AnyRow]) -> Any:
    """The first column of the one row of `rows`, refused as SQLAlchemy's `scalar_one` refuses
    none or several."""
    if len(rows) != 1:
        if not rows:
            raise sa.exc.NoResultFound("No row was found when one was required")
        raise sa.exc.MultipleResultsFound("Multiple rows were found when exactly one was required")
    return rows[0][0]
