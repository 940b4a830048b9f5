"""Throw-away PostgreSQL databases on the local server (trust auth on 127.0.0.1)."""

from __future__ import annotations

import os
import uuid

import asyncpg

ADMIN_DSN = os.environ.get("PIZZERIA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _server_part() -> str:
    return ADMIN_DSN.rsplit("/", 1)[0]


async def create_database(prefix: str = "pz") -> str:
    """Create a fresh database; returns its SQLAlchemy asyncpg URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    # Loopback: no TLS (the server's snakeoil certificate would cost a tenth of the services' CPU).
    return f"{_server_part().replace('postgresql://', 'postgresql+asyncpg://')}/{name}?ssl=disable"


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
