"""Statements, and COMMIT, awaited on asyncpg directly under SQLAlchemy's connection: what its
asyncpg adapter does for a statement, without the greenlet SQLAlchemy runs it in and the
execution context and result it makes around it (`kit.statements` plans the statement and makes
the rows).

Each step is the adapter's own, in the order it takes them (`AsyncAdapt_asyncpg_cursor.
_prepare_and_execute`, `_executemany`): under its lock, the server transaction begun at the
first statement with the isolation level, read-only and deferrable set on it (none under
AUTOCOMMIT), the statement prepared once per connection in its cache of prepared statements,
then run. A refusal goes through its translation to SQLAlchemy's driver exceptions and then
SQLAlchemy's `Connection._handle_dbapi_exception`: the same `IntegrityError` (with asyncpg's
`sqlstate`), a connection found closed invalidated (`connection_invalidated`), a task cancelled
mid-statement invalidating it as SQLAlchemy does. The server keeps a failed transaction failed
until its rollback, whichever way its next statement goes.

SQLAlchemy internals relied on (SQLAlchemy's version is pinned), all here:
`AsyncAdapt_asyncpg_connection._execute_mutex`, `._transaction`, `._start_transaction`,
`._prepare`, `._check_type_cache_invalidation`, `._handle_exception`, `._call_and_discard`,
`._connection`; `PGDialect_asyncpg._invalidate_schema_cache_asof`; `Connection.
_handle_dbapi_exception` (run in SQLAlchemy's greenlet, `greenlet_spawn`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Sequence
from contextvars import ContextVar
from typing import Any, NoReturn, Protocol, TypeAlias, cast

from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import greenlet_spawn

from pizzeria.kit.metrics import db_statements

#: SQLAlchemy's connection of the asyncpg driver (its "DBAPI connection").
Adapter: TypeAlias = AsyncAdapt_asyncpg_connection

_count_statement = db_statements.inc


class Held(Protocol):
    """Writes held back on one connection to go to the server later, together
    (`kit.upsert.inserts_together`): whatever else runs on that connection first sends them."""

    conn: AsyncConnection
    parts: list[Any]

    def release(self) -> Awaitable[None]: ...


#: The writes held back in this context, if any.
holding: ContextVar[Held | None] = ContextVar("pizzeria_held_writes", default=None)


async def release_held(conn: AsyncConnection) -> None:
    """Send the writes held back on `conn` now (before a statement that does not go through
    this module: SQLAlchemy's own `execute`)."""
    if (held := holding.get()) is not None and held.parts and held.conn is conn:
        await held.release()


async def fetch(conn: AsyncConnection, adapter: Adapter, sql: str, values: Sequence[Any]) -> tuple[Any, Any, int]:
    """Run `sql` once with `values` on `adapter`, the asyncpg adapter of `conn`: its records, their
    attributes (name and type of each column), and its rowcount as the adapter reads it. Writes
    held back on `conn` go first."""
    if (held := holding.get()) is not None and held.parts and held.conn is conn:
        await held.release()
    _count_statement()
    its: Any = adapter  # (untyped)
    try:
        async with adapter._execute_mutex:
            if adapter._transaction is None:
                await its._start_transaction()
            dialect: Any = conn.dialect
            prepared, attributes = await its._prepare(sql, dialect._invalidate_schema_cache_asof)
            records = await prepared.fetch(*values)
            found = _ROWCOUNT.match(prepared.get_statusmsg() or "")
            return records, attributes, int(found.group(1)) if found else -1
    except BaseException as exc:
        await refused(conn, adapter, exc, sql, values)


#: The adapter's reading of a statement's rowcount from its status ("UPDATE 3").
_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")


async def fetch_many(conn: AsyncConnection, adapter: Adapter, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `sql` once for each of `rows` on `adapter` (asyncpg's executemany: one statement,
    counted once, as SQLAlchemy counts it; no rowcount). Writes held back on `conn` go first."""
    if (held := holding.get()) is not None and held.parts and held.conn is conn:
        await held.release()
    _count_statement()
    its: Any = adapter  # (untyped)
    try:
        async with adapter._execute_mutex:
            dialect: Any = conn.dialect
            await its._check_type_cache_invalidation(dialect._invalidate_schema_cache_asof)
            if adapter._transaction is None:
                await its._start_transaction()
            await its._connection.executemany(sql, rows)
    except BaseException as exc:
        await refused(conn, adapter, exc, sql, rows)


async def commit(conn: AsyncConnection, adapter: Adapter) -> None:
    """`conn.commit()`: the server's COMMIT awaited on asyncpg, then SQLAlchemy's commit, which
    ends its transaction as after its own (counted as one; the adapter has nothing left to send).
    A failed COMMIT is handed to SQLAlchemy's own commit to meet (`_Failed`), as if it had sent it.
    Writes held back on `conn` go first."""
    if (held := holding.get()) is not None and held.parts and held.conn is conn:
        await held.release()
    transaction = adapter._transaction
    if transaction is not None:
        try:
            await adapter._call_and_discard(transaction.commit)
        except BaseException as exc:
            adapter._transaction = cast(Any, _Failed(exc))
            await conn.commit()
            raise  # (SQLAlchemy raised already)
    sync = conn.sync_connection
    assert sync is not None
    sync.commit()


class _Failed:
    """An asyncpg transaction whose COMMIT failed with `error`, for SQLAlchemy's commit to meet."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def commit(self) -> None:
        raise self.error


async def refused(conn: AsyncConnection, adapter: Adapter, exc: BaseException, sql: str, values: Any) -> NoReturn:
    """Raise `exc` as SQLAlchemy raises it, translated by the adapter (`IntegrityError`...), and do
    what SQLAlchemy does with the connection (invalidated when the driver says it is closed, or
    when the task was cancelled mid-statement), in its greenlet as it does: there the adapter
    closes an invalidated connection gracefully, so that a statement cancelled midway is
    cancelled in the server too (asyncpg's cancel request), not left running there with its
    transaction's locks until it ends (outside one the adapter drops the socket at once)."""
    error: BaseException = exc
    if isinstance(exc, Exception):
        try:
            adapter._handle_exception(exc)
        except Exception as translated:
            error = translated
    sync = conn.sync_connection
    if sync is None:
        raise error
    dbapi: Any = conn.dialect.loaded_dbapi
    if isinstance(error, dbapi.InvalidCachedStatementError | dbapi.InternalServerError):
        cast(Any, conn.dialect)._invalidate_schema_cache()  # (its execution context's handling)
    await greenlet_spawn(_handle, sync, error, sql, values)
    raise error  # (never: SQLAlchemy raised)


def _handle(sync: Connection, error: BaseException, sql: str, values: Any) -> NoReturn:
    """SQLAlchemy's handling of `error`, raised where it meets it (it reads the exception being
    handled)."""
    try:
        raise error
    except BaseException as raised:
        sync._handle_dbapi_exception(raised, sql, values, None, None)
