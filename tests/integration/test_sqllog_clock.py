"""The embedded broker on a clock the test moves, with no task of its own (`background=False`,
as the deterministic simulation runs it): leases last as long as that clock says, a member that
stops heartbeating loses its partitions to one that beats, and the new owner reads from the
committed offset."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from pizzeria.messaging.broker import OutgoingMessage, TopicSpec
from pizzeria.messaging.sqllog import SqlLogBroker, partition_for
from tests.fakes import ManualClock


async def test_leases_follow_the_given_clock_and_nothing_runs_on_its_own(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    broker = SqlLogBroker(f"sqlite:///{tmp_path}/log.db", session_timeout_ms=6000, clock=clock, background=False)
    await broker.start()
    try:
        tasks = asyncio.all_tasks()
        await broker.create_topics([TopicSpec("t", partitions=1)])
        await broker.publish([OutgoingMessage("t", f"m{i}".encode(), key="k") for i in range(3)])
        first = broker.consumer("g", ["t"])
        await first.start()
        assert asyncio.all_tasks() == tasks, "the broker started a task of its own"
        [record] = await first.fetch(1, timeout=0)
        await first.commit({("t", 0): record.offset + 1})

        second = broker.consumer("g", ["t"])  # the first stops beating (killed), the second beats
        await second.start()
        assert second.assignment() == set()
        clock.advance(5)
        await second.heartbeat()
        assert second.assignment() == set(), "the first member's lease has a second left"
        clock.advance(2)
        assert first.assignment() == set()
        await second.heartbeat()
        assert second.assignment() == {("t", 0)}
        assert [r.value for r in await second.fetch(5, timeout=0)] == [b"m1", b"m2"]
    finally:
        await broker.close()


async def test_a_member_whose_lease_ran_out_commits_nothing_and_one_commit_stores_every_partition(
    tmp_path: Path,
) -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    broker = SqlLogBroker(f"sqlite:///{tmp_path}/log.db", session_timeout_ms=6000, clock=clock, background=False)
    await broker.start()
    try:
        await broker.create_topics([TopicSpec("a", partitions=2), TopicSpec("b", partitions=1)])
        await _fill(broker, 2, [("a", 0), ("a", 1), ("b", 0)], 3)
        first = broker.consumer("g", ["a", "b"])
        await first.start()
        records = await first.fetch(100, timeout=0)
        assert len(records) == 9
        clock.advance(7)  # the first member's leases ran out unrenewed
        second = broker.consumer("g", ["a", "b"])
        await second.start()
        assert second.assignment() == {("a", 0), ("a", 1), ("b", 0)}
        await first.commit({(r.topic, r.partition): r.offset + 1 for r in records})
        assert await second.group_lag() == {("a", 0): 3, ("a", 1): 3, ("b", 0): 3}, "a fenced commit counted"

        again = await second.fetch(100, timeout=0)
        assert [r.value for r in again] == [r.value for r in records]
        await second.commit({("a", 0): 2, ("a", 1): 3, ("b", 0): 1})
        assert await second.group_lag() == {("a", 0): 1, ("a", 1): 0, ("b", 0): 2}
    finally:
        await broker.close()


async def test_a_fetch_shares_its_records_among_the_partitions_that_have_some_each_in_order(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    broker = SqlLogBroker(f"sqlite:///{tmp_path}/log.db", clock=clock, background=False)
    await broker.start()
    try:
        await broker.create_topics([TopicSpec("a", partitions=3), TopicSpec("b", partitions=3)])
        await _fill(broker, 3, [("a", 0), ("a", 2), ("b", 1)], 5)  # the other partitions stay empty
        consumer = broker.consumer("g", ["a", "b"])
        await consumer.start()
        first = await consumer.fetch(6, timeout=0)
        assert [r.value for r in first] == [b"a0-0", b"a0-1", b"a2-0", b"a2-1", b"b1-0", b"b1-1"]
        assert [r.offset for r in first] == [0, 1, 0, 1, 0, 1]
        rest = await consumer.fetch(100, timeout=0)
        assert [r.value for r in rest] == [
            f"{t}{p}-{i}".encode() for t, p in (("a", 0), ("a", 2), ("b", 1)) for i in range(2, 5)
        ]
        assert await consumer.fetch(100, timeout=0) == []
    finally:
        await broker.close()


async def _fill(broker: SqlLogBroker, partitions: int, places: list[tuple[str, int]], count: int) -> None:
    """Publish `count` records to each of `places` (topic, partition), valued `<topic><partition>-<n>`."""
    keys = {partition_for(f"k{n}", partitions): f"k{n}" for n in range(20 * partitions)}
    await broker.publish(
        [OutgoingMessage(t, f"{t}{p}-{i}".encode(), key=keys[p]) for t, p in places for i in range(count)]
    )


async def test_a_member_holding_more_partitions_than_one_statement_may_name_reads_them_all(tmp_path: Path) -> None:
    """SQLite takes at most 500 terms in a compound SELECT: a fetch over more ready partitions
    than that reads them in several statements, and misses none."""
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    broker = SqlLogBroker(f"sqlite:///{tmp_path}/log.db", clock=clock, background=False)
    await broker.start()
    try:
        await broker.create_topics([TopicSpec("wide", partitions=510)])
        await _fill(broker, 510, [("wide", p) for p in range(510)], 1)
        consumer = broker.consumer("g", ["wide"])
        await consumer.start()
        fetched = await consumer.fetch(1000, timeout=0)
        assert sorted(r.partition for r in fetched) == list(range(510))
        assert await consumer.fetch(1000, timeout=0) == []
    finally:
        await broker.close()
