"""The SQLite log's topic bells: a consumer asks the database again only when a topic of its own
may have new records, and still finds everything (records published by another process, records
it left unread, partitions it took over)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pizzeria.messaging.broker import OutgoingMessage, TopicSpec
from pizzeria.messaging.sqllog import SqlLogBroker, SqlLogConsumer, TopicBells
from tests.support.polling import eventually

#: Far longer than any test here: a consumer finds records only because it was told to look.
NEVER = 3600.0


def message(topic: str, n: int) -> OutgoingMessage:
    return OutgoingMessage(topic=topic, key=f"k{n}", value=f"v{n}".encode(), headers=())


class Looker:
    """Anything that looks at the log (a consumer, in the system)."""


def count_queries(consumer: SqlLogConsumer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the consumer asked the database for records (a list: read [0])."""
    calls = [0]
    query = consumer._fetch_once

    async def counted(max_records: int) -> list[object]:
        calls[0] += 1
        return await query(max_records)

    monkeypatch.setattr(consumer, "_fetch_once", counted)
    return calls


def count_watcher_looks(broker: SqlLogBroker, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the process's watcher read a waiting consumer's bells (a list: read [0])."""
    looks = [0]
    news_for = broker._news_for

    def counted(waiter: Any, now: float) -> bool:
        looks[0] += 1
        return news_for(waiter, now)

    monkeypatch.setattr(broker, "_news_for", counted)
    return looks


async def doorbells_or_skip(watching: SqlLogBroker, *others: SqlLogBroker) -> None:
    """Doorbells are Linux's inotify: there `watching` must have them; elsewhere the log reads
    its bells on the timer (the tests above), and a test of doorbells has nothing to check."""
    if watching._doorbells is not None:
        return
    for broker in (watching, *others):
        await broker.close()
    assert not sys.platform.startswith("linux"), "Linux has inotify: the doorbells should be watched"
    pytest.skip("doorbells need Linux's inotify; on this system the log's bells are read on the timer")


async def log_in(tmp_path: Path, **options: Any) -> SqlLogBroker:
    """A started broker on a log in `tmp_path` whose consumers look only when a bell rang (or
    they have reason to), never merely because time passed."""
    broker = SqlLogBroker(f"sqlite:///{tmp_path / 'log.db'}", **options)
    await broker.start()
    broker.LOOK_ANYWAY_S = NEVER
    return broker


def test_bells_are_shared_by_every_mapping_of_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db-topics")
    one, other = TopicBells(path), TopicBells(path)  # as two processes map it
    try:
        before = other.read(["a.events", "b.events"])
        one.ring(["a.events"])
        after = other.read(["a.events", "b.events"])
        assert after[0] == before[0] + 1
        assert TopicBells(path).read(["a.events"]) == (after[0],)  # a late opener keeps the count
    finally:
        one.close()
        other.close()


async def test_a_consumer_queries_only_when_its_own_topics_rang(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    publisher, subscriber = SqlLogBroker(url), SqlLogBroker(url)  # two processes' clients
    await publisher.start()
    await subscriber.start()
    try:
        await publisher.create_topics([TopicSpec("mine.events", 3), TopicSpec("theirs.events", 3)])
        looker = Looker()
        assert subscriber.changed_since_last_look(looker, ["mine.events"])  # never looked
        assert not subscriber.changed_since_last_look(looker, ["mine.events"])
        await publisher.publish([message("theirs.events", 1)])
        assert not subscriber.changed_since_last_look(looker, ["mine.events"])
        await publisher.publish([message("mine.events", 2)])
        assert subscriber.changed_since_last_look(looker, ["mine.events"])
        assert not subscriber.changed_since_last_look(looker, ["mine.events"])
        subscriber.look_again(looker)
        assert subscriber.changed_since_last_look(looker, ["mine.events"])
    finally:
        await publisher.close()
        await subscriber.close()


async def test_an_idle_consumer_leaves_the_database_alone_while_others_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    publisher = SqlLogBroker(url, poll_interval_ms=5)
    subscriber = SqlLogBroker(url, poll_interval_ms=5)
    await publisher.start()
    await subscriber.start()
    consumer = subscriber.consumer("quiet", ["quiet.events"])
    try:
        await publisher.create_topics([TopicSpec("quiet.events", 3), TopicSpec("busy.events", 3)])
        await consumer.start()
        subscriber.LOOK_ANYWAY_S = NEVER
        assert await consumer.fetch(100, 0.05) == []  # its first look queries
        queries = count_queries(consumer, monkeypatch)
        # Another topic is written to all along (and the database file changes with it):
        # nothing for this consumer to query about, though it polls every 5 ms.
        published = await asyncio.gather(_publish_for(publisher, "busy.events", 0.3), consumer.fetch(100, 0.3))
        assert published[0] > 5
        assert published[1] == []
        assert queries[0] == 0
        # Its own topic rings: the next look finds the record at once.
        await publisher.publish([message("quiet.events", 7)])
        records = await consumer.fetch(100, 1.0)
        assert [r.value for r in records] == [b"v7"]
    finally:
        await consumer.close()
        await publisher.close()
        await subscriber.close()


async def _publish_for(broker: SqlLogBroker, topic: str, seconds: float) -> int:
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        await broker.publish([message(topic, count)])
        count += 1
        await asyncio.sleep(0.02)
    return count


async def test_records_left_unread_are_fetched_without_a_new_bell(tmp_path: Path) -> None:
    broker = await log_in(tmp_path)
    consumer = broker.consumer("slow", ["one.events"])
    try:
        await broker.create_topics([TopicSpec("one.events", 1)])
        await consumer.start()
        await broker.publish([message("one.events", n) for n in range(5)])
        taken: list[bytes] = []
        deadline = time.monotonic() + 10.0
        while len(taken) < 5 and time.monotonic() < deadline:
            taken += [r.value for r in await consumer.fetch(2, 0.1)]  # two at a time
        assert taken == [f"v{n}".encode() for n in range(5)]
    finally:
        await consumer.close()
        await broker.close()


async def test_partitions_taken_over_are_read_without_a_new_bell(tmp_path: Path) -> None:
    broker = await log_in(tmp_path, session_timeout_ms=1000)
    await broker.create_topics([TopicSpec("shared.events", 4)])
    first = broker.consumer("g", ["shared.events"], client_id="a")
    second = broker.consumer("g", ["shared.events"], client_id="b")
    try:
        await first.start()
        await second.start()
        await eventually(lambda: first.assignment() and second.assignment(), "both hold their share", 10.0)
        assert first.assignment()
        assert second.assignment()
        await broker.publish([message("shared.events", n) for n in range(20)])
        seen = {r.value for r in await first.fetch(100, 0.2)}
        await second.close()  # its partitions (and their unread records) pass to the first
        deadline = time.monotonic() + 10.0
        while len(seen) < 20 and time.monotonic() < deadline:
            seen |= {r.value for r in await first.fetch(100, 0.1)}
        assert seen == {f"v{n}".encode() for n in range(20)}
    finally:
        await first.close()
        await broker.close()


async def test_a_process_wakes_only_the_consumers_whose_topics_rang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumers of one process wait on one timer (here without doorbells: the bells read
    every poll interval): while their topics are quiet none of them is woken to look, however
    often the timer ticks; a bell wakes its own consumer only."""
    broker = await log_in(tmp_path, poll_interval_ms=5, doorbells=False)
    topics = [f"t{n}.events" for n in range(4)]
    await broker.create_topics([TopicSpec(t, 2) for t in topics])
    consumers = [broker.consumer(f"g{n}", [t]) for n, t in enumerate(topics)]
    looks: dict[object, int] = {}
    look = broker.changed_since_last_look

    def counted(looker: object, of: Sequence[str]) -> bool:
        looks[looker] = looks.get(looker, 0) + 1
        return look(looker, of)

    try:
        for consumer in consumers:
            await consumer.start()
            assert await consumer.fetch(100, 0) == []  # the first look of each
        monkeypatch.setattr(broker, "changed_since_last_look", counted)
        waits = [asyncio.create_task(c.fetch(100, NEVER)) for c in consumers]
        await eventually(lambda: len(broker._waiting) == 4, "all four waiting", 10.0, every=0.005)
        looks.clear()  # each fetch looked once before it began to wait
        assert [t.get_name() for t in asyncio.all_tasks()].count("sqllog-bells") == 1
        # Fifty ticks of a quiet log: the timer read the bells for everyone; nobody looked.
        ticks = count_watcher_looks(broker, monkeypatch)
        await eventually(lambda: ticks[0] >= 4 * 50, "fifty ticks of the timer", 10.0, every=0.005)
        assert looks == {}
        assert not any(w.done() for w in waits)
        await broker.publish([message(topics[2], 1)])
        records = await asyncio.wait_for(waits[2], timeout=10)
        assert [r.value for r in records] == [b"v1"]
        assert looks == {consumers[2]: 1}
        assert not any(w.done() for n, w in enumerate(waits) if n != 2)
        # A closing consumer stops waiting at once.
        await consumers[0].close()
        assert await asyncio.wait_for(waits[0], timeout=10) == []
        for w in waits[1:]:
            w.cancel()
    finally:
        for consumer in consumers:
            await consumer.close()
        await broker.close()
    assert broker._watcher is None


async def test_with_doorbells_a_quiet_log_wakes_no_watcher_and_a_publish_wakes_its_consumer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With doorbells (inotify) the watcher reads the bells only when a doorbell of a waiting
    consumer's topics rang: other topics' records and quiet time wake it for nothing, and a
    record of its own topic, published by another process's client, reaches it at once."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    publisher, subscriber = SqlLogBroker(url), SqlLogBroker(url)
    await publisher.start()
    await subscriber.start()
    await doorbells_or_skip(subscriber, publisher)
    assert TopicBells.slots(["mine.events"]) != TopicBells.slots(["theirs.events"])
    consumer = subscriber.consumer("g", ["mine.events"])
    try:
        await publisher.create_topics([TopicSpec("mine.events", 2), TopicSpec("theirs.events", 2)])
        await consumer.start()
        subscriber.LOOK_ANYWAY_S = NEVER
        assert await consumer.fetch(100, 0) == []  # its first look
        looks = count_watcher_looks(subscriber, monkeypatch)
        wait = asyncio.create_task(consumer.fetch(100, NEVER))
        await eventually(
            lambda: looks[0] >= 1, "the watcher's first look", 10.0, every=0.005
        )  # the watcher's first look, as the wait began
        looks[0] = 0
        published = await _publish_for(publisher, "theirs.events", 0.3)
        assert published > 5
        await asyncio.sleep(0)
        assert looks[0] == 0
        assert not wait.done()
        await publisher.publish([message("mine.events", 3)])
        records = await asyncio.wait_for(wait, timeout=10)
        assert [r.value for r in records] == [b"v3"]
    finally:
        await consumer.close()
        await publisher.close()
        await subscriber.close()


async def test_a_doorbell_that_cannot_be_rung_publishes_once_and_the_record_is_still_found(tmp_path: Path) -> None:
    """The records are committed before the doorbell rings: a doorbell that cannot be written
    (here a directory stands where its file should be) must not fail the publish, which would
    have the outbox send them again; its consumers find the record by reading the counters."""
    broker = SqlLogBroker(f"sqlite:///{tmp_path / 'log.db'}")
    await broker.start()
    consumer = broker.consumer("g", ["stuck.events"])
    try:
        await broker.create_topics([TopicSpec("stuck.events", 1)])
        assert broker._bells is not None
        os.mkdir(broker._bells.door(TopicBells.slots(["stuck.events"])[0]))
        await consumer.start()
        assert await consumer.fetch(100, 0) == []
        await broker.publish([message("stuck.events", 1)])
        records = await consumer.fetch(100, 10)
        assert [r.value for r in records] == [b"v1"]
    finally:
        await consumer.close()
        await broker.close()
    with sqlite3.connect(tmp_path / "log.db") as db:
        assert db.execute("SELECT count(*) FROM log_records").fetchone() == (1,)


class _NoWatches:
    """inotify with its watches used up: every new watch is refused."""

    def inotify_add_watch(self, *_: object) -> int:
        return -1


async def test_when_a_doorbell_cannot_be_watched_the_waiting_consumers_go_on_with_the_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer whose doorbells cannot be watched turns the process back to reading the bells
    on the timer, and a consumer already waiting on the doorbells is not left waiting for them."""
    broker = await log_in(tmp_path)
    await doorbells_or_skip(broker)
    first, second = broker.consumer("one", ["one.events"]), broker.consumer("two", ["two.events"])
    try:
        await broker.create_topics([TopicSpec("one.events", 1), TopicSpec("two.events", 1)])
        await first.start()
        await second.start()
        assert await first.fetch(100, 0) == []
        assert await second.fetch(100, 0) == []
        waiting = asyncio.create_task(first.fetch(100, NEVER))
        await eventually(
            lambda: broker._watcher is not None and bool(broker._waiting), "a fetch waiting, watched", 10.0, every=0.005
        )
        monkeypatch.setattr(broker._doorbells, "_libc", _NoWatches())
        other = asyncio.create_task(second.fetch(100, NEVER))
        await eventually(lambda: broker._doorbells is None, "the doorbells given up", 10.0, every=0.005)
        await broker.publish([message("one.events", 1)])
        assert [r.value for r in await asyncio.wait_for(waiting, timeout=10)] == [b"v1"]
        await broker.publish([message("two.events", 2)])
        assert [r.value for r in await asyncio.wait_for(other, timeout=10)] == [b"v2"]
    finally:
        await first.close()
        await second.close()
        await broker.close()


async def test_a_wait_ends_at_its_timeout_when_nothing_rang(tmp_path: Path) -> None:
    broker = await log_in(tmp_path, poll_interval_ms=5)
    await broker.create_topics([TopicSpec("calm.events", 1)])
    consumer = broker.consumer("calm", ["calm.events"])
    try:
        await consumer.start()
        started = time.monotonic()
        assert await asyncio.wait_for(consumer.fetch(100, 0.1), timeout=10) == []
        assert time.monotonic() - started >= 0.1
        assert broker._waiting == {}
    finally:
        await consumer.close()
        await broker.close()
