"""Inserts: many rows at once (`insert_rows`), and inserts that meet an existing row (`ON
CONFLICT DO NOTHING` and `ON CONFLICT DO UPDATE`), in the dialect of the connection (SQLite and
PostgreSQL spell them alike but are built apart).

Statements are built once per dialect and table and run with the values as parameters:
building a SQLAlchemy statement costs more than the database takes to run it.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection


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
    indexes. Elsewhere, or for a table with defaults computed in Python, it is SQLAlchemy's."""
    if not rows:
        return
    sync = conn.sync_connection
    plan = (
        _driver_plan(conn.dialect, table, tuple(rows[0]), ignore)
        if conn.dialect.driver == "inline" and sync is not None and not sync.invalidated and sync.in_transaction()
        else None
    )
    if plan is None:
        await conn.execute(insert_ignore(conn, table) if ignore else table.insert(), rows)
        return
    assert sync is not None
    sql, columns, processors = plan
    driver = sync.connection.driver_connection
    assert driver is not None
    values: list[tuple[Any, ...]] = []
    try:
        values = [
            tuple(p(row[c]) if p is not None else row[c] for c, p in zip(columns, processors, strict=True))
            for row in rows
        ]
        driver.cursor().executemany(sql, values)  # its cursor counts the statement (kit.sqlite_driver)
    except sqlite3.Error as exc:  # as SQLAlchemy would raise it (IntegrityError, OperationalError...)
        raise sa.exc.DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
    except Exception as exc:  # a value its column cannot take, or a row without a column
        raise sa.exc.StatementError(f"({type(exc).__name__}) {exc}", sql, values, exc) from exc


@functools.cache
def _driver_plan(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...], ignore: bool
) -> tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]] | None:
    """The SQL and each column's conversion of an insert straight to SQLite's driver; None when
    a column left out has a default SQLAlchemy computes in Python (SQLAlchemy must insert)."""
    columns = tuple(c for c in columns if c in table.c)  # as SQLAlchemy, other keys are not looked at
    named = set(columns)
    if any(c.default is not None and c.name not in named for c in table.c):
        return None
    processors = tuple(table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns)
    quote = dialect.identifier_preparer.quote
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)}){' ON CONFLICT DO NOTHING' if ignore else ''}"
    )
    return sql, columns, processors
