"""Throw-away PostgreSQL databases on the local server (trust auth on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.db import Database

ADMIN_DSN = os.environ.get("PIZZERIA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def create_database(prefix: str = "pz", *, admin_dsn: str = ADMIN_DSN) -> str:
    """Create a fresh database (on the shared test server unless `admin_dsn` names another);
    returns its SQLAlchemy asyncpg URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    server = admin_dsn.rsplit("/", 1)[0]
    # Loopback: no TLS (the server's snakeoil certificate would cost a tenth of the services' CPU).
    return f"{server.replace('postgresql://', 'postgresql+asyncpg://')}/{name}?ssl=disable"


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    server = url.rsplit("/", 1)[0].replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(f"{server}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def two_processes(prefix: str) -> AsyncIterator[tuple[Database, Database]]:
    """A new database and two `Database`s on it, an engine and a pool each as two processes
    (two replicas) have; disposed and dropped at the end."""
    url = await create_database(prefix)
    first, second = Database(url), Database(url)
    try:
        yield first, second
    finally:
        await first.dispose()
        await second.dispose()
        await drop_database(url)


#: What `kit.db.notice_vanished_peer` sets: the server ends a lock's session ~25 s after its
#: client's host goes silent, 30 s after data it sent goes unacknowledged.
VANISHED_PEER_BOUNDS = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "30000",
}


async def peer_bounds(conn: AsyncConnection) -> dict[str, str]:
    """How soon the server would notice that this session's client vanished (over TCP; on a
    Unix socket each reads 0)."""
    return {name: (await conn.execute(sa.text(f"SHOW {name}"))).scalar_one() for name in VANISHED_PEER_BOUNDS}
