"""The consumer runner: the one path every consumed message takes.

fetch → decode the envelope → find the handler → in one transaction: inbox claim, handler,
commit → commit the broker offset. Failures are retried with exponential backoff and jitter; a
failure of the database or the network (a dropped connection, a lock not released in time, a
restarting server), or of a message that came before what it needs (`NotYet`), for as long as
`RetryPolicy.transient_patience`, so that a short outage or a late sibling is waited out
instead of turning good messages into dead letters. After the last attempt, or at
once for a message that can never succeed (not a CloudEvent, data that fails its schema,
`PermanentError`), the message goes to the group's
dead-letter topic with the error, the attempt count and its original headers, and the consumer
carries on. Partitions are processed concurrently, each strictly in order. An offset is
committed only once every record before it is processed or dead-lettered: nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError

from pizzeria.kit import context, failpoints, tracing
from pizzeria.kit.db import is_outage
from pizzeria.kit.frozen import quick_init
from pizzeria.kit.logging import get_logger
from pizzeria.kit.metrics import observe_many
from pizzeria.messaging import inbox, metrics
from pizzeria.messaging.broker import Broker, BrokerConsumer, Record, TopicPartition
from pizzeria.messaging.deadletters import DeadLetterStore
from pizzeria.messaging.envelope import Envelope, MalformedMessage
from pizzeria.messaging.message import REGISTRY, Message
from pizzeria.messaging.topics import dlq_topic
from pizzeria.messaging.uow import UnitOfWork

log = get_logger(__name__)

Handler = Callable[[Any, Envelope, UnitOfWork], Awaitable[None]]


@quick_init
@dataclass(frozen=True, slots=True)
class Incoming:
    """A consumed message, decoded, as a batch handler gets it. The handler acts on each inside
    `with item.handling():` so that what it emits is caused by that message and in its trace."""

    message: Any
    envelope: Envelope
    group: str = ""

    def handling(self) -> contextlib.AbstractContextManager[None]:
        return _MessageContext(self.envelope, self.group)


#: Takes a run of messages (one partition's, in order) and acts on all of them in the caller's
#: unit of work: load everything the run needs at once, act in memory, write once per table.
BatchHandler = Callable[[Sequence[Incoming], UnitOfWork], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a message type goes: its schema (None: not decoded, the handler reads the
    envelope's bytes itself) and a per-message or a batch handler."""

    model: type[BaseModel] | None
    handler: Handler | None = None
    batch: BatchHandler | None = None

    def decode(self, envelope: Envelope) -> Any:
        return None if self.model is None else self.model.model_validate_json(envelope.data)


class PermanentError(Exception):
    """A handler error retrying cannot fix: the message goes straight to the dead letters."""


class NotYet(Exception):
    """A handler error that only time fixes: what the message needs has not reached this
    service yet (it travels on another topic, read by another group). Retried as patiently as
    an outage (`RetryPolicy.transient_patience`) before the message is dead-lettered."""


class _MessageContext:
    """While a message is handled, what it emits is correlated with it and caused by it, and
    belongs to its trace (a consumer span, the child of the span that sent it); log lines
    written meanwhile name its order. A class rather than generators: this runs for every
    message, and two nested generator-based context managers cost more than the work."""

    __slots__ = ("_bound", "_envelope", "_group", "_span", "_tokens")

    def __init__(self, envelope: Envelope, group: str) -> None:
        self._envelope = envelope
        self._group = group

    def __enter__(self) -> None:
        envelope = self._envelope
        group = self._group
        self._tokens = (
            context.correlation_id.set(envelope.correlationid or envelope.id),
            context.causation_id.set(envelope.id),
            context.traceparent.set(envelope.traceparent),
        )
        # Log lines written while an order's message is handled name the order (put back as it
        # was afterwards, token by token: structlog's `bound_contextvars` reads every variable
        # of the context twice a message).
        declared = REGISTRY.get(envelope.type)
        self._bound = (
            structlog.contextvars.bind_contextvars(order_id=envelope.subject)
            if declared is not None and declared.key_field == "order_id" and envelope.subject
            else None
        )
        parent = envelope.traceparent or ""
        attributes: dict[str, str] | None = None
        if tracing.may_record(parent):  # nine messages in ten are not sampled at 0.1
            attributes = {
                "messaging.consumer.group.name": group,
                "messaging.message.id": envelope.id,
                "cloudevents.event_type": envelope.type,
                "messaging.operation.type": "process",
            }
            if envelope.subject:
                attributes["cloudevents.event_subject"] = envelope.subject
        self._span = tracing.span(
            f"{group} process {envelope.type}", kind=SpanKind.CONSUMER, parent=parent, attributes=attributes
        )
        try:
            self._span.__enter__()
        except BaseException:
            self._restore()
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self._span.__exit__(kind, exc, tb)
        finally:
            self._restore()

    def _restore(self) -> None:
        if self._bound is not None:
            structlog.contextvars.reset_contextvars(**self._bound)
        tokens = self._tokens
        context.correlation_id.reset(tokens[0])
        context.causation_id.reset(tokens[1])
        context.traceparent.reset(tokens[2])


class Outcome(enum.Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing handler is retried."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    #: How long an outage of the database or the network (`kit.db.is_outage`), or a message
    #: that came before what it needs (`NotYet`), is waited out before the message is
    #: dead-lettered, however many attempts that takes.
    transient_patience: float = 30.0

    def gives_up(self, attempt: int, error: BaseException, failing_for: float) -> bool:
        """Whether a message whose handling failed `attempt` times, the last with `error`,
        failing for `failing_for` seconds since its first failure, goes to the dead letters."""
        if attempt < self.max_attempts:
            return False
        waits = isinstance(error, NotYet) or is_outage(error)
        return not (waits and failing_for < self.transient_patience)

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff before attempt `attempt + 1`."""
        # the exponent capped: a long patience with no backoff to speak of runs to thousands of
        # attempts, and 2.0 ** 1024 is past what a float holds
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0 ** min(attempt - 1, 64))
        return float(ceiling * (0.5 + random.random() / 2))


class HandlerRegistry:
    """Which handler takes which message type, for one consumer group. A type has a handler of
    one message (`on`) or of a run of messages (`on_batch`)."""

    def __init__(self, *, inbox: bool = True) -> None:
        self._handlers: dict[str, Route] = {}
        self._any: Route | None = None
        #: False for a group whose every write is idempotent by itself (keyed by the message id):
        #: the inbox would only repeat what its unique key already guarantees.
        self.inbox = inbox

    def on_any_batch(self, handler: BatchHandler) -> BatchHandler:
        """`handler` takes runs of every message no other handler takes, undecoded (its
        `Incoming.message` is None; the data is the envelope's bytes)."""
        self._any = Route(None, batch=handler)
        return handler

    def on_batch(self, *message_types: type[Message]) -> Callable[[BatchHandler], BatchHandler]:
        """Register a handler of runs of these message types (consecutive messages of any of
        them are handed over together, in their partition's order)."""

        def register(handler: BatchHandler) -> BatchHandler:
            for message_type in message_types:
                self._handlers[message_type.type_name()] = Route(message_type, batch=handler)
            return handler

        return register

    def on(self, message_type: type[Message]) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(message_type, handler)
            return handler

        return register

    def add(self, message_type: type[Message], handler: Handler) -> None:
        self._handlers[message_type.type_name()] = Route(message_type, handler=handler)

    def get(self, type_name: str) -> Route | None:
        found = self._handlers.get(type_name)
        return self._any if found is None else found

    def other_versions(self, type_name: str) -> list[str]:
        """The versions of this message type the group handles when it does not handle this
        one (`pizzeria.orders.OrderPlaced.v2` while it takes `…OrderPlaced.v1`): such a
        message is meant for it but cannot be read, unlike a type it never takes."""
        if type_name in self._handlers or self._any is not None:
            return []
        name, dot, _ = type_name.rpartition(".")
        if not dot:
            return []
        return sorted(t for t in self._handlers if t.rpartition(".")[0] == name)

    def topics(self) -> list[str]:
        return sorted(
            {r.model.topic() for r in self._handlers.values() if r.model is not None and issubclass(r.model, Message)}
        )


def _segments(
    prepared: Sequence[tuple[Incoming, Route | None]], fresh: set[str], outcomes: dict[int, Outcome]
) -> Iterator[tuple[Route, list[Incoming]]]:
    """The run's messages to handle, in order, as (route, messages): consecutive messages of one
    batch handler together, any other one alone. Ignored and duplicate ones (already handled, or
    twice in this run: a relay that re-sent) are left out, their outcome noted by position."""
    current: tuple[Route, list[Incoming]] | None = None
    taken: set[str] = set()
    for position, (item, route) in enumerate(prepared):
        if route is None:
            outcomes[position] = Outcome.IGNORED
            continue
        if item.envelope.id not in fresh or item.envelope.id in taken:
            outcomes[position] = Outcome.DUPLICATE
            continue
        taken.add(item.envelope.id)
        if current is not None and route.batch is not None and current[0].batch is route.batch:
            current[1].append(item)
            continue
        if current is not None:
            yield current
        current = (route, [item])
    if current is not None:
        yield current


class ConsumerRunner:
    """Runs one consumer-group member of a service until stopped."""

    def __init__(
        self,
        *,
        group: str,
        handlers: HandlerRegistry,
        broker: Broker,
        uow_factory: Callable[[], UnitOfWork],
        dead_letters: DeadLetterStore,
        retry: RetryPolicy | None = None,
        topics: Sequence[str] | None = None,
        batch_size: int = 200,
        linger: float = 0.0,
        client_id: str = "",
        dead_letter_topic: str | None = None,
        stuck_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.group = group
        self.handlers = handlers
        self.broker = broker
        self.uow_factory = uow_factory
        self.dead_letters = dead_letters
        self.retry = retry or RetryPolicy()
        self.topics = list(topics or handlers.topics())
        self.batch_size = batch_size
        self.linger = linger
        self.client_id = client_id or group
        self._dlq_topic = dead_letter_topic or dlq_topic(group)
        #: The failpoint the group's handling passes before each handler runs (the fault lab
        #: holds it failing to make the group fail: chassis/faults.py).
        self.failpoint = f"consume.{group}"
        #: The failpoint passed once handling committed and before the offsets are (chaos
        #: tests crash there: the records come again, and the inbox must drop them).
        self.committed_failpoint = f"{self.failpoint}.committed"
        self.consumer: BrokerConsumer | None = None
        self._stopped = False
        self.healthy = False
        self.stuck_after = stuck_after
        self._clock = clock
        #: Since when each partition's current record (or run of records) has been worked on.
        self._working: dict[TopicPartition, float] = {}
        #: Since when the loop has failed without a successful fetch and commit in between.
        self._failing_since: float | None = None
        metrics.consumer_stuck.labels(group).set_function(lambda: 1.0 if self.stuck() else 0.0)
        #: The group's series of the per-message metrics, looked up once (a lookup by labels
        #: costs more than the count).
        self._counted: dict[Outcome, Any] = {}
        self._timed: dict[str, Any] = {}

    def _count(self, outcome: Outcome, amount: int = 1) -> None:
        series = self._counted.get(outcome)
        if series is None:
            series = self._counted[outcome] = metrics.consumer_messages.labels(self.group, outcome.value)
        series.inc(amount)

    def _took(self, type_name: str, seconds: float, count: int = 1) -> None:
        """`count` messages of a type handled, in `seconds` each."""
        series = self._timed.get(type_name)
        if series is None:
            series = self._timed[type_name] = metrics.consumer_handler_duration.labels(self.group, type_name)
        if count == 1:
            series.observe(seconds)
        else:
            observe_many(series, seconds, count)

    @property
    def dlq_topic(self) -> str:
        return self._dlq_topic

    def stuck_for(self) -> float:
        """Seconds the group has been held up: the longest any partition has waited on one
        record (or its run), or the loop has failed without getting anything done."""
        now = self._clock()
        since = [*self._working.values(), *([self._failing_since] if self._failing_since is not None else [])]
        return max((now - started for started in since), default=0.0)

    def stuck(self) -> bool:
        """Held up for longer than `stuck_after` (CONSUMER_STUCK_AFTER_S): every later record
        of the partition waits behind it, so the service is not ready."""
        return self.stuck_for() > self.stuck_after

    async def run(self) -> None:
        self.consumer = self.broker.consumer(self.group, self.topics, client_id=self.client_id)
        await self.consumer.start()
        lag_task = asyncio.create_task(self._report_lag_forever(), name=f"lag-{self.group}")
        self.healthy = True
        backoff = 0.1
        try:
            while not self._stopped:
                try:
                    records = await self._fetch_run()
                    if records:
                        metrics.consumer_runs.labels(self.group).inc()
                        await self.consumer.commit(await self.process_batch(records))
                    backoff = 0.1
                    self._failing_since = None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The batch is not committed: it will be fetched and handled again.
                    if self._failing_since is None:
                        self._failing_since = self._clock()
                    log.warning("consumer loop failed; retrying", group=self.group, error=str(exc))
                    await self._rejoin(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self.healthy = False
            lag_task.cancel()
            with contextlib.suppress(BaseException):
                await lag_task
            with contextlib.suppress(Exception):
                await self.consumer.close()

    async def _fetch_run(self) -> list[Record]:
        """The next run of records: what is there (waiting up to half a second for the first),
        and, with a linger, what arrives within it after a short fetch."""
        assert self.consumer is not None
        return await self.consumer.fetch_run(self.batch_size, 0.5, self.linger)

    async def _rejoin(self, delay: float) -> None:
        """Re-create the group member so uncommitted records are read again."""
        await asyncio.sleep(delay)
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.close()
        self.consumer = self.broker.consumer(self.group, self.topics, client_id=self.client_id)
        await self.consumer.start()

    def stop(self) -> None:
        self._stopped = True

    async def process_batch(self, records: Sequence[Record]) -> dict[TopicPartition, int]:
        """Process records, partitions concurrently; returns the offsets to commit."""
        by_partition: dict[TopicPartition, list[Record]] = defaultdict(list)
        for record in records:
            by_partition[(record.topic, record.partition)].append(record)

        async def run_partition(batch: list[Record]) -> None:
            # Under load, a partition's records share one transaction (one commit instead of
            # one per record); if anything in it fails, they are handled one by one instead.
            partition = (batch[0].topic, batch[0].partition)
            self._working[partition] = self._clock()
            try:
                if len(batch) > 1 and await self._process_together(batch):
                    return
                for record in batch:
                    self._working[partition] = self._clock()
                    await self.process_until_settled(record)
            finally:
                self._working.pop(partition, None)

        together = len(by_partition) > 1
        if together:
            # One transaction for the whole fetch: under load most partitions bring only a
            # record or two, and a commit each costs more than the handling. Records of a
            # partition keep their order in it; if anything fails, partition by partition.
            started = self._clock()
            for partition in by_partition:
                self._working[partition] = started
            try:
                together = await self._process_together(list(records))
            finally:
                for partition in by_partition:
                    self._working.pop(partition, None)
        if not together:
            await asyncio.gather(*(run_partition(b) for b in by_partition.values()))
        return {tp: batch[-1].offset + 1 for tp, batch in by_partition.items()}

    async def _process_together(self, batch: list[Record]) -> bool:
        """Handle a run of records in one transaction: one inbox statement for the run, each
        batch handler once for its consecutive messages, one commit. False (and nothing written)
        if any of them is poison or fails: the caller then takes the careful path, one by one."""
        prepared: list[tuple[Incoming, Route | None]] = []
        for record in batch:
            try:
                envelope = Envelope.from_record(record)
            except Exception:  # not even an envelope: the careful path dead-letters it
                return False
            route = self.handlers.get(envelope.type)
            if route is None:
                if self.handlers.other_versions(envelope.type):
                    return False
                prepared.append((Incoming(None, envelope, self.group), None))
                continue
            try:
                prepared.append((Incoming(route.decode(envelope), envelope, self.group), route))
            except Exception:
                return False
        outcomes: dict[int, Outcome] = {}
        started = time.perf_counter()
        try:
            async with self.uow_factory() as uow:
                wanted = [item.envelope.id for item, route in prepared if route is not None]
                fresh = await inbox.claim_many(uow.conn, self.group, wanted) if self.handlers.inbox else set(wanted)
                for route, items in _segments(prepared, fresh, outcomes):
                    await self._run_segment(route, items, uow)
                await uow.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("batch failed; handling its records one by one", group=self.group, size=len(batch), error=str(exc))
            return False
        failpoints.hit(self.committed_failpoint)
        per_message = (time.perf_counter() - started) / len(prepared)
        # one update of each type's series for the run, not one a message
        handled = Counter(item.envelope.type for position, (item, _) in enumerate(prepared) if position not in outcomes)
        for type_name, count in handled.items():
            self._took(type_name, per_message, count)
        for outcome, count in Counter(outcomes.values()).items():
            self._count(outcome, count)
        if len(prepared) > len(outcomes):
            self._count(Outcome.PROCESSED, len(prepared) - len(outcomes))
        return True

    async def _run_segment(self, route: Route, items: list[Incoming], uow: UnitOfWork) -> None:
        failpoints.hit(self.failpoint)
        if route.batch is not None:
            await route.batch(items, uow)
            return
        assert route.handler is not None
        for item in items:
            with _MessageContext(item.envelope, self.group):
                await route.handler(item.message, item.envelope, uow)

    async def process_until_settled(self, record: Record) -> Outcome:
        """Process a record; if even dead-lettering fails (database down), keep trying: the
        offset must not move past a record that is neither handled nor dead-lettered."""
        delay = 0.1
        while True:
            try:
                return await self.process(record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error(
                    "cannot settle message; retrying",
                    group=self.group,
                    error=str(exc),
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def process(self, record: Record, *, replay_of: str | None = None) -> Outcome:
        """One record through decode, handler with retries, and dead-lettering."""
        try:
            envelope = Envelope.from_record(record)
        except MalformedMessage as exc:
            return await self._dead_letter(record, None, f"malformed: {exc}", 1, replay_of)
        except Exception as exc:  # decoding is total: whatever else goes wrong, the record is poison
            return await self._dead_letter(record, None, f"malformed: {type(exc).__name__}: {exc}", 1, replay_of)
        route = self.handlers.get(envelope.type)
        if route is None:
            known = self.handlers.other_versions(envelope.type)
            if known:
                reason = f"unknown schema version: {envelope.type}; this group reads {', '.join(known)}"
                return await self._dead_letter(record, envelope, reason, 1, replay_of)
            if replay_of is not None:  # asked for by name: it must not wait for its replay forever
                reason = f"no handler: this group no longer takes {envelope.type}"
                return await self._dead_letter(record, envelope, reason, 1, replay_of)
            self._count(Outcome.IGNORED)
            return Outcome.IGNORED
        try:
            message = route.decode(envelope)
        except ValidationError as exc:
            return await self._dead_letter(record, envelope, f"schema: {exc}", 1, replay_of)
        except Exception as exc:  # e.g. data nested too deep to parse
            return await self._dead_letter(record, envelope, f"schema: {type(exc).__name__}: {exc}", 1, replay_of)

        with _MessageContext(envelope, self.group):
            attempt = 0
            first_failure: float | None = None
            while True:
                attempt += 1
                try:
                    outcome = await self._handle_once(message, envelope, route)
                    self._count(outcome)
                    if replay_of is not None:
                        await self.dead_letters.mark_replayed(replay_of)
                    return outcome
                except asyncio.CancelledError:
                    raise
                except PermanentError as exc:
                    return await self._dead_letter(record, envelope, f"permanent: {exc}", attempt, replay_of)
                except Exception as exc:
                    first_failure = first_failure if first_failure is not None else self._clock()
                    if self.retry.gives_up(attempt, exc, self._clock() - first_failure):
                        return await self._dead_letter(
                            record, envelope, f"{type(exc).__name__}: {exc}", attempt, replay_of
                        )
                    metrics.consumer_retries.labels(self.group).inc()
                    log.warning(
                        "handler failed; retrying",
                        group=self.group,
                        type=envelope.type,
                        message_id=envelope.id,
                        attempt=attempt,
                        error=str(exc),
                    )
                    await asyncio.sleep(self.retry.delay(attempt))

    async def _handle_once(self, message: Any, envelope: Envelope, route: Route) -> Outcome:
        started = time.perf_counter()
        async with self.uow_factory() as uow:
            if self.handlers.inbox and not await uow.claim(self.group, envelope.id):
                return Outcome.DUPLICATE
            failpoints.hit(self.failpoint)
            if route.batch is not None:
                await route.batch([Incoming(message, envelope, self.group)], uow)
            else:
                assert route.handler is not None
                await route.handler(message, envelope, uow)
            await uow.commit()
        failpoints.hit(self.committed_failpoint)
        self._took(envelope.type, time.perf_counter() - started)
        return Outcome.PROCESSED

    async def _dead_letter(
        self, record: Record, envelope: Envelope | None, error: str, attempts: int, replay_of: str | None
    ) -> Outcome:
        log.error(
            "message dead-lettered",
            group=self.group,
            topic=record.topic,
            offset=record.offset,
            message_id=envelope.id if envelope else None,
            attempts=attempts,
            error=error,
        )
        if replay_of is not None:
            await self.dead_letters.mark_failed_again(replay_of, error, attempts)
        else:
            await self.dead_letters.add(self.group, record, envelope, error, attempts, topic=self.dlq_topic)
        metrics.consumer_dead_letters.labels(self.group).inc()
        self._count(Outcome.DEAD_LETTERED)
        return Outcome.DEAD_LETTERED

    async def _report_lag_forever(self) -> None:
        """Every 15 s, the lag of each partition this member owns; a partition that moved to
        another member (a replica) leaves this one's report, so no replica shows a stale lag.
        Until the member owns a partition it looks every second, so a fresh consumer's lag is
        on its metrics page within a second of its assignment, not a period later."""
        reported: set[TopicPartition] = set()
        try:
            while True:
                await asyncio.sleep(15 if reported else 1)
                if self.consumer is None:
                    continue
                with contextlib.suppress(Exception):
                    lags = await self.consumer.lag()
                    for (topic, partition), lag in lags.items():
                        metrics.consumer_lag.labels(self.group, topic, str(partition)).set(lag)
                    self._forget_lag(reported - lags.keys())
                    reported = set(lags)
        finally:
            self._forget_lag(reported)

    def _forget_lag(self, partitions: set[TopicPartition]) -> None:
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                metrics.consumer_lag.remove(self.group, topic, str(partition))
