"""Inserts that meet an existing row: `ON CONFLICT DO NOTHING` and `ON CONFLICT DO UPDATE`, in
the dialect of the connection (SQLite and PostgreSQL spell them alike but are built apart).

Statements are built once per dialect and table and run with the values as parameters:
building a SQLAlchemy statement costs more than the database takes to run it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
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
