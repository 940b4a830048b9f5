"""The embedded broker on a clock the test moves, with no task of its own (`background=False`,
as the deterministic simulation runs it): leases last as long as that clock says, a member that
stops heartbeating loses its partitions to one that beats, and the new owner reads from the
committed offset."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from pizzeria.messaging.broker import OutgoingMessage, TopicSpec
from pizzeria.messaging.sqllog import SqlLogBroker
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
