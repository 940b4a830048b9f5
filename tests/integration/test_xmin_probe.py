"""The chaos campaign's probe of the sqllog on PostgreSQL (tests/chaos/campaign.py, the xmin
hold), against a real log: the consumer lag it reads is what the group has not committed, and
VACUUM keeps the versions of the log's bookkeeping a held snapshot can still see, and only
while it is held."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from pizzeria.messaging.broker import OutgoingMessage, TopicSpec
from pizzeria.messaging.sqllog import SqlLogBroker, records_t
from tests.chaos.campaign import SqlLogProbe, _vacuum, held_database
from tests.support.postgres import create_database, drop_database

TOPIC = "probe.events"


@pytest.fixture
async def log_env() -> AsyncIterator[dict[str, str]]:
    """A system's environment naming the sqllog on a fresh PostgreSQL database."""
    url = await create_database("pz_probe")
    try:
        yield {"BROKER_URL": f"sqllog+{url}"}
    finally:
        await drop_database(url)


@pytest.fixture
async def conn(log_env: dict[str, str]) -> AsyncIterator[AsyncConnection]:
    """The probe's connection (autocommit, as the campaign's)."""
    engine = create_async_engine(SqlLogProbe().url(log_env))
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection
    finally:
        await engine.dispose()


async def publish(broker: SqlLogBroker, count: int) -> None:
    """`count` records, one publish each (each moves its partition's end offset: one update)."""
    for n in range(count):
        await broker.publish([OutgoingMessage(topic=TOPIC, key=f"k{n}", value=b"{}")])


async def test_the_lag_read_is_what_the_group_has_not_committed(log_env: dict[str, str], conn: AsyncConnection) -> None:
    probe = held_database(log_env)
    assert isinstance(probe, SqlLogProbe)
    broker = SqlLogBroker(log_env["BROKER_URL"].removeprefix("sqllog+"))
    await broker.start()
    consumer = broker.consumer("probe-group", [TOPIC], client_id="probe")
    try:
        await broker.create_topics([TopicSpec(TOPIC, partitions=3)])
        await publish(broker, 12)
        await consumer.start()
        records = await consumer.fetch(5, timeout=5.0)
        assert records
        await consumer.commit({(r.topic, r.partition): r.offset + 1 for r in records})
        expected = sum((await consumer.group_lag()).values())

        sample = await probe.look(conn)

        assert sample.lag == expected
        assert 0 < sample.lag < 12
        assert sample.worst_lag == ("probe-group", expected)
        assert sample.reads == len({(r.topic, r.partition) for r in records})  # one read per committed offset
        assert sample.ends_pages >= 1  # the end offsets were read from the table's pages
        assert sample.bookkeeping_kb > 0
    finally:
        await consumer.close()
        await broker.close()


async def test_vacuum_keeps_the_log_bookkeeping_a_held_snapshot_sees_until_it_is_released(
    log_env: dict[str, str], conn: AsyncConnection
) -> None:
    probe = SqlLogProbe()
    broker = SqlLogBroker(log_env["BROKER_URL"].removeprefix("sqllog+"))
    await broker.start()
    await broker.create_topics([TopicSpec(TOPIC, partitions=3)])
    engine = create_async_engine(probe.url(log_env))
    try:
        async with engine.connect() as holder:
            await holder.execution_options(isolation_level="REPEATABLE READ")
            await holder.begin()
            await holder.execute(sa.select(sa.func.count()).select_from(records_t))  # the snapshot taken
            await publish(broker, 20)
            await broker.close()  # its backends gone, their counts with the statistics

            kept_held = await _vacuum(conn, probe.tables)
            await holder.rollback()
            kept_released = await _vacuum(conn, probe.tables)
    finally:
        await broker.close()
        await engine.dispose()

    assert kept_held["log_partitions"] >= 20, kept_held  # every end offset moved since the snapshot
    assert kept_held["log_records"] == 0, kept_held  # records are only inserted
    assert kept_released["log_partitions"] == 0, kept_released
