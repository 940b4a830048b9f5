"""SQLite for asyncio without a thread hop, and without a greenlet hop, per call.

aiosqlite runs every call on a worker thread; SQLAlchemy makes four such calls per statement
(open cursor, execute, fetch, close). On virtual machines, where waking another thread costs
hundreds of microseconds, that turns a 20 µs statement into milliseconds. SQLite answers from
local memory and disk in microseconds, so this dialect runs it inline on the event loop's
thread.

It is SQLAlchemy's own `sqlite3` dialect, declared asynchronous so that the asyncio extension
(`AsyncEngine`, `AsyncConnection`) drives it, and its connections run statements, commits and
rollbacks directly: the extension runs each call in a greenlet and switches out of it and back
to await each call of an asynchronous driver (an empty write transaction made about twenty such
switches, half its CPU on this machine), where a driver that never waits needs none of them.
Taking a connection from the pool runs in a greenlet only when none is idle in it.

Rows are fetched when a statement runs, as the asynchronous drivers do, so a result read after
the next statement of its transaction still holds what its own statement found.

The one thing that may never block the loop is waiting for another process's write lock, so
connections use `busy_timeout=0`: `BEGIN IMMEDIATE` fails at once with "database is locked" and
`Database` retries it with an asyncio sleep instead (see `kit.db`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool
from sqlalchemy.util.concurrency import greenlet_spawn

from pizzeria.kit.metrics import db_statements, db_transactions

#: The driver name of the dialect in a database URL (`sqlite+inline:///path`).
DRIVER = "sqlite+inline"

_count_statement = db_statements.inc
_count_transaction = db_transactions.inc


class BufferedCursor(sqlite3.Cursor):
    """A cursor that reads every row of its statement when the statement runs."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__(connection)
        self._rows: list[Any] = []
        self._at = 0

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = (), /) -> BufferedCursor:  # type: ignore[override]
        super().execute(sql, parameters)
        _count_statement()
        self._rows = super().fetchall() if self.description else []
        self._at = 0
        return self

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> BufferedCursor:  # type: ignore[override]
        super().executemany(sql, parameters)
        _count_statement()
        self._rows = super().fetchall() if self.description else []
        self._at = 0
        return self

    def fetchone(self) -> Any:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchmany(self, size: int | None = None) -> list[Any]:
        end = self._at + (size if size is not None else self.arraysize)
        rows = self._rows[self._at : end]
        self._at += len(rows)
        return rows

    def fetchall(self) -> list[Any]:
        rows = self._rows[self._at :] if self._at else self._rows
        self._at = len(self._rows)
        return rows


class InlineConnection(sqlite3.Connection):
    """A `sqlite3` connection whose cursors read their rows at once and whose commits are
    counted (the benchmark reports statements and transactions per order from them)."""

    def cursor(self, factory: Any = BufferedCursor) -> Any:
        return super().cursor(factory)

    def commit(self) -> None:
        if self.in_transaction:
            _count_transaction()
        super().commit()


class InlineSQLiteDialect(SQLiteDialect_pysqlite):
    """SQLAlchemy's `sqlite3` dialect, for the asyncio extension (see the module's text)."""

    driver = "inline"
    is_async = True
    supports_statement_cache = True

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool if cls._is_url_file_db(url) else pool.StaticPool


class InlineAsyncConnection(AsyncConnection):
    """An `AsyncConnection` that runs statements, commits, rollbacks and its return to the pool
    on its driver directly (the driver never waits), and takes its connection from the pool
    directly when one is idle in it. A statement on a connection that was invalidated takes the
    usual way, in a greenlet: it reconnects first, which takes a connection from the pool."""

    async def start(self, is_ctxmanager: bool = False) -> InlineAsyncConnection:
        pool = self.sync_engine.pool
        if self.sync_connection or not isinstance(pool, QueuePool) or not _takes_without_waiting(pool):
            await super().start(is_ctxmanager)
        else:
            self.sync_connection = self._assign_proxied(self.sync_engine.connect())
        return self

    async def execute(self, statement: Any, parameters: Any = None, *, execution_options: Any = None) -> Any:
        conn = self._proxied
        if conn.invalidated:
            return await greenlet_spawn(conn.execute, statement, parameters, execution_options=execution_options)
        return conn.execute(statement, parameters, execution_options=execution_options)

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None, execution_options: Any = None
    ) -> CursorResult[Any]:
        conn = self._proxied
        if conn.invalidated:
            return await greenlet_spawn(conn.exec_driver_sql, statement, parameters, execution_options)
        return conn.exec_driver_sql(statement, parameters, execution_options)

    async def commit(self) -> None:
        self._proxied.commit()

    async def rollback(self) -> None:
        self._proxied.rollback()

    async def close(self) -> None:
        self._proxied.close()  # back to the pool, which never waits to take one back


def _takes_without_waiting(pool: QueuePool) -> bool:
    """True if a connection is idle in `pool`: taking it then neither waits nor opens one (whose
    first opening takes an asyncio lock), and nothing else runs on the loop between this look
    and the taking."""
    return pool.checkedin() > 0


class InlineAsyncEngine(AsyncEngine):
    """An `AsyncEngine` whose connections are `InlineAsyncConnection`s."""

    _connection_cls = InlineAsyncConnection


registry.register("sqlite.inline", __name__, "InlineSQLiteDialect")


def inline_connector(path: str, *, setup: Callable[[sqlite3.Connection], None]) -> Callable[[], InlineConnection]:
    """A `creator` for `create_async_engine`: opens `path` and runs `setup` on it."""

    def connect() -> InlineConnection:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=InlineConnection)
        setup(connection)
        return connection

    return connect
