"""Each service's migrations build exactly the tables its code declares: after `upgrade` to the
newest revision of both histories, Alembic's comparison with the declared metadata (tables,
columns, their types and defaults, indexes, constraints) finds nothing to change, on SQLite and
on PostgreSQL. A change of a table without its migration, or the reverse, fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from pizzeria.kit.db import Database
from pizzeria.kit.migrations import upgrade
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS
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
