"""Each service's migrations build exactly the tables its code declares: after `upgrade` to the
newest revision of both histories, Alembic's comparison with the declared metadata (tables,
columns, their types and defaults, indexes, constraints) finds nothing to change, on SQLite and
on PostgreSQL. A change of a table without its migration, or the reverse, fails here."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.migrations import alembic_config, upgrade
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS, outbox
from pizzeria.registry import SERVICES
from tests.support.postgres import create_database, drop_database

WITH_DATABASE = [s for s in SERVICES if s.has_database]
VERSION_TABLES = {"alembic_version", "alembic_version_messaging"}


def _differences(conn: Connection, metadata: list[Any]) -> list[Any]:
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_name": lambda name, kind, _: kind != "table" or name not in VERSION_TABLES,
        },
    )
    return list(compare_metadata(context, metadata))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("service", WITH_DATABASE, ids=lambda s: s.name)
async def test_the_migrations_build_the_declared_tables(service: Any, backend: str, tmp_path: Path) -> None:
    own = service.migrations()
    url = f"sqlite:///{tmp_path}/{service.name}.db" if backend == "sqlite" else await create_database()
    database: Database | None = None
    try:
        await upgrade(url, [MESSAGING_MIGRATIONS, own])
        database = Database(url)
        async with database.transaction() as conn:
            found = await conn.run_sync(_differences, [own.metadata, MESSAGING_MIGRATIONS.metadata])
        assert found == [], f"{service.name}'s tables differ from what its migrations build: {found}"
    finally:
        if database is not None:
            await database.dispose()
        if backend == "postgres":
            await drop_database(url)


def _messaging_to(url: str, revision: str, *, down: bool = False) -> None:
    from alembic import command

    config = alembic_config(MESSAGING_MIGRATIONS, url)
    (command.downgrade if down else command.upgrade)(config, revision)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_outbox_keeps_its_rows_when_its_indexes_change(backend: str, tmp_path: Path) -> None:
    """0005 drops two of the outbox's indexes (on SQLite by making the table again): the rows,
    their `seq` and which are pending stay, new rows follow on, and the way back restores the
    unique `id`."""
    url = f"sqlite:///{tmp_path}/outbox.db" if backend == "sqlite" else await create_database()
    database: Database | None = None
    try:
        await asyncio.to_thread(_messaging_to, url, "0004")
        database = Database(url)
        now = utcnow()
        rows = [
            {"id": f"m{n}", "topic": "t", "key": "k", "headers": "{}", "payload": b"p", "created_at": now}
            for n in range(5)
        ]
        async with database.transaction() as conn:
            await conn.execute(outbox.insert(), rows)
            await conn.execute(outbox.update().where(outbox.c.id.in_(["m0", "m1"])).values(published_at=now))
        await database.dispose()
        await asyncio.to_thread(_messaging_to, url, "head")
        database = Database(url)
        async with database.transaction() as conn:
            await conn.execute(outbox.insert(), [{**rows[0], "id": "m5"}])
            found = (await conn.execute(sa.select(outbox.c.seq, outbox.c.id).order_by(outbox.c.seq))).all()
            pending = (
                (await conn.execute(sa.select(outbox.c.id).where(outbox.c.published_at.is_(None)))).scalars().all()
            )
        assert [tuple(row) for row in found] == [(n + 1, f"m{n}") for n in range(6)]
        assert sorted(pending) == ["m2", "m3", "m4", "m5"]
        async with database.transaction() as conn:
            await conn.execute(outbox.delete().where(outbox.c.id == "m5"))
        await database.dispose()
        database = None
        await asyncio.to_thread(_messaging_to, url, "0004", down=True)
        database = Database(url)
        with pytest.raises(sa.exc.IntegrityError):
            async with database.transaction() as conn:
                await conn.execute(outbox.insert(), [{**rows[0], "id": "m1"}])
    finally:
        if database is not None:
            await database.dispose()
        if backend == "postgres":
            await drop_database(url)
