"""Replicas of a service start together, and with them the members of its groups: on the
embedded log, members that join at the same moment never both own a partition (on PostgreSQL
two joining at once each saw only itself and took every partition, until the next heartbeat)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pizzeria.messaging.broker import TopicSpec
from tests.integration.brokers import BrokerHarness, sqllog_postgres, sqllog_sqlite
from tests.support.postgres import create_database, drop_database

PARTITIONS = 4


@pytest.fixture(params=["sqllog-sqlite", pytest.param("sqllog-postgres", marks=pytest.mark.postgres)])
async def harness(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[BrokerHarness]:
    url: str | None = None
    if request.param == "sqllog-sqlite":
        h = sqllog_sqlite(str(tmp_path / "broker.db"), f"t{unique}")
    else:
        url = await create_database()
        h = sqllog_postgres(url.replace("postgresql+asyncpg://", "postgresql://"), lambda: 0, f"t{unique}")
    try:
        yield h
    finally:
        await h.close()
        if url is not None:
            await drop_database(url)


async def test_members_joining_at_once_never_own_one_partition_both(harness: BrokerHarness) -> None:
    first, second = await harness.client(), await harness.client()  # two processes
    topic = f"{harness.prefix}.joined"
    await first.create_topics([TopicSpec(topic, partitions=PARTITIONS)])
    for round_ in range(5):
        group = harness.group(f"g{round_}")
        members = [first.consumer(group, [topic]), second.consumer(group, [topic])]
        try:
            await asyncio.gather(*(m.start() for m in members))
            held = [m.assignment() for m in members]
            assert not held[0] & held[1], f"round {round_}: both own {held[0] & held[1]}"
        finally:
            for member in members:
                await member.close()
