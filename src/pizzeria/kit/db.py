"""One service's database: async engines for SQLite (embedded) or PostgreSQL (production).

SQLite allows one writer at a time, so writes go through a one-connection engine that opens
`BEGIN IMMEDIATE` (no lock-upgrade deadlocks across processes), while reads use a pool of their
own and never wait for a writer (WAL). On PostgreSQL both roles share one pooled engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from pizzeria.kit.clock import as_utc
from pizzeria.kit.logging import get_logger
from pizzeria.kit.metrics import db_statements, db_transactions
from pizzeria.kit.sqlite_driver import DRIVER, InlineAsyncEngine, inline_connector
from pizzeria.kit.statements import begin, commit

log = get_logger(__name__)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)

    # On SQLite the value is text written and read here in one step: SQLAlchemy's own SQLite
    # DATETIME builds its text field by field and parses it with a regular expression, which
    # costs several times the C functions below (and every row of every table has a time).
    # The text is the same: `YYYY-MM-DD HH:MM:SS.ffffff`, in UTC.

    def bind_processor(self, dialect: Any) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_time_texts()

    def result_processor(self, dialect: Any, coltype: Any) -> Callable[[Any], datetime | None] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        return _sqlite_time


def _sqlite_time_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    tz = value.tzinfo
    if tz is UTC:  # the usual: "+00:00" is all there is to take off
        return value.isoformat(" ", "microseconds")[:-6]
    if tz is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def _sqlite_time_texts() -> Callable[[datetime | None], str | None]:
    """`_sqlite_time_text` for one column (SQLAlchemy keeps one per column type, the driver's
    paths one per statement plan), which remembers the last time it made text: a statement's
    rows often share one time (a run's inbox claims, a transaction's outbox rows, a run's audit
    entries), then formatted once. Holding the datetime keeps it alive, so no other one can be
    the same object; the pair is replaced whole."""
    last: list[tuple[datetime | None, str | None]] = [(None, None)]

    def text(value: datetime | None) -> str | None:
        seen = last[0]
        if value is seen[0]:
            return seen[1]
        made = _sqlite_time_text(value)
        last[0] = (value, made)
        return made

    return text


def _sqlite_time(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return as_utc(parsed)


#: SQLSTATE classes a retry can get past: connection exceptions, insufficient resources (too many
#: clients, out of memory), operator intervention (shutting down, cannot connect now), and
#: transaction rollback (serialization failure, deadlock).
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "40"})


def _sqlstate(exc: sa.exc.DBAPIError) -> str:
    """The SQLSTATE the driver's error carries (asyncpg: `sqlstate`, psycopg: `pgcode`), or ""."""
    return str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")


def is_transient_error(exc: BaseException) -> bool:
    """True for failures a retry can fix: a dropped or refused connection, a restarting or
    overloaded server, a lock that did not clear in time. Not for constraint violations or bad
    SQL."""
    if isinstance(exc, sa.exc.DBAPIError):
        return (
            exc.connection_invalidated
            or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
            or _sqlstate(exc)[:2] in _TRANSIENT_SQLSTATE_CLASSES
        )
    return isinstance(exc, OSError | ConnectionError | TimeoutError)


#: SQLSTATEs of the transient classes that waiting does not fix: a statement cancelled by its
#: own timeout (57014) would time out again.
_NOT_WORTH_WAITING_SQLSTATES = frozenset({"57014"})


def is_outage(exc: BaseException) -> bool:
    """True for failures that waiting gets past: the database or the network unreachable or
    restarting, a lock or a serialization conflict that clears. Narrower than
    `is_transient_error`, which also retries at once what may be a defect: on SQLite every
    `OperationalError` (a missing table too) is only an outage when the database is locked or
    busy; a statement cancelled by its timeout, a missing file, a refused permission are not."""
    if not is_transient_error(exc):
        return False
    if isinstance(exc, sa.exc.DBAPIError):
        if isinstance(exc.orig, sqlite3.Error):
            return exc.connection_invalidated or _is_locked(exc) or "busy" in str(exc.orig).lower()
        return _sqlstate(exc) not in _NOT_WORTH_WAITING_SQLSTATES
    return not isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError)


#: JSON stored as JSONB on PostgreSQL, as text on SQLite.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class _OneOf(sa.sql.expression.ColumnElement[bool]):
    """See `one_of`."""

    inherit_cache = True
    type = sa.Boolean()
    _is_implicitly_boolean = True  # a condition as it is (not `= 1` where booleans are integers)
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement), ("name", InternalTraversal.dp_string)]

    def __init__(self, column: sa.ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name

    @property
    def _from_objects(self) -> list[Any]:  # the column's table is in FROM, as with IN
        return self.column._from_objects


def one_of(column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
    """`column IN (...)` the values of the parameter `name` (any collection). On PostgreSQL
    `column = ANY(:name)` with the values as one array: the statement's text is the same
    whatever their number, so it is compiled, prepared (a round trip, and a parse and plan in
    the server) and cached once, not once per number of values as an expanding IN is — whose
    text is also built again, and renumbered, for every execution. Elsewhere an expanding IN."""
    return _OneOf(column, name)


@compiles(_OneOf)
def _one_of_in(element: _OneOf, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column.in_(sa.bindparam(element.name, expanding=True)), **kw))


@compiles(_OneOf, "postgresql")
def _one_of_any(element: _OneOf, compiler: Any, **kw: Any) -> str:
    values = sa.bindparam(element.name, type_=ARRAY(element.column.type))
    return str(compiler.process(element.column == sa.any_(values), **kw))


#: The first key of every lock `hold_lock` takes ("lock"): PostgreSQL keeps two-key advisory
#: locks apart from one-key ones (the migrations' lock is one of those).
_NAMED_LOCKS = 0x6C6F636B


async def hold_lock(conn: AsyncConnection, name: str) -> None:
    """Take the lock called `name` for the rest of `conn`'s write transaction: what checks and
    then writes (seeding a new database once, from whichever replica starts first) takes it
    before it looks, so that a second one waits and then sees what the first did. On SQLite a
    write transaction holds the database's one write lock from its BEGIN IMMEDIATE already."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:name))"), {"space": _NAMED_LOCKS, "name": name}
        )


def _sqlite_engine(url: str, *, pool_size: int, busy_timeout_ms: int) -> AsyncEngine:
    path = make_url(url).database or ""

    def setup(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA busy_timeout=30000")  # patient while setting the connection up
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")

    return InlineAsyncEngine(
        create_async_engine(
            make_url(url).set(drivername=DRIVER),
            creator=inline_connector(path, setup=setup),
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=120,
            # The connection comes back rolled back already (or committed): no reset round trip.
            pool_reset_on_return=None,
            json_serializer=_json_text,
            json_deserializer=orjson.loads,
        ).sync_engine
    )


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sa.exc.OperationalError) and "locked" in str(exc.orig or exc).lower()


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _count_statements(engine: AsyncEngine) -> None:
    """Count what the engine sends (the benchmark reports statements per order from it) where
    the dialect hands it to the driver: an engine event listener would make SQLAlchemy dispatch
    its connection and cursor events on every checkout and statement. (The SQLite driver
    counts its own.)"""
    dialect = engine.sync_engine.dialect
    for name, counter in (
        ("do_execute", db_statements),
        ("do_executemany", db_statements),
        ("do_execute_no_params", db_statements),
        ("do_commit", db_transactions),
    ):
        setattr(dialect, name, _counting(getattr(dialect, name), counter.inc))


def _counting(call: Callable[..., Any], count: Callable[[], None]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        count()
        return call(*args, **kwargs)

    return counted


class Database:
    """Engines and transactions for one database URL."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # One writer connection: writes queue for it in-process instead of spinning on the
            # lock. It never waits inside SQLite for another process (that would block the
            # event loop): `begin_write` retries a locked BEGIN with an asyncio sleep.
            self.writer = _sqlite_engine(url, pool_size=1, busy_timeout_ms=0)
            self.reader = _sqlite_engine(url, pool_size=pool_size, busy_timeout_ms=2000)
        elif self.dialect == "postgresql":
            # No pre-ping (a round trip on every checkout): a connection found dead raises a
            # transient error, the pool drops all its connections, and the caller retries.
            self.writer = create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_recycle=1800,
                json_serializer=_json_text,
                json_deserializer=orjson.loads,
            )
            # Reads run without BEGIN and COMMIT: at READ COMMITTED every statement takes its
            # own snapshot inside a transaction too, so the two round trips bought nothing.
            # Same pool; the mode is set on the connection for the checkout.
            self.reader = self.writer.execution_options(isolation_level="AUTOCOMMIT")
            _count_statements(self.writer)
        else:
            raise ValueError(f"unsupported database {parsed.drivername!r}")

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    async def begin_write(self, timeout: float = 60.0) -> AsyncConnection:
        """A connection with a write transaction begun. On SQLite, while another process holds
        the write lock, wait for it without blocking the event loop."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            conn = await self.writer.connect()
            try:
                # SQLite: take the write lock now, no lock upgrade deadlocks (and SQLAlchemy's
                # transaction). PostgreSQL: BEGIN goes with the first statement.
                await begin(conn, "BEGIN IMMEDIATE")
                return conn
            except BaseException as exc:
                await conn.close()
                if not _is_locked(exc) or time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: commits on success, rolls back on any exception."""
        conn = await self.begin_write()
        try:
            yield conn
            await commit(conn)
        except BaseException:
            if conn.in_transaction():
                with contextlib.suppress(Exception):
                    await conn.rollback()
            raise
        finally:
            await conn.close()

    @asynccontextmanager
    async def read(self, *, snapshot: bool = True) -> AsyncIterator[AsyncConnection]:
        """Reads that never block writers: on SQLite one snapshot for the block, on PostgreSQL
        (read committed) one per statement. With `snapshot=False`, one per statement on SQLite
        too (no BEGIN and COMMIT around them), for reads that need none."""
        # Closed explicitly: `async with engine.connect()` closes in a task of its own (shielded
        # from cancellation), which costs a read more than its statement. No shield is needed:
        # a read's end (commit or rollback, close) sends nothing and never suspends, so no
        # cancellation can land in it (tests/integration/test_database.py holds that).
        conn = await self.reader.connect()
        try:
            if not snapshot and self.dialect == "sqlite":
                yield conn
                return
            # SQLite: one snapshot for every statement of the read. PostgreSQL: SQLAlchemy's
            # transaction, in which no BEGIN is sent (AUTOCOMMIT).
            await begin(conn)
            try:
                yield conn
            except BaseException:
                await conn.rollback()
                raise
            await commit(conn)
        finally:
            await conn.close()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    def pool_status(self) -> dict[str, int]:
        """Connections in use / idle, for the pool-usage gauge."""
        pool: Any = self.writer.pool
        try:
            return {"in_use": int(pool.checkedout()), "idle": int(pool.checkedin())}
        except AttributeError:
            return {"in_use": 0, "idle": 0}

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


class SessionLock:
    """A PostgreSQL advisory lock named `name`, held by a database session of its own for as long
    as that session lives: for what one process of a service at a time may do. `acquire` takes
    it if it is free; `holds` asks the server, in a round trip, whether the session (and so the
    lock) is still there; `release` ends the session. A session that died (the server restarted,
    the connection broke) has let the lock go: another process may hold it already."""

    def __init__(self, db: Database, name: str, *, idle_timeout_s: float | None = None) -> None:
        """The server ends the lock's session about half a minute after its holder's host went
        silent (`notice_vanished_peer`). With `idle_timeout_s` it also ends it once it has waited
        that long for the next statement: a holder whose process hangs (its operating system still
        answering the probes) lets the lock go too. The holder must
        then call `holds` more often than that."""
        if not db.is_postgres:
            raise ValueError("a session lock is PostgreSQL's")
        self.db = db
        self.name = name
        self.idle_timeout_s = idle_timeout_s
        self._conn: AsyncConnection | None = None

    @property
    def held(self) -> bool:
        """Whether this process took the lock (and has not seen its session end since)."""
        return self._conn is not None

    async def acquire(self) -> bool:
        if self._conn is not None:
            return True
        conn = await self.db.writer.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = (
                await conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:space, hashtext(:name))"),
                    {"space": _NAMED_LOCKS, "name": self.name},
                )
            ).scalar_one()
        except BaseException:
            await end_session(conn)
            raise
        if not got:
            await conn.close()  # it holds nothing: back to the pool
            return False
        self._conn = conn
        try:
            await notice_vanished_peer(conn)
            if self.idle_timeout_s is not None:
                ms = max(1, round(self.idle_timeout_s * 1000))
                await conn.execute(sa.text(f"SET idle_session_timeout = {ms}"))
        except asyncio.CancelledError:
            await self.release()
            raise
        except Exception as exc:  # before PostgreSQL 14: no such bound
            log.warning("the session lock's session has no bound on a vanished holder", lock=self.name, error=str(exc))
        return True

    async def holds(self, timeout: float = 5.0) -> bool:
        if self._conn is None:
            return False
        try:
            async with asyncio.timeout(timeout):
                await self._conn.execute(sa.text("SELECT 1"))
        except Exception:  # the session is gone, or out of reach (and soon gone): so is the lock
            await self.release()
            return False
        return True

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await end_session(conn)


#: How soon the server notices that the client of a lock's session vanished (its host died, the
#: network between them went) when nothing said so: TCP keepalive probes after 10 s of silence,
#: every 5 s, three unanswered end the session (~25 s); data it sent (a NOTIFY) that goes
#: unacknowledged for 30 s ends it too. Without them the server's operating system decides:
#: two hours of silence by default before the first probe, ~15 minutes of retransmissions.
_PEER_SETTINGS = (
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "30000"),
)


async def notice_vanished_peer(conn: AsyncConnection) -> None:
    """Have the server end this session (and let its session-level locks go) within about half a
    minute of its client vanishing, for a session that holds a lock other processes wait for. On
    a Unix socket the server ignores these (the kernel reports a closed peer at once)."""
    for name, value in _PEER_SETTINGS:
        await conn.execute(sa.text(f"SET {name} = {value}"))


async def end_session(conn: AsyncConnection) -> None:
    """Close `conn` and end its session: one closed as usual goes back to the pool, its session
    (and any session-level lock) alive."""
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()
