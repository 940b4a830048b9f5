"""Fixtures shared by every test layer: PostgreSQL databases, Tansu brokers, broker adapters."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.postgres import create_database, drop_database
from tests.support.tansu import Tansu


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and group names, so tests never share broker state."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    """A Kafka-protocol broker reached through a fault-injecting proxy."""
    broker = Tansu(tmp_path_factory.mktemp("tansu"), proxied=True).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def tansu_direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    """A Kafka-protocol broker clients reach directly (for whole-system runs)."""
    broker = Tansu(tmp_path_factory.mktemp("tansu-direct")).start()
    try:
        yield broker
    finally:
        broker.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Fast layers first, so a broken unit fails the run in seconds.
    order = {"unit": 0, "integration": 1, "e2e": 2}
    items.sort(key=lambda item: order.get(Path(str(item.fspath)).parent.name, 3))
