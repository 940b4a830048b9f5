"""Alembic, driven from code: every service database carries two migration histories, the
messaging tables' (`alembic_version_messaging`) and the service's own (`alembic_version`).
Services apply both at start; `pizzeria migrate` applies them ahead of time. Alembic is imported
only to apply them (a process that never migrates never loads it)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from alembic.config import Config

#: Set by `pizzeria up`, to its own process id, for a process it starts right after applying
#: that process's migrations itself (its first start only, not a restart): the process need not
#: apply them again. A value from anyone else (an environment that leaked it) is not believed.
APPLIED_VARIABLE = "PIZZERIA_MIGRATIONS_APPLIED"


def applied_by_parent() -> bool:
    """Whether the process that started this one applied its migrations a moment ago."""
    return os.environ.get(APPLIED_VARIABLE) == str(os.getppid())


_LOCK_KEY = 0x6D696772  # serialises concurrent migrators of one PostgreSQL database


@dataclass(frozen=True)
class MigrationSet:
    """One Alembic history: where its scripts live, its version table and its tables."""

    script_location: str
    version_table: str
    metadata: sa.MetaData


def alembic_config(migrations: MigrationSet, url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", migrations.script_location)
    config.attributes["url"] = url
    config.attributes["migrations"] = migrations
    return config


def upgrade_sync(url: str, sets: Sequence[MigrationSet]) -> None:
    from alembic import command

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    for migrations in sets:
        command.upgrade(alembic_config(migrations, url), "head")


async def upgrade(url: str, sets: Sequence[MigrationSet]) -> None:
    """Bring a database to the newest revision of every set (in a thread: Alembic is sync)."""
    await asyncio.to_thread(upgrade_sync, url, sets)


def run_env() -> None:
    """The body of every `env.py`: run the configured history (on PostgreSQL over an async engine)."""
    from alembic import context

    config = context.config
    url: str = config.attributes["url"]
    migrations: MigrationSet = config.attributes["migrations"]

    def run(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
        context.configure(
            connection=connection,
            target_metadata=migrations.metadata,
            version_table=migrations.version_table,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    if make_url(url).get_backend_name() == "sqlite":  # sqlite3 itself: Alembic is synchronous
        engine = sa.create_engine(make_url(url).set(drivername="sqlite"), poolclass=NullPool)
        try:
            with engine.begin() as connection:
                run(connection)
        finally:
            engine.dispose()
        return

    async def main() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(run)
        finally:
            await engine.dispose()

    asyncio.run(main())
