"""A deterministic simulation of the order saga over the embedded broker: one seed, one run, the
same on every machine and every time, step for step and byte for byte.

The four services of the saga (orders, kitchen, payments, delivery: their real handlers, each on
its own SQLite database, tests/support/cluster.py) talk through the real sqllog
(messaging/sqllog.py, one log file as on the embedded stack, each service with a broker of its
own on it): the real outbox relay publishes into it, the real consumer runner handles what each
group's real sqllog member fetches, and the member commits its offsets. Nothing runs on its own:
the brokers start no task (`background=False`), nothing sleeps, and a scheduler driven by
`random.Random(seed)` picks every step:

- which relay publishes and how big a batch, or dies before publishing or after publishing and
  before marking its rows (they go out again);
- which consumer group's member fetches and how many records, and whether it dies in the middle
  of a handler's transaction (rolled back), after its transaction and before its offsets (the
  records come again), or commits; a dead member is replaced at once, and the partitions it
  leased come free only when its lease runs out;
- a member leaving the group and another joining (a rebalance), and heartbeats;
- orders placed with cards that pay, are declined or never answer, cancels, the charger's
  passes, the card provider losing an answer, the kitchen and the couriers moving, and time
  passing (every member heartbeats as its task would, deadlines pass).

Time is a `ManualClock` put in place of the system's (`kit.clock.use`), ids come from a seeded
UUIDv7 source (`kit.ids.use`: they key the log's partitions and order some queries), and the
module `random` is seeded for the run (keyless records' partitions, retry jitter).

After every step the saga's invariants hold (tests/support/saga_checks.py); after the chaotic
part, a fair schedule without faults lets everything settle, and the final checks run. A run
returns its step log, a digest of the step log and one of the final state (every table of every
database, the log's included, and the provider's ledger), and the first failure with its step.
`python -m tests.chaos.replay` runs many seeds, or replays one."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from pizzeria.contracts.kitchen import IngredientAmount, IngredientsReserved, ReserveIngredients
from pizzeria.contracts.topology import all_topics
from pizzeria.kit import clock, failpoints, ids
from pizzeria.kit.db import Database
from pizzeria.kit.resilience import CircuitBreaker
from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import Broker, Record
from pizzeria.messaging.consumer import ConsumerRunner, HandlerRegistry
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.relay import OutboxRelay
from pizzeria.messaging.sqllog import SqlLogBroker, SqlLogConsumer
from pizzeria.messaging.topics import dlq_topic, topic_specs
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.kitchen import handlers as kitchen
from pizzeria.services.kitchen import repository as kitchen_repo
from pizzeria.services.kitchen.domain import Line, needs, shortages
from pizzeria.services.orders.domain import RequestedLine
from pizzeria.services.payments.settings import PaymentsSettings
from tests.fakes import ManualClock
from tests.support import saga_checks
from tests.support.cluster import CALZONE, MENU, PIZZA, RECIPES, Services

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SESSION_TIMEOUT_S = Settings.model_fields["sqllog_session_timeout_ms"].default / 1000
#: How often a member's heartbeat task beats once it holds its partitions (sqllog.py).
HEARTBEAT_EVERY_S = SESSION_TIMEOUT_S / 4
CARDS = ("tok_visa", "tok_visa", "tok_visa", "tok_declined", "tok_timeout")
CUSTOMERS = ("ann", "bob", "cyd")
#: Enough for most of a run's orders, not for all of them when they are big.
STOCK = {"dough": 14, "cheese": 20, "ham": 5}
SERVICES = ("orders", "kitchen", "payments", "delivery")
#: The steps of the chaotic part, and the rounds the settling may take.
STEPS = 150
SETTLE_ROUNDS = 200


class Crash(BaseException):
    """The process dies where it stands (kill -9): not an Exception, so no handler catches it
    and nothing after it runs; its transaction is rolled back by the database."""


@dataclass
class Member:
    """A consumer group's member in a service's process: its runner and its sqllog member."""

    node: str
    runner: ConsumerRunner
    consumer: SqlLogConsumer
    incarnation: int

    @property
    def group(self) -> str:
        return self.runner.group

    @property
    def name(self) -> str:
        return f"{self.group}#{self.incarnation}"


@dataclass
class Outcome:
    """What one seed did: the step log, digests of it and of the final state, and the first
    failure (None if every check held) with the step it happened at."""

    seed: int
    steps: list[str]
    state_digest: str
    failure: str | None = None
    failed_at: int | None = None
    orders: int = 0
    delivered: int = 0
    seconds: float = 0.0  # wall time, not part of what repeats

    @property
    def steps_digest(self) -> str:
        return hashlib.sha256("\n".join(self.steps).encode()).hexdigest()

    @property
    def ok(self) -> bool:
        return self.failure is None

    def report(self, *, last: int = 25) -> str:
        """The failure, the command that replays it, and the steps that led to it."""
        if self.ok:
            return f"seed {self.seed}: ok, {len(self.steps)} steps, {self.orders} orders ({self.delivered} delivered)"
        shown = self.steps[-last:] if last else self.steps
        return "\n".join(
            [
                f"seed {self.seed} FAILED at step {self.failed_at}: {self.failure}",
                f"replay it: CHAOS_SEED={self.seed} make chaos-replay"
                f"   (python -m tests.chaos.replay --seed {self.seed})",
                f"the {'last ' if len(shown) < len(self.steps) else ''}{len(shown)} steps:",
                *(f"  {line}" for line in shown),
            ]
        )


class _MortalUnitOfWork(UnitOfWork):
    """A consumer group's unit of work, whose commit the simulation may kill the process in."""

    def __init__(self, db: Database, *, source: str, sim: Simulation) -> None:
        super().__init__(db, source=source)
        self._sim = sim

    async def commit(self) -> None:
        self._sim.before_commit()
        await super().commit()


class Simulation(Services):
    """One seeded run of the saga over the sqllog (see the module's docstring)."""

    def __init__(self, root: Path, seed: int, *, steps: int = STEPS) -> None:
        super().__init__(root, clock=ManualClock(START))
        self.seed = seed
        self.steps = steps
        self.rng = random.Random(seed)
        self.id_rng = random.Random(f"ids:{seed}")
        self.log: list[str] = []
        self.stories: dict[uuid.UUID, saga_checks.Story] = {}
        self.names: dict[uuid.UUID, str] = {}  # order id → o1, o2… (the log does not show ids)
        self.brokers: dict[str, SqlLogBroker] = {}
        self.members: dict[str, Member] = {}
        self._commits_before_crash: int | None = None
        self._incarnations = 0

    # -- the seams the harness offers ----------------------------------------------------------

    def broker_for(self, service: str) -> Broker:
        broker = SqlLogBroker(
            f"sqlite:///{self.root}/log.db",
            session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
            clock=self.clock,
            background=False,
        )
        self.brokers[service] = broker
        return broker

    def unit_of_work(self, node: str) -> UnitOfWork:
        runtime = self.nodes[node].runtime
        return _MortalUnitOfWork(runtime.db, source=runtime.source, sim=self)

    def provider_breaker(self) -> CircuitBreaker:
        own = PaymentsSettings()
        return CircuitBreaker(
            "provider-sim",
            failure_threshold=own.breaker_failures,
            reset_timeout=own.breaker_reset_s,
            min_sources=own.breaker_customers,
            clock=self.clock.monotonic,
        )

    def before_commit(self) -> None:
        """Called by a consumer group's unit of work before it commits: die there, if due."""
        if self._commits_before_crash is None:
            return
        if self._commits_before_crash == 0:
            self._commits_before_crash = None
            raise Crash("killed in a handler's transaction")
        self._commits_before_crash -= 1

    # -- a run ---------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        began = time.monotonic()
        failure: str | None = None
        failed_at: int | None = None
        with self._controlled():
            try:
                await self._begin()
                for number in range(1, self.steps + 1):
                    await self._step(number)
                    await self._check(number)
                await self._settle()
                await saga_checks.check_final(self, self.stories)
            except Exception as error:  # a check that failed, or the code under test that broke
                failure, failed_at = _describe(error), len(self.log)
            try:
                digest = await self.state_digest()
                delivered = sum(o.status == "delivered" for o in await saga_checks.orders_of(self, self.stories))
            finally:
                await self._end()
        return Outcome(
            self.seed,
            self.log,
            digest,
            failure,
            failed_at,
            orders=len(self.stories),
            delivered=delivered,
            seconds=time.monotonic() - began,
        )

    @contextlib.contextmanager
    def _controlled(self) -> Iterator[None]:
        """The run's clock, ids and module-level randomness in place of the system's."""
        saved = random.getstate()
        random.seed(f"random:{self.seed}")
        source = ids.Uuid7Source(now_ns=lambda: int(self.clock.time() * 1e9), entropy=self.id_rng.randbytes)
        try:
            with clock.use(self.clock), ids.use(source):
                yield
        finally:
            random.setstate(saved)

    async def _begin(self) -> None:
        await self.start(MENU, RECIPES, STOCK)
        for broker in self.brokers.values():
            await broker.start()
        groups = [runner.group for node in self.nodes.values() for runner in node.runners]
        specs = topic_specs([*all_topics(), *(dlq_topic(g) for g in groups)], partitions=self.settings.topic_partitions)
        await self.brokers["orders"].create_topics(specs)
        for node in self.nodes.values():
            for runner in node.runners:
                self.members[runner.group] = await self._join(node.name, runner)

    async def _end(self) -> None:
        for member in self.members.values():
            with contextlib.suppress(Exception):
                await member.consumer.close()
        for broker in self.brokers.values():
            await broker.close()
        await self.close()

    async def _join(self, node: str, runner: ConsumerRunner) -> Member:
        self._incarnations += 1
        consumer = self.brokers[node].consumer(runner.group, runner.topics, client_id=node)
        assert isinstance(consumer, SqlLogConsumer)
        await consumer.start()
        runner.consumer = consumer
        return Member(node, runner, consumer, self._incarnations)

    def note(self, what: str) -> None:
        self.log.append(f"{len(self.log) + 1:04d} t+{self.clock.monotonic():6.1f}s {what}")

    async def _check(self, number: int) -> None:
        for check in saga_checks.ALWAYS:
            await check(self, self.stories)

    # -- the chaotic part ----------------------------------------------------------------------

    async def _step(self, number: int) -> None:
        rng = self.rng
        moves: list[tuple[float, Any]] = [
            (4.0, self._relay_step),
            (6.0, self._consume_step),
            (2.0, self._payments_step),
            (1.0, self._time_step),
            (0.5, self._heartbeat_step),
            (0.3, self._rebalance_step),
            (0.3, self._lose_answer_step),
        ]
        if len(self.stories) < 10:
            moves.append((2.0, self._place_step))
        if self.stories:
            moves += [(0.5, self._cancel_step), (1.5, self._kitchen_step), (1.5, self._courier_step)]
        weights = [w for w, _ in moves]
        [move] = rng.choices([m for _, m in moves], weights=weights)
        await move()

    async def _place_step(self) -> None:
        rng = self.rng
        card, customer = rng.choice(CARDS), rng.choice(CUSTOMERS)
        pizzas, calzones = rng.randint(0, 2), rng.randint(0, 1)
        lines = [RequestedLine(item, "medium", n) for item, n in ((PIZZA, pizzas or 1), (CALZONE, calzones)) if n]
        name = f"o{len(self.stories) + 1}"
        order_id = await self.place_order(card, lines, f"key-{name}", customer=customer)
        self.stories[order_id] = saga_checks.Story(card)
        self.names[order_id] = name
        self.note(f"place {name} by {customer} with {card}: {pizzas or 1} pizza, {calzones} calzone")

    def _pick_order(self) -> uuid.UUID:
        return self.rng.choice(list(self.stories))  # in the order placed, not by id

    async def _cancel_step(self) -> None:
        order_id = self._pick_order()
        accepted = await self.cancel_order(order_id)
        if accepted:
            self.stories[order_id].cancel_accepted = True
        self.note(f"cancel {self.names[order_id]}: {'accepted' if accepted else 'too late'}")

    async def _kitchen_step(self) -> None:
        order_id = self._pick_order()
        await self.kitchen_step(order_id)
        self.note(f"kitchen moves {self.names[order_id]}'s ticket")

    async def _courier_step(self) -> None:
        order_id = self._pick_order()
        await self.delivery_step(order_id)
        self.note(f"courier moves {self.names[order_id]}")

    async def _payments_step(self) -> None:
        assert self.charger is not None
        taken = await self.charger.step(self.now)
        self.note(f"charger pass: {taken} payment(s)")

    async def _lose_answer_step(self) -> None:
        self.provider.lose_answers += 1
        self.note("provider will lose the answer to its next charge")

    async def _time_step(self) -> None:
        seconds = self.rng.choices((0.5, 1.0, 2.0, 5.0, 12.0, 30.0), weights=(5, 5, 4, 2, 1, 0.5))[0]
        await self.elapse(seconds)
        self.note(f"{seconds:g}s pass")

    async def _heartbeat_step(self) -> None:
        member = self.members[self.rng.choice(sorted(self.members))]
        await member.consumer.heartbeat()
        self.note(f"{member.name} heartbeats: holds {len(member.consumer.assignment())} partition(s)")

    async def _rebalance_step(self) -> None:
        """A member leaves its group (a deploy) and a new one joins."""
        member = self.members[self.rng.choice(sorted(self.members))]
        await member.consumer.close()
        self.members[member.group] = await self._join(member.node, member.runner)
        self.note(f"{member.name} leaves; {self.members[member.group].name} joins")

    async def _relay_step(self) -> None:
        """A relay publishes: mostly one with something to publish."""
        rng = self.rng
        waiting = [node for node in SERVICES if (await self._relay_of(node).backlog())[0]]
        node = rng.choice(waiting if waiting and rng.random() < 0.85 else SERVICES)
        batch = rng.randint(1, 4)
        fate = rng.choices(("ok", "before", "after"), weights=(80, 8, 12))[0]
        sent = await self.relay(node, batch, fate)
        what = {"ok": "", "before": ", killed before publishing", "after": ", killed before marking them"}[fate]
        self.note(f"{node} relay: {sent} published (batch {batch}){what}")

    def _relay_of(self, node: str, batch: int = 500) -> OutboxRelay:
        runtime = self.nodes[node].runtime
        return OutboxRelay(runtime.db, runtime.broker, batch_size=batch)

    async def relay(self, node: str, batch: int, fate: str = "ok") -> int:
        """One batch of `node`'s outbox relay (a fresh one each time: a relay keeps nothing
        between batches); `fate` "before": the process dies before it publishes, "after":
        once the log has the batch and before the rows are marked. How many reached the log."""
        relay = self._relay_of(node, batch)
        point = {"before": "relay.before_publish", "after": "relay.after_publish"}.get(fate)
        if point is None:
            return await relay.publish_pending()
        logged = await self._log_size()
        failpoints.hold(point, on=True)
        try:
            await relay.publish_pending()
        except failpoints.FailpointError:
            pass
        finally:
            failpoints.hold(point, on=False)
        return await self._log_size() - logged

    async def _log_size(self) -> int:
        async with self.brokers["orders"].database.read() as conn:
            return int(
                (await conn.execute(sa.text("SELECT coalesce(sum(next_offset), 0) FROM log_partitions"))).scalar_one()
            )

    async def _consume_step(self) -> None:
        """A group's member fetches: mostly one of a group with records to read."""
        rng = self.rng
        groups = sorted(self.members)
        behind = [g for g in groups if any((await self.members[g].consumer.group_lag()).values())]
        member = self.members[rng.choice(behind if behind and rng.random() < 0.85 else groups)]
        take = rng.randint(1, 5)
        fate = rng.choices(("commit", "in handler", "before offsets"), weights=(80, 10, 10))[0]
        await self.consume(member, take, fate)

    async def consume(self, member: Member, take: int, fate: str = "commit") -> int:
        """One fetch of up to `take` records by `member`, handled by its runner; then, by
        `fate`: its offsets committed, or the process killed in a handler's transaction, or
        after handling and before committing the offsets. A killed member is replaced."""
        records = await member.consumer.fetch(take, timeout=0)
        if not records:
            self.note(f"{member.name} fetches up to {take}: nothing")
            return 0
        fetched = f"{member.name} fetches {_spans(records)}"
        if fate == "in handler":
            self._commits_before_crash = self.rng.randint(0, len(records) - 1)
        tasks_before = asyncio.all_tasks()
        try:
            offsets = await member.runner.process_batch(records)
        except Crash:
            await _kill_tasks_since(tasks_before)
            await self._replace(member, f"{fetched}, killed in a handler's transaction")
            return len(records)
        finally:
            self._commits_before_crash = None
        if fate == "before offsets":
            await self._replace(member, f"{fetched}, handled, killed before committing the offsets")
            return len(records)
        await member.consumer.commit(offsets)
        self.note(f"{fetched}, handled, offsets committed")
        return len(records)

    async def _replace(self, dead: Member, what: str) -> None:
        """`dead` is gone without leaving its group (its leases run out in their time); the
        service's supervisor starts it again, and a new member joins."""
        self.members[dead.group] = await self._join(dead.node, dead.runner)
        self.note(f"{what}; {self.members[dead.group].name} joins")

    async def elapse(self, seconds: float) -> None:
        """Time passes: every live member heartbeats as often as its task would, then the saga
        deadlines that passed are acted on."""
        left = seconds
        while left > 0:
            tick = min(left, HEARTBEAT_EVERY_S)
            self.clock.advance(tick)
            left -= tick
            for group in sorted(self.members):
                await self.members[group].consumer.heartbeat()
        await self.expire_sagas()

    # -- the settling --------------------------------------------------------------------------

    async def _settle(self) -> None:
        """No more faults: every relay, member, the charger, the kitchen and the couriers work
        until everything is final and every message consumed, time passing between rounds."""
        self.note("-- no more faults: settling --")
        for _ in range(SETTLE_ROUNDS):
            for node in SERVICES:
                while await self.relay(node, 50):
                    pass
            for group in sorted(self.members):
                while await self.consume(self.members[group], 50):
                    pass
            await self._payments_step()
            for order_id in self.stories:
                await self.kitchen_step(order_id)
                await self.delivery_step(order_id)
            await self._check(len(self.log))
            if await self.all_final() and await self._drained():
                self.note("settled")
                return
            await self.elapse(5.0)
            self.note("5s pass")
        raise AssertionError(f"the system did not settle in {SETTLE_ROUNDS} rounds")

    async def _drained(self) -> bool:
        """Nothing left in any outbox, nothing unconsumed in the log."""
        for node in self.nodes.values():
            count, _ = await self._relay_of(node.name).backlog()
            if count:
                return False
        for member in self.members.values():
            if any((await member.consumer.group_lag()).values()):
                return False
        return True

    # -- the state at the end ------------------------------------------------------------------

    async def state_digest(self) -> str:
        """sha256 of every row of every table of every database (the log's too), in a fixed
        order, and of the provider's ledger."""
        hasher = hashlib.sha256()
        databases = [(name, node.db) for name, node in sorted(self.nodes.items())]
        log = next(iter(self.brokers.values())).db
        if log is not None:
            databases.append(("log", log))
        for name, db in databases:
            async with db.read() as conn:
                tables = (
                    await conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"))
                ).scalars()
                for table in list(tables):
                    rows = (await conn.execute(sa.text(f'SELECT * FROM "{table}"'))).all()
                    hasher.update(f"{name}.{table}\n".encode())
                    for line in sorted(repr(tuple(row)) for row in rows):
                        hasher.update(line.encode() + b"\n")
        hasher.update(orjson.dumps([self.provider.charges, self.provider.refunds], option=orjson.OPT_SORT_KEYS))
        return hasher.hexdigest()


def _describe(error: Exception) -> str:
    text = str(error).strip()
    if isinstance(error, AssertionError):
        return text.splitlines()[0] if text else "assertion failed"
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _spans(records: Sequence[Record]) -> str:
    """The records as topic/partition@first-last, in the order fetched."""
    spans: dict[tuple[str, int], list[int]] = {}
    for record in records:
        spans.setdefault((record.topic, record.partition), []).append(record.offset)
    return ", ".join(
        f"{topic}/{partition}@{offsets[0]}" + (f"-{offsets[-1]}" if len(offsets) > 1 else "")
        for (topic, partition), offsets in spans.items()
    )


async def _kill_tasks_since(before: set[asyncio.Task[Any]]) -> None:
    """A killed process's other work dies with it: cancel the tasks started since `before` (a
    runner handles partitions concurrently) and wait until they are gone."""
    current = asyncio.current_task()
    orphans = [t for t in asyncio.all_tasks() if t not in before and t is not current]
    for task in orphans:
        task.cancel()
    await asyncio.gather(*orphans, return_exceptions=True)


class ForgetfulKitchen(Simulation):
    """A deliberate bug, to show the simulation finds one: the kitchen's group without its
    inbox, and a reserve that forgets to look for what the order already holds, so a command
    delivered twice holds the stock twice."""

    def handlers(self) -> list[tuple[str, str, HandlerRegistry]]:
        found = super().handlers()
        return [(n, g, _forgetful_kitchen() if g == "kitchen" else r) for n, g, r in found]


def _forgetful_kitchen() -> HandlerRegistry:
    registry = kitchen.build_handlers()
    registry.inbox = False

    @registry.on(ReserveIngredients)
    async def reserve_again(command: ReserveIngredients, _: Envelope, uow: UnitOfWork) -> None:
        recipes = await kitchen_repo.recipes_for_run(uow, [ln.menu_item_id for ln in command.lines])
        need = needs([Line(ln.menu_item_id, ln.quantity) for ln in command.lines], recipes)
        stock = await kitchen_repo.levels(uow)
        if shortages(need, {name: level.on_hand for name, level in stock.items()}):
            return  # (the real one answers IngredientsUnavailable; the saga's deadline does here)
        await kitchen_repo.hold(uow, command.order_id, need, clock.utcnow())
        uow.emit(
            IngredientsReserved(
                order_id=command.order_id,
                reserved=[IngredientAmount(ingredient=i, quantity=q) for i, q in sorted(need.items())],
            )
        )

    return registry


#: The deliberate bugs `python -m tests.chaos.replay --fault NAME` runs with.
FAULTS: dict[str, type[Simulation]] = {"forgetful-kitchen": ForgetfulKitchen}


async def simulate(seed: int, workdir: Path, *, steps: int = STEPS, kind: type[Simulation] = Simulation) -> Outcome:
    """Run one seed in a directory of its own under `workdir`."""
    root = workdir / f"seed-{seed}"
    root.mkdir(parents=True, exist_ok=False)
    return await kind(root, seed, steps=steps).run()
