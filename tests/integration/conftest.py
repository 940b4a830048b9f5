"""Fixtures of the integration tests: a service database on SQLite or PostgreSQL, migrated by
the real Alembic history, and an embedded SQL-log broker beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pizzeria.kit.db import Database
from pizzeria.kit.migrations import upgrade
from pizzeria.messaging.broker import TopicSpec
from pizzeria.messaging.sqllog import SqlLogBroker
from pizzeria.messaging.tables import MESSAGING_MIGRATIONS
from tests.integration.gateway import gateway, gateway_env
from tests.support.postgres import create_database, drop_database

__all__ = ["gateway", "gateway_env"]  # fixtures of the gateway tests, shared

#: A table standing in for a service's own state, written in the same transactions as the outbox.
state_metadata = sa.MetaData()
widgets = sa.Table(
    "widgets",
    state_metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
)


@pytest.fixture(autouse=True)
def unpaid_orders_unlimited(monkeypatch: pytest.MonkeyPatch) -> None:
    """Orders runs alone here, or beside a few services: nothing pays its orders, so every one
    stays unpaid and a customer would reach ORDER_MAX_UNPAID after three. The tests of that
    limit set it themselves."""
    monkeypatch.setenv("ORDER_MAX_UNPAID", "1000000")


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A service database with the messaging migrations applied and a `widgets` table."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/service.db"
    else:
        url = await create_database()
    await upgrade(url, [MESSAGING_MIGRATIONS])
    database = Database(url, pool_size=20)
    async with database.transaction() as conn:
        await conn.run_sync(state_metadata.create_all)
    try:
        yield database
    finally:
        await database.dispose()
        if request.param == "postgres":
            await drop_database(url)


@pytest.fixture
async def sqllog(tmp_path: Path) -> AsyncIterator[SqlLogBroker]:
    broker = SqlLogBroker(f"sqlite:///{tmp_path}/broker.db", poll_interval_ms=10, session_timeout_ms=2000)
    await broker.start()
    await broker.create_topics([TopicSpec("test.events", partitions=3), TopicSpec("testgroup.dlq", partitions=3)])
    try:
        yield broker
    finally:
        await broker.close()
