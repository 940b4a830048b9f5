"""The embedded log's own CPU: records published and consumed through `SqlLogBroker` by a
consumer group, as a service's consumer runner takes them (fetch a run, commit its offsets), and
what an idle consumer costs while it waits for news.

    python -m bench.sqllog_bench --records 6000

`trickle`: a few records published, then fetched and committed, over and over (a consumer
keeping up with a steady load: most fetches bring a record or two from a few partitions);
`backlog`: a backlog published first, then drained in runs of 200. CPU is the process's
(`time.process_time`), publishing counted apart from consuming.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from pizzeria.kit.ids import new_id
from pizzeria.messaging.broker import OutgoingMessage, TopicSpec
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.sqllog import SqlLogBroker

TOPICS = [f"ctx{n}.events" for n in range(6)]


def _message(n: int) -> OutgoingMessage:
    order = new_id()
    envelope = Envelope(
        id=new_id(),
        source="bench",
        type="pizzeria.bench.Happened.v1",
        data=b'{"order_id": "%s", "n": %d, "note": "%s"}' % (order.encode(), n, b"x" * 120),
        subject=order,
        correlationid=new_id(),
        causationid=new_id(),
        traceparent=f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-01",
    )
    return envelope.to_outgoing(random.choice(TOPICS))


async def _consume(consumer: object, expected: int, batch: int) -> tuple[float, int]:
    """Fetch and commit until `expected` records came; (CPU seconds, fetches)."""
    got = fetches = 0
    cpu = 0.0
    while got < expected:
        started = time.process_time()
        records = await consumer.fetch(batch, timeout=0.5)  # type: ignore[attr-defined]
        if records:
            offsets = {(r.topic, r.partition): r.offset + 1 for r in records}
            await consumer.commit(offsets)  # type: ignore[attr-defined]
        cpu += time.process_time() - started
        got += len(records)
        fetches += 1
    return cpu, fetches


async def run(records: int, per_publish: int, idle_s: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sqllogbench-") as tmp:
        broker = SqlLogBroker(f"sqlite:///{Path(tmp) / 'broker.db'}")
        await broker.start()
        try:
            await broker.create_topics([TopicSpec(t, 3) for t in TOPICS])
            consumer = broker.consumer("bench", TOPICS, client_id="bench")
            await consumer.start()
            await _round(broker, consumer, records // 4, per_publish)  # warms up: statements compiled
            results = [await _round(broker, consumer, records, per_publish) for _ in range(rounds)]
            # The least of the rounds: other processes on the machine only ever add to it.
            for name, unit, index in (
                ("trickle publish", "µs/record", 0),
                ("trickle fetch+commit", "µs/record", 1),
                ("trickle fetch+commit", "µs/fetch", 2),
                ("backlog publish", "µs/record", 3),
                ("backlog fetch+commit", "µs/record", 4),
                ("backlog fetch+commit", "µs/fetch", 5),
            ):
                print(f"{name:22} {min(r[index] for r in results):8.1f} {unit}")
            if idle_s > 0:
                began = time.process_time()
                deadline = time.monotonic() + idle_s
                while time.monotonic() < deadline:
                    await consumer.fetch(200, timeout=deadline - time.monotonic())
                idle = time.process_time() - began
                print(f"{'idle consumer':22} {idle / idle_s * 1000:8.2f} ms CPU/s")
            await consumer.close()
        finally:
            await broker.close()


async def _round(broker: SqlLogBroker, consumer: object, records: int, per_publish: int) -> tuple[float, ...]:
    """Per round, in µs: trickle publish and fetch+commit per record, fetch+commit per fetch,
    and the same for the backlog."""
    messages = [_message(n) for n in range(records)]
    publish_cpu = consume_cpu = 0.0
    fetches = 0
    for start in range(0, records, per_publish):
        chunk = messages[start : start + per_publish]
        began = time.process_time()
        await broker.publish(chunk)
        publish_cpu += time.process_time() - began
        cpu, n = await _consume(consumer, len(chunk), 200)
        consume_cpu += cpu
        fetches += n
    trickle = (publish_cpu / records * 1e6, consume_cpu / records * 1e6, consume_cpu / fetches * 1e6)
    began = time.process_time()
    for start in range(0, records, 500):
        await broker.publish(messages[start : start + 500])
    publish_cpu = time.process_time() - began
    consume_cpu, fetches = await _consume(consumer, records, 200)
    return (*trickle, publish_cpu / records * 1e6, consume_cpu / records * 1e6, consume_cpu / fetches * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=6000)
    parser.add_argument("--per-publish", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of both, the least of them reported")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of an idle consumer measured")
    args = parser.parse_args()
    asyncio.run(run(args.records, args.per_publish, args.idle, args.rounds))


if __name__ == "__main__":
    main()
