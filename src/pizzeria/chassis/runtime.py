"""A service's runtime: its database, the broker, the outbox relay, its consumer groups, the
dead-letter replayer and its background loops, started and stopped together by its app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.logging import get_logger
from pizzeria.kit.loops import BackgroundLoop, Step
from pizzeria.kit.settings import Settings
from pizzeria.messaging import inbox
from pizzeria.messaging.broker import Broker
from pizzeria.messaging.consumer import ConsumerRunner, HandlerRegistry, RetryPolicy
from pizzeria.messaging.deadletters import DeadLetterStore, as_record
from pizzeria.messaging.pausable import PausableBroker
from pizzeria.messaging.relay import OutboxRelay
from pizzeria.messaging.uow import UnitOfWork

log = get_logger(__name__)

#: How often each replica looks at its control tables (fault switches, token epochs, dead letters
#: an administrator asked to replay): what another replica or the ops API wrote there takes
#: effect within this many seconds.
CONTROL_INTERVAL_S = 0.5

#: How often the dead-letter replayer runs when nothing woke it (see `ServiceRuntime.__init__`).
REPLAYER_BACKSTOP_S = 60.0

#: A look at one control table inside the shared read (see `ServiceRuntime.add_look`): it reads
#: what it needs and acts on it at once, in memory (anything slower is handed to a loop of its own).
Look = Callable[[AsyncConnection], Awaitable[None]]


class ServiceRuntime:
    """Everything that runs inside one service process besides its HTTP routes."""

    def __init__(self, *, service: str, settings: Settings, db: Database, broker: Broker) -> None:
        self.service = service
        self.settings = settings
        self.db = db
        # Pausable on purpose by the fault lab (chassis/faults.py); passes everything otherwise.
        self.broker = broker if isinstance(broker, PausableBroker) else PausableBroker(broker)
        self.source = f"/pizzeria/{service}"
        self.relay = OutboxRelay(
            db,
            self.broker,
            batch_size=settings.outbox_batch_size,
            poll_interval=settings.outbox_poll_interval_ms / 1000,
            retention=settings.outbox_retention_s,
            linger=settings.outbox_linger_ms / 1000,
        )
        self.dead_letters = DeadLetterStore(db, self.uow)
        self.runners: list[ConsumerRunner] = []
        self._workers: list[tuple[Callable[[], Coroutine[Any, Any, None]], str]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._dynamic: dict[ConsumerRunner, list[asyncio.Task[None]]] = {}
        self.loops: list[BackgroundLoop] = []
        self._looks: list[Look] = [self._replay_requests]
        self.add_loop("control", self._look_around, interval=CONTROL_INTERVAL_S)
        # Replays run apart from the looks: one can take as long as its consumer's retries, and
        # the switches and token epochs must not wait for it.
        self._replays: list[dict[str, Any]] = []
        # It has work only when the control look hands some over, and then the look wakes it:
        # its timer is a backstop, not a poll (a quiet process need not wake for it).
        self._replayer = self.add_loop("dead-letter-replay", self._replay, interval=REPLAYER_BACKSTOP_S)
        self.add_loop("inbox-pruner", self._prune_inbox, interval=600.0, initial_delay=600.0)

    def uow(self) -> UnitOfWork:
        """A new unit of work whose commit wakes the relay."""
        return UnitOfWork(self.db, source=self.source, on_commit=self.relay.wake, heard_here=self.relay.leading)

    def subscribe(
        self,
        group: str,
        handlers: HandlerRegistry,
        topics: Sequence[str] | None = None,
        *,
        dead_letter_topic: str | None = None,
    ) -> ConsumerRunner:
        """A consumer group of this service, started with the runtime."""
        runner = self._runner(group, handlers, topics, dead_letter_topic)
        self.runners.append(runner)
        return runner

    def launch(
        self,
        group: str,
        handlers: HandlerRegistry,
        topics: Sequence[str] | None = None,
        *,
        dead_letter_topic: str | None = None,
    ) -> ConsumerRunner:
        """A consumer group started now, while the service runs (see `halt`)."""
        runner = self._runner(group, handlers, topics, dead_letter_topic)
        self._dynamic[runner] = [self._spawn(runner.run, f"consumer-{group}")]
        return runner

    async def halt(self, runner: ConsumerRunner) -> None:
        """Stop a consumer group started with `launch` (its uncommitted records stay unread)."""
        runner.stop()
        for task in self._dynamic.pop(runner, []):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            self._tasks.remove(task)

    def _runner(
        self, group: str, handlers: HandlerRegistry, topics: Sequence[str] | None, dead_letter_topic: str | None
    ) -> ConsumerRunner:
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
                transient_patience=self.settings.consumer_transient_patience_s,
            ),
            batch_size=self.settings.consumer_batch_size,
            linger=self.settings.consumer_linger_s(),
            client_id=self.service,
            stuck_after=self.settings.consumer_stuck_after_s,
        )

    def add_worker(self, work: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """A long-running task of the service, started with the runtime and stopped with it."""
        self._workers.append((work, name))

    def add_loop(self, name: str, step: Step, *, interval: float, initial_delay: float = 0.0) -> BackgroundLoop:
        """Background work run by a `BackgroundLoop` (see there) from start to stop; call the
        loop's `wake` after committing work for it."""
        loop = BackgroundLoop(name, step, interval=interval, initial_delay=initial_delay)
        self.loops.append(loop)
        self.add_worker(loop.run, name)
        return loop

    def add_look(self, look: Look) -> None:
        """Have `look` read its control table every `CONTROL_INTERVAL_S`, in one read
        transaction with every other look of the service (one short transaction twice a second,
        instead of one per table and per consumer group)."""
        self._looks.append(look)

    async def _look_around(self) -> None:
        async with self.db.read() as conn:
            for look in self._looks:
                await look(conn)

    async def start(self) -> None:
        await self.broker.start()
        self._spawn(self.relay.run, "outbox-relay")
        for runner in self.runners:
            self._spawn(runner.run, f"consumer-{runner.group}")
        for work, name in self._workers:
            self._spawn(work, name)

    def _spawn(self, work: Callable[[], Coroutine[Any, Any, None]], name: str) -> asyncio.Task[None]:
        # The work's coroutine is made inside the task: a task cancelled before it ever ran then
        # leaves no coroutine behind that was never awaited.
        task = asyncio.create_task(self._supervised(work, name), name=name)
        self._tasks.append(task)
        return task

    async def _supervised(self, work: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A worker that dies takes the process down: the supervisor restarts it cleanly.
            log.exception("background worker crashed", worker=name)
            os.kill(os.getpid(), signal.SIGTERM)

    async def _replay_requests(self, conn: AsyncConnection) -> None:
        """The dead letters an administrator asked to replay: handed to the replayer (unless it
        still has some to go through)."""
        if self._replays:
            return
        groups = [runner.group for runner in [*self.runners, *self._dynamic]]
        self._replays = await self.dead_letters.replay_requests(conn, groups)
        if self._replays:
            self._replayer.wake()

    async def _replay(self) -> None:
        """Run each dead letter handed over through its consumer again, each by one replica."""
        runners = {runner.group: runner for runner in [*self.runners, *self._dynamic]}
        try:
            for row in self._replays:
                runner = runners.get(row["group_id"])
                if runner is None:
                    continue  # its group was stopped since
                async with self.dead_letters.replaying(row["id"]) as ours:
                    if not ours:
                        continue  # another replica replays it (or has)
                    log.info("replaying dead letter", dead_letter_id=row["id"], group=row["group_id"])
                    await runner.process(as_record(row), replay_of=row["id"])
        finally:
            self._replays = []  # the next look hands over what still waits

    async def _prune_inbox(self) -> None:
        """Forget processed message ids older than the retention (no redelivery comes that late)."""
        cutoff = utcnow() - timedelta(seconds=self.settings.inbox_retention_s)
        async with self.db.transaction() as conn:
            pruned = await inbox.prune(conn, cutoff)
        if pruned:
            log.info("inbox pruned", rows=pruned)

    def healthy(self) -> bool:
        return all(not t.done() for t in self._tasks)

    def consumers_moving(self) -> None:
        """Raise, naming them, if consumer groups are held up on a record (see ConsumerRunner.stuck)."""
        stuck = [f"{r.group} for {r.stuck_for():.0f} s" for r in [*self.runners, *self._dynamic] if r.stuck()]
        if stuck:
            raise RuntimeError(f"held up on one record: {', '.join(stuck)}")

    async def stop(self) -> None:
        self.relay.stop()
        for loop in self.loops:
            loop.stop()
        for runner in self.runners:
            runner.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        await self.broker.close()
