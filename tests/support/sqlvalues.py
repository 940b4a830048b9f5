"""For the tests that hold a write path to what SQLAlchemy writes (`insert_rows`, `update_rows`):
values of every kind the services store, and two fresh databases to compare (SQLite, or
PostgreSQL on the test server)."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from pizzeria.kit.db import Database
from tests.support.postgres import create_database, drop_database

#: The databases the driver paths run on, for tests parametrized over both.
BACKENDS = ["sqlite", "postgresql"]


class State(enum.StrEnum):
    """A state as the services keep one (a string column written from an enum)."""

    OPEN = "open"
    SHUT = "shut"


text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
times = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5))]),
)
# Documents, as the services keep (SQLite gives a column declared JSON numeric affinity, so a
# bare number would come back as one, whichever way it went in).
documents = st.dictionaries(
    text,
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=8,
    ),
    max_size=3,
)


async def fresh(url: str, metadata: sa.MetaData) -> Database:
    """A database at `url` with the tables of `metadata`."""
    database = Database(url)
    async with database.transaction() as conn:
        await conn.run_sync(metadata.create_all)
    return database


@asynccontextmanager
async def two_sqlite(tmp_path: Path, metadata: sa.MetaData) -> AsyncIterator[tuple[Database, Database]]:
    """Ours (written the way under test) and theirs (written by SQLAlchemy)."""
    ours = await fresh(f"sqlite:///{tmp_path}/ours.db", metadata)
    theirs = await fresh(f"sqlite:///{tmp_path}/theirs.db", metadata)
    try:
        yield ours, theirs
    finally:
        await ours.dispose()
        await theirs.dispose()


@asynccontextmanager
async def databases(
    backend: str, tmp_path: Path, metadata: sa.MetaData, count: int = 2
) -> AsyncIterator[tuple[Database, ...]]:
    """`count` fresh databases with the tables of `metadata`, on SQLite (files in `tmp_path`) or
    on PostgreSQL (dropped afterwards)."""
    urls = [f"sqlite:///{tmp_path}/db{i}.db" if backend == "sqlite" else await create_database() for i in range(count)]
    made: list[Database] = []
    try:
        for url in urls:
            made.append(await fresh(url, metadata))
        yield tuple(made)
    finally:
        for database in made:
            await database.dispose()
        if backend != "sqlite":
            for url in urls:
                await drop_database(url)


def statements() -> float:
    """The statements counted so far (the bench's statements per order come from this count)."""
    return REGISTRY.get_sample_value("pizzeria_db_statements_total") or 0.0


@contextmanager
def sqlalchemy_runs(database: Database) -> Iterator[list[str]]:
    """The statements SQLAlchemy hands to a driver (of either engine) while in the block."""
    ran: list[str] = []

    def heard(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        ran.append(statement)

    engines = {database.writer.sync_engine, database.reader.sync_engine}
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", heard)
    try:
        yield ran
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", heard)
