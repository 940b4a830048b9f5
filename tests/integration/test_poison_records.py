"""Decoding is total: records of any bytes, written straight into the embedded broker's log (as
another writer could) and read by a consumer group on a SQLite or PostgreSQL service database,
each end handled, ignored or dead-lettered with the reason, and the group moves past every one
of them. The same records on Apache Kafka: tests/integration/test_poison_records_kafka.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import orjson
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pizzeria.kit.db import Database
from pizzeria.messaging.broker import TopicSpec
from pizzeria.messaging.deadletters import DeadLetterStore
from pizzeria.messaging.sqllog import _TAKE_OFFSETS, SqlLogBroker, records_t
from pizzeria.messaging.tables import dead_letters
from pizzeria.messaging.uow import UnitOfWork
from tests.support.records import RawRecord, check_outcomes, probe_runner, raw_records


def _json_value(value: bytes | int | list[int] | None) -> bytes:
    if isinstance(value, bytes):
        try:
            return orjson.dumps(value.decode())
        except UnicodeDecodeError:  # kept as it is: the column then holds bytes that are not text
            return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return orjson.dumps(value)


def stored(record: RawRecord) -> dict[str, object]:
    """The columns of the record as the log keeps them (bytes that are not text kept as they are)."""
    key: str | bytes | None = record.key
    if record.key is not None:
        try:
            key = record.key.decode()
        except UnicodeDecodeError:
            key = record.key
    body = b"{" + b",".join(orjson.dumps(name) + b":" + _json_value(value) for name, value in record.headers) + b"}"
    try:
        headers: str | bytes = body.decode()
    except UnicodeDecodeError:
        headers = body
    return {"key": key, "headers": headers, "value": record.value}


async def append(broker: SqlLogBroker, topic: str, records: Sequence[RawRecord]) -> list[tuple[int, int]]:
    """Write the records into the log as they are; their (partition, offset)."""
    positions = []
    async with broker.database.transaction() as conn:
        for n, record in enumerate(records):
            partition = n % 3
            end = (await conn.execute(_TAKE_OFFSETS, {"t": topic, "p": partition, "n": 1})).scalar_one()
            await conn.execute(
                records_t.insert(),
                {"topic": topic, "partition": partition, "offset": end - 1, "timestamp_ms": 0, **stored(record)},
            )
            positions.append((partition, end - 1))
    return positions


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(raw_records(json_headers=True), min_size=1, max_size=12))
async def test_any_record_in_the_log_is_handled_ignored_or_dead_lettered_and_the_group_moves_on(
    sqllog: SqlLogBroker, db: Database, records: list[RawRecord]
) -> None:
    topic, group = f"poison.{uuid.uuid4().hex[:10]}", f"poison-{uuid.uuid4().hex[:10]}"
    await sqllog.create_topics([TopicSpec(topic, partitions=3)])
    positions = await append(sqllog, topic, records)

    def uow() -> UnitOfWork:
        return UnitOfWork(db, source="/pizzeria/poison-test")

    seen: set[str] = set()
    runner = probe_runner(group, topic, sqllog, uow, DeadLetterStore(db, uow), seen)
    consumer = sqllog.consumer(group, [topic])
    await consumer.start()
    try:
        done: set[tuple[int, int]] = set()
        deadline = time.monotonic() + 60
        while not set(positions) <= done:
            assert time.monotonic() < deadline, f"the group never moved past {set(positions) - done}"
            fetched = await consumer.fetch(100, timeout=0.2)
            if fetched:
                await consumer.commit(await asyncio.wait_for(runner.process_batch(fetched), 30))
                done |= {(r.partition, r.offset) for r in fetched}
        assert not runner.stuck()
    finally:
        await consumer.close()
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(dead_letters).where(dead_letters.c.group_id == group))).all()
    dead = {(r.partition, r.offset): r.error for r in rows}
    check_outcomes(list(zip(records, positions, strict=True)), dead, seen)
