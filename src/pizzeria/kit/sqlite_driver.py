"""SQLite for asyncio without a thread hop per call.

aiosqlite runs every call on a worker thread; SQLAlchemy makes four such calls per statement
(open cursor, execute, fetch, close). On virtual machines, where waking another thread costs
hundreds of microseconds, that turns a 20 µs statement into milliseconds. SQLite answers from
local memory and disk in microseconds, so this adapter runs it inline on the event loop's
thread, behind the same async interface SQLAlchemy's aiosqlite dialect drives.

The one thing that may never block the loop is waiting for another process's write lock, so
connections use `busy_timeout=0`: `BEGIN IMMEDIATE` fails at once with "database is locked" and
`Database` retries it with an asyncio sleep instead (see `kit.db`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pizzeria.kit.metrics import db_statements, db_transactions

_count_statement = db_statements.inc
_count_transaction = db_transactions.inc


class InlineCursor:
    """aiosqlite's cursor interface over a plain sqlite3 cursor."""

    __slots__ = ("_cursor",)

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._cursor = connection.cursor()

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        self._cursor.execute(sql, parameters or ())
        _count_statement()
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        _count_statement()
        return self

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _InlineQueue:
    """Stands in for aiosqlite's request queue, which SQLAlchemy uses to set the isolation level."""

    def __init__(self) -> None:
        pass

    @staticmethod
    def put_nowait(item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)


class InlineConnection:
    """aiosqlite's connection interface over a plain sqlite3 connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._connection: sqlite3.Connection | None = connection
        self._tx = _InlineQueue()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn)

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        cursor = InlineCursor(self._conn)
        return await cursor.execute(sql, parameters)

    async def commit(self) -> None:
        if self._conn.in_transaction:
            _count_transaction()
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def inline_connector(path: str, *, setup: Callable[[sqlite3.Connection], None]) -> Callable[[], Any]:
    """An `async_creator` for `create_async_engine`: opens `path` and runs `setup` on it."""

    async def connect() -> InlineConnection:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        setup(connection)
        return InlineConnection(connection)

    return connect
