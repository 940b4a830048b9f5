"""A service's messaging runtime: its database, the broker, the outbox relay, its consumer
groups and the dead-letter replayer, started and stopped together by the service's app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.logging import get_logger
from pizzeria.kit.migrations import MigrationSet
from pizzeria.kit.settings import Settings
from pizzeria.messaging import inbox
from pizzeria.messaging.broker import Broker, create_broker
from pizzeria.messaging.consumer import ConsumerRunner, HandlerRegistry, RetryPolicy
from pizzeria.messaging.deadletters import DeadLetterStore, as_record
from pizzeria.messaging.relay import OutboxRelay
from pizzeria.messaging.tables import metadata as messaging_metadata
from pizzeria.messaging.uow import UnitOfWork

log = get_logger(__name__)

MESSAGING_MIGRATIONS = MigrationSet(
    script_location=str(Path(__file__).parent / "migrations"),
    version_table="alembic_version_messaging",
    metadata=messaging_metadata,
)


def broker_from_settings(settings: Settings, client_id: str = "pizzeria") -> Broker:
    return create_broker(
        settings.broker_url_resolved(),
        poll_interval_ms=settings.sqllog_poll_interval_ms,
        session_timeout_ms=(
            settings.kafka_session_timeout_ms
            if settings.broker_url.startswith("kafka")
            else settings.sqllog_session_timeout_ms
        ),
        retention_hours=settings.sqllog_retention_hours,
        fetch_wait_max_ms=settings.kafka_fetch_wait_max_ms,
        linger_ms=settings.kafka_linger_ms,
        client_id=client_id,
    )


class MessagingRuntime:
    """Everything that moves messages in and out of one service."""

    def __init__(self, *, service: str, settings: Settings, db: Database, broker: Broker) -> None:
        self.service = service
        self.settings = settings
        self.db = db
        self.broker = broker
        self.source = f"/pizzeria/{service}"
        self.relay = OutboxRelay(
            db, broker,
            batch_size=settings.outbox_batch_size,
            poll_interval=settings.outbox_poll_interval_ms / 1000,
            retention=settings.outbox_retention_s,
        )
        self.dead_letters = DeadLetterStore(db, self.uow)
        self.runners: list[ConsumerRunner] = []
        self._workers: list[tuple[Callable[[], Coroutine[Any, Any, None]], str]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._dynamic: dict[ConsumerRunner, list[asyncio.Task[None]]] = {}

    def uow(self) -> UnitOfWork:
        """A new unit of work whose commit wakes the relay."""
        return UnitOfWork(self.db, source=self.source, on_commit=self.relay.wake)

    def subscribe(self, group: str, handlers: HandlerRegistry, topics: Sequence[str] | None = None,
                  *, dead_letter_topic: str | None = None) -> ConsumerRunner:
        """A consumer group of this service, started with the runtime."""
        runner = self._runner(group, handlers, topics, dead_letter_topic)
        self.runners.append(runner)
        return runner

    def launch(self, group: str, handlers: HandlerRegistry, topics: Sequence[str] | None = None,
               *, dead_letter_topic: str | None = None) -> ConsumerRunner:
        """A consumer group started now, while the service runs (see `halt`)."""
        runner = self._runner(group, handlers, topics, dead_letter_topic)
        self._dynamic[runner] = [
            self._spawn(runner.run(), f"consumer-{group}"),
            self._spawn(self._replay_forever(runner), f"replay-{group}"),
        ]
        return runner

    async def halt(self, runner: ConsumerRunner) -> None:
        """Stop a consumer group started with `launch` (its uncommitted records stay unread)."""
        runner.stop()
        for task in self._dynamic.pop(runner, []):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            self._tasks.remove(task)

    def _runner(self, group: str, handlers: HandlerRegistry, topics: Sequence[str] | None,
                dead_letter_topic: str | None) -> ConsumerRunner:
        return ConsumerRunner(
            group=group,
            handlers=handlers,
            topics=topics,
            dead_letter_topic=dead_letter_topic,
            broker=self.broker,
            uow_factory=self.uow,
            dead_letters=self.dead_letters,
            retry=RetryPolicy(
                max_attempts=self.settings.consumer_max_attempts,
                initial_backoff=self.settings.consumer_backoff_initial_ms / 1000,
                max_backoff=self.settings.consumer_backoff_max_ms / 1000,
            ),
            batch_size=self.settings.consumer_batch_size,
            client_id=self.service,
        )

    def add_worker(self, work: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """A background loop of the service, started with the runtime and stopped with it."""
        self._workers.append((work, name))

    async def start(self) -> None:
        await self.broker.start()
        self._spawn(self.relay.run(), "outbox-relay")
        for runner in self.runners:
            self._spawn(runner.run(), f"consumer-{runner.group}")
            self._spawn(self._replay_forever(runner), f"replay-{runner.group}")
        for work, name in self._workers:
            self._spawn(work(), name)
        self._spawn(self._prune_inbox_forever(), "inbox-pruner")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._supervised(coro, name), name=name)
        self._tasks.append(task)
        return task

    async def _supervised(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            # A worker that dies takes the process down: the supervisor restarts it cleanly.
            log.exception("background worker crashed", worker=name)
            os.kill(os.getpid(), signal.SIGTERM)

    async def _replay_forever(self, runner: ConsumerRunner) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                for row in await self.dead_letters.replay_requests(runner.group):
                    log.info("replaying dead letter", dead_letter_id=row["id"], group=runner.group)
                    await runner.process(as_record(row), replay_of=row["id"])
            except Exception as exc:
                log.warning("dead-letter replay failed; will retry", error=str(exc))

    async def _prune_inbox_forever(self) -> None:
        """Forget processed message ids older than the retention (no redelivery comes that late)."""
        while True:
            await asyncio.sleep(600)
            try:
                cutoff = utcnow() - timedelta(seconds=self.settings.inbox_retention_s)
                async with self.db.transaction() as conn:
                    pruned = await inbox.prune(conn, cutoff)
                if pruned:
                    log.info("inbox pruned", rows=pruned)
            except Exception as exc:
                log.warning("inbox pruning failed; will retry", error=str(exc))

    def healthy(self) -> bool:
        return all(not t.done() for t in self._tasks)

    async def stop(self) -> None:
        self.relay.stop()
        for runner in self.runners:
            runner.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        await self.broker.close()
