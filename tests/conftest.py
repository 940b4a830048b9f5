"""Fixtures shared by every test layer: PostgreSQL databases and Apache Kafka brokers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.kafka import KafkaCluster
from tests.support.postgres import create_database, drop_database


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache directory of the run's own (`XDG_CACHE_HOME`, which every system under test
    inherits): the zygotes' list of libraries is found afresh by the run's first zygote and
    kept for the others, whatever the machine's own cache holds."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


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
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One Apache Kafka broker (KRaft) that clients reach through a fault-injecting proxy."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka"), proxied=True).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka_direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One Apache Kafka broker (KRaft) that clients reach directly (for whole-system runs)."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-direct")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Fast layers first, so a broken unit fails the run in seconds.
    order = {"unit": 0, "integration": 1, "e2e": 2}
    items.sort(key=lambda item: order.get(Path(str(item.fspath)).parent.name, 3))
