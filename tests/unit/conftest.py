"""Fixtures of the unit tests: an in-memory broker and a throwaway SQLite service database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pizzeria.kit.db import Database
from pizzeria.messaging.tables import metadata
from tests.fakes import InMemoryBroker


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    broker = InMemoryBroker()
    await broker.start()
    yield broker
    await broker.close()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A service database with the messaging tables (outbox, inbox, dead letters)."""
    database = Database(f"sqlite:///{tmp_path}/svc.db")
    async with database.transaction() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()
