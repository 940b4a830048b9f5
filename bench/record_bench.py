"""CPU per record of the Python a message costs on the Kafka path, no broker or database involved.

Every order makes about 25 records and consumes about 65, so a microsecond here is about a tenth
of a millisecond of CPU per order. Each path is run with the system's own code on records of the
shape the services write (ten CloudEvents headers, a UUID key), `runs` times over `n` records;
the least µs per record counts (CPU time of this process, the garbage collector off).

- consume: librdkafka's messages (real `confluent_kafka.Message` objects) → `Record` →
  `Envelope.from_record` → the consumer's `Incoming`;
- emit: `UnitOfWork.emit` of a small command: `Envelope.wrap`, its headers, the outbox row
  (and, apart, `wrap` / `headers` / `to_outgoing` / `emit_raw` alone);
- relay: outbox rows → the `OutgoingMessage`s the relay publishes;
- publish: `KafkaBroker.publish` of those, in runs of `batch`, to a producer that takes each
  record and reports it delivered at once (what is measured is ours, not librdkafka's).

Run: `python -m bench.record_bench [n] [runs]`."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import uuid
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import confluent_kafka

from pizzeria.contracts.kitchen import KitchenLine, ReserveIngredients
from pizzeria.kit import context
from pizzeria.kit.ids import new_id
from pizzeria.messaging.consumer import Incoming
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.kafka import KafkaBroker, records_of
from pizzeria.messaging.relay import outgoing
from pizzeria.messaging.uow import UnitOfWork

SOURCE = "pizzeria.kitchen"
TOPIC = "kitchen.commands"
BATCH = 50
_Row = namedtuple("_Row", "seq id topic key headers payload created_at")


class _Producer:
    """Takes each record as librdkafka's producer would and reports it delivered at once."""

    def produce(self, topic: str, *, value: bytes, key: bytes | None, headers: Any, on_delivery: Any) -> None:
        on_delivery(None, None)


def _command() -> ReserveIngredients:
    line = KitchenLine(menu_item_id=uuid.uuid4(), name="Margherita", size="m", quantity=1)
    return ReserveIngredients(order_id=uuid.uuid4(), lines=[line])


def _in_context() -> None:
    """As inside a handler: emitted messages inherit correlation, causation and trace."""
    context.correlation_id.set(new_id())
    context.causation_id.set(new_id())
    context.traceparent.set(f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01")


def _uow() -> UnitOfWork:
    return UnitOfWork(None, source=SOURCE)  # type: ignore[arg-type]  # emit touches no database


def _envelopes(n: int) -> list[Envelope]:
    return [Envelope.wrap(_command(), source=SOURCE) for _ in range(n)]


def _messages(envelopes: list[Envelope]) -> list[confluent_kafka.Message]:
    return [
        confluent_kafka.Message(
            topic=TOPIC,
            partition=i % 3,
            offset=i,
            key=(e.subject or "").encode(),
            value=e.data,
            headers=[(name, value.encode()) for name, value in e.headers().items()],
            timestamp=(confluent_kafka.TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + i),
        )
        for i, e in enumerate(envelopes)
    ]


def _rows(envelopes: list[Envelope]) -> list[Any]:
    uow = _uow()
    for e in envelopes:
        uow.emit_raw(e.to_outgoing(TOPIC), message_id=e.id)
    return [_Row(seq=i, **row) for i, row in enumerate(uow._pending)]


def _timed(runs: int, n: int, fn: Callable[[], object]) -> float:
    """The least µs per record over `runs` runs of `fn` (which handles `n` records), with the
    garbage collector off while it runs (as `timeit` does: its pauses depend on what else
    the process holds, not on the path)."""
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        gc.disable()
        try:
            started = time.process_time()
            fn()
            best = min(best, time.process_time() - started)
        finally:
            gc.enable()
    return best / n * 1e6


def main(n: int = 20_000, runs: int = 7) -> dict[str, float]:
    _in_context()
    envelopes = _envelopes(n)
    messages = _messages(envelopes)
    rows = _rows(envelopes)
    commands = [_command() for _ in range(n)]
    outs = outgoing(rows)
    records = records_of(messages)

    def consume() -> None:
        for record in records_of(messages):
            Incoming(None, Envelope.from_record(record), "kitchen")

    def emit() -> None:
        uow = _uow()
        for command in commands:
            uow.emit(command)

    def emit_raw() -> None:
        uow = _uow()
        for out in outs:
            uow.emit_raw(out, message_id=out.headers["ce_id"])

    broker = KafkaBroker("localhost:9092")
    broker._producer = _Producer()  # type: ignore[assignment]
    loop = asyncio.new_event_loop()

    async def publish_all() -> None:
        for i in range(0, n, BATCH):
            await broker.publish(outs[i : i + BATCH])

    results = {
        "consume: Message → Record → Envelope → Incoming": _timed(runs, n, consume),
        "  records_of (Message → Record)": _timed(runs, n, lambda: records_of(messages)),
        "  Envelope.from_record": _timed(runs, n, lambda: [Envelope.from_record(r) for r in records]),
        "emit: UnitOfWork.emit (wrap, headers, outbox row)": _timed(runs, n, emit),
        "  Envelope.wrap": _timed(runs, n, lambda: [Envelope.wrap(c, source=SOURCE) for c in commands]),
        "  Envelope.headers": _timed(runs, n, lambda: [e.headers() for e in envelopes]),
        "  Envelope.to_outgoing": _timed(runs, n, lambda: [e.to_outgoing(TOPIC) for e in envelopes]),
        "  UnitOfWork.emit_raw": _timed(runs, n, emit_raw),
        "relay: outbox row → OutgoingMessage": _timed(runs, n, lambda: outgoing(rows)),
        f"publish: KafkaBroker.publish, runs of {BATCH}": _timed(
            runs, n, lambda: loop.run_until_complete(publish_all())
        ),
    }
    loop.close()
    return results


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    for path, us in main(*args).items():
        print(f"{path:<52} {us:7.2f} µs/record")
