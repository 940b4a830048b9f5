"""A fault-injection harness: the real services' handlers, each on its own SQLite database,
wired by a bus the test controls. The bus takes what each service's outbox holds and delivers
it to the subscribed consumer groups through the real consumer runner (inbox included), in
any order the broker could produce — a key's messages stay in order on their topic, different
keys and topics interleave freely — and on demand it duplicates, redelivers old messages (a
consumer that crashed before committing its offset), and "kills the relay mid-batch" (rows
published but not marked, so they go out again). Time is the test's to move.

`Services` is the part without the bus (the nodes, the provider, the saga, the world's moves),
shared with the deterministic simulation over the embedded broker (tests/chaos/simulation.py);
`Cluster` adds the in-memory bus."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import orjson
import sqlalchemy as sa

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.db import Database
from pizzeria.kit.resilience import CircuitBreaker
from pizzeria.kit.settings import Settings
from pizzeria.messaging.broker import Broker, Record
from pizzeria.messaging.consumer import ConsumerRunner, HandlerRegistry, RetryPolicy
from pizzeria.messaging.saga import SagaEngine
from pizzeria.messaging.tables import metadata as messaging_metadata
from pizzeria.messaging.tables import outbox
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.delivery import handlers as delivery
from pizzeria.services.delivery.tables import deliveries
from pizzeria.services.delivery.tables import metadata as delivery_metadata
from pizzeria.services.kitchen import handlers as kitchen
from pizzeria.services.kitchen import repository as kitchen_repo
from pizzeria.services.kitchen.tables import metadata as kitchen_metadata
from pizzeria.services.kitchen.tables import tickets
from pizzeria.services.orders import handlers as orders
from pizzeria.services.orders import projection
from pizzeria.services.orders import repository as orders_repo
from pizzeria.services.orders.domain import MenuEntry, RequestedLine
from pizzeria.services.orders.saga import place_order_saga
from pizzeria.services.orders.settings import OrdersSettings
from pizzeria.services.orders.tables import metadata as orders_metadata
from pizzeria.services.payments import handlers as payments
from pizzeria.services.payments.charger import Charger
from pizzeria.services.payments.provider import ProviderClient
from pizzeria.services.payments.tables import metadata as payments_metadata
from tests.fakes import InMemoryBroker, ManualClock

#: The shop the harnesses run: two items, and stock that runs out after a few orders.
PIZZA = UUID("00000000-0000-7000-8000-00000000000a")
CALZONE = UUID("00000000-0000-7000-8000-00000000000b")
MENU = [
    MenuEntry(PIZZA, "Pizza", "EUR", {"medium": 1000}, True, 1),
    MenuEntry(CALZONE, "Calzone", "EUR", {"medium": 1200}, True, 1),
]
RECIPES = {PIZZA: {"dough": 1, "cheese": 2}, CALZONE: {"dough": 1, "ham": 1}}
STOCK = {"dough": 6, "cheese": 8, "ham": 3}

FAST_RETRIES = RetryPolicy(max_attempts=2, initial_backoff=0.0, max_backoff=0.0)


@dataclass
class Node:
    """One service: its database, its runtime, and its consumer groups."""

    name: str
    runtime: ServiceRuntime
    runners: list[ConsumerRunner] = field(default_factory=list)

    @property
    def db(self) -> Database:
        return self.runtime.db

    def consume(self, group: str, handlers: HandlerRegistry, uow_factory: Callable[[], UnitOfWork]) -> None:
        self.runners.append(
            ConsumerRunner(
                group=group,
                handlers=handlers,
                broker=self.runtime.broker,
                uow_factory=uow_factory,
                dead_letters=self.runtime.dead_letters,
                retry=FAST_RETRIES,
            )
        )


class Provider:
    """The card provider as an httpx transport: charges and refunds by idempotency key, in
    memory; `tok_timeout` never answers (the client times out)."""

    def __init__(self) -> None:
        self.charges: dict[str, dict[str, Any]] = {}  # idempotency key → charge
        self.refunds: dict[str, dict[str, Any]] = {}  # idempotency key → refund
        self.lose_answers = 0  # the next N charges go through, but their answer never arrives

    def handle(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key", "")
        if request.method == "GET":
            wanted = request.url.params.get("idempotency_key")
            return httpx.Response(200, json={"items": [c for k, c in self.charges.items() if k == wanted]})
        body = orjson.loads(request.content)
        if request.url.path == "/v1/charges":
            if body["source"] == "tok_timeout":
                raise httpx.ReadTimeout("no answer", request=request)
            charge = self.charges.setdefault(
                key,
                {
                    "id": f"ch_{len(self.charges)}",
                    "order_id": body["metadata"]["order_id"],
                    "status": "declined" if body["source"] == "tok_declined" else "succeeded",
                    "amount": body["amount"],
                },
            )
            if charge["status"] == "declined":
                return httpx.Response(402, json={"error": {"code": "card_declined", "message": "declined"}})
            if self.lose_answers > 0:
                self.lose_answers -= 1
                raise httpx.ReadTimeout("charged, but the answer was lost", request=request)
            return httpx.Response(201, json=charge)
        charge = next((c for c in self.charges.values() if c["id"] == body["charge"]), None)
        if charge is None or charge["status"] != "succeeded":
            return httpx.Response(404, json={"error": {"code": "no_such_charge", "message": "none"}})
        refund = self.refunds.setdefault(
            key, {"id": f"re_{len(self.refunds)}", "charge": charge["id"], "amount": body["amount"]}
        )
        return httpx.Response(201, json=refund)

    def succeeded(self, order_id: str) -> list[dict[str, Any]]:
        return [c for c in self.charges.values() if c["order_id"] == order_id and c["status"] == "succeeded"]

    def refunds_of(self, charge_id: str) -> list[dict[str, Any]]:
        return [r for r in self.refunds.values() if r["charge"] == charge_id]


class Services:
    """orders, kitchen, payments and delivery, each on its own database, with the card provider
    and the order saga; how messages go from one to another is the subclass's (`changed` is
    called after each move of the world)."""

    def __init__(self, root: Path, *, clock: ManualClock | None = None) -> None:
        self.root = root
        self.clock = clock or ManualClock(datetime.now(UTC))
        self.settings = Settings(PIZZERIA_VAR_DIR=str(root))  # type: ignore[call-arg]
        saga_settings = OrdersSettings(
            SAGA_PAYMENT_TIMEOUT_S="20",
            SAGA_RESERVE_TIMEOUT_S="30",  # type: ignore[call-arg]
            SAGA_COMPENSATION_TIMEOUT_S="30",
        )
        self.provider = Provider()
        self.nodes: dict[str, Node] = {}
        self.engine = SagaEngine(
            place_order_saga(saga_settings), listener=orders.on_saga_transition, clock=self.clock.now
        )
        self.charger: Charger | None = None
        self.order_ids: list[UUID] = []

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def broker_for(self, service: str) -> Broker:
        """The broker a service's runtime is given (the relay publishes to it)."""
        return InMemoryBroker()

    def unit_of_work(self, node: str) -> UnitOfWork:
        """A unit of work of `node`'s, as its consumer groups get them."""
        return self.nodes[node].runtime.uow()

    def handlers(self) -> list[tuple[str, str, HandlerRegistry]]:
        """(node, consumer group, handlers) of every group."""
        return [
            ("orders", "orders", orders.build_handlers(self.engine)),
            ("orders", "orders-projection-g1", projection.build_projector(1)),
            ("kitchen", "kitchen", kitchen.build_handlers()),
            ("payments", "payments", payments.build_handlers(lambda: None)),
            ("delivery", "delivery", delivery.build_handlers(lambda: None)),
        ]

    def provider_breaker(self) -> CircuitBreaker:
        return CircuitBreaker("provider-test", failure_threshold=10_000)

    async def changed(self) -> None:
        """Called after each move of the world (a subclass's bus collects the outboxes)."""

    async def start(self, menu: list[MenuEntry], recipes: dict[UUID, dict[str, int]], stock: dict[str, int]) -> None:
        for name, tables in (
            ("orders", orders_metadata),
            ("kitchen", kitchen_metadata),
            ("payments", payments_metadata),
            ("delivery", delivery_metadata),
        ):
            db = Database(f"sqlite:///{self.root}/{name}.db", pool_size=2)
            async with db.transaction() as conn:
                await conn.run_sync(messaging_metadata.create_all)
                await conn.run_sync(tables.create_all)
            runtime = ServiceRuntime(service=name, settings=self.settings, db=db, broker=self.broker_for(name))
            self.nodes[name] = Node(name, runtime)
        for node, group, registry in self.handlers():
            self.nodes[node].consume(group, registry, partial(self.unit_of_work, node))
        client = ProviderClient(
            "http://provider",
            timeout=1.0,
            transport=httpx.MockTransport(self.provider.handle),
            breaker=self.provider_breaker(),
        )
        self.charger = Charger(self.nodes["payments"].runtime, client, concurrency=8, max_attempts=3, call_timeout=1.0)
        async with self.nodes["orders"].db.transaction() as conn:
            for entry in menu:
                await orders_repo.apply_menu_entry(conn, entry)
        async with self.nodes["kitchen"].db.transaction() as conn:
            for item_id, recipe in recipes.items():
                await kitchen_repo.apply_recipe(conn, item_id, "item", recipe, 1)
            for ingredient, amount in stock.items():
                await kitchen_repo.set_on_hand(conn, ingredient, amount, self.now)
        await delivery.seed_couriers(self.nodes["delivery"].runtime.uow())

    async def close(self) -> None:
        if self.charger is not None:
            await self.charger.client.close()
        for node in self.nodes.values():
            await node.db.dispose()

    # -- the world -----------------------------------------------------------------------------

    async def place_order(
        self, card: str, lines: list[RequestedLine], idempotency_key: str, *, customer: str = "c"
    ) -> UUID:
        """A customer places an order through the orders service's use case."""
        command = orders.PlaceOrder(
            customer_id=customer,
            idempotency_key=idempotency_key,
            request_hash="h",
            lines=lines,
            payment_token=card,
            delivery_address="1 St",
            email="c@example.com",
            phone=None,
        )
        # Alone (a set of one), not through the group commit: the cluster takes one step at a
        # time, so no two placements would ever share a set.
        order, _ = await orders.place_order(command, self.nodes["orders"].runtime.uow(), self.engine)
        self.order_ids.append(order.id)
        await self.changed()
        return order.id

    async def cancel_order(self, order_id: UUID) -> bool:
        """The customer asks to cancel; False if it is too late."""
        try:
            await orders.cancel_order(order_id, None, self.nodes["orders"].runtime.uow(), self.engine)
        except orders.TooLateToCancel:
            return False
        finally:
            await self.changed()
        return True

    async def pass_time(self, seconds: float) -> None:
        """Move the clock; deadlines that pass compensate or send again; payments due retry."""
        self.clock.advance(seconds)
        await self.expire_sagas()
        await self.changed()

    async def expire_sagas(self) -> None:
        """Act on every saga whose deadline passed."""
        orders_node = self.nodes["orders"]
        async with orders_node.db.read() as conn:
            due = await SagaEngine.due(conn, self.now)
        for saga_id in due:
            async with orders_node.runtime.uow() as uow:
                await self.engine.expire(uow, saga_id)
                await uow.commit()

    async def work_payments(self, now: datetime | None = None) -> None:
        """One pass of the charger over what is due at `now` (by default a minute from the
        later of the harness's clock and the system's, since handlers read the latter)."""
        assert self.charger is not None
        await self.charger.step(now or max(self.now, datetime.now(UTC)) + timedelta(minutes=1))
        await self.changed()

    async def kitchen_step(self, order_id: UUID) -> None:
        async with self.nodes["kitchen"].db.read() as conn:
            ticket = (await conn.execute(sa.select(tickets).where(tickets.c.order_id == order_id))).first()
        if ticket is not None and ticket.status in ("queued", "preparing", "baking"):
            await kitchen.advance_ticket(self.nodes["kitchen"].runtime.uow(), ticket.id)
            await self.changed()

    async def delivery_step(self, order_id: UUID) -> None:
        async with self.nodes["delivery"].db.read() as conn:
            found = (await conn.execute(sa.select(deliveries).where(deliveries.c.order_id == order_id))).first()
        if found is not None:
            if found.status == "waiting":
                await delivery.assign_waiting(self.nodes["delivery"].runtime.uow())
            elif found.status in ("assigned", "out_for_delivery"):
                await delivery.advance(self.nodes["delivery"].runtime.uow(), found.id)
            await self.changed()

    async def all_final(self) -> bool:
        async with self.nodes["orders"].db.read() as conn:
            rows = (await conn.execute(sa.text("SELECT state FROM sagas"))).all()
        return all(r.state in ("completed", "compensated") for r in rows)


class Cluster(Services):
    """orders, kitchen, payments and delivery, wired by a controllable bus."""

    def __init__(self, root: Path, *, clock: ManualClock | None = None) -> None:
        super().__init__(root, clock=clock)
        self.pending: list[Record] = []  # published, not yet delivered
        self.delivered: list[Record] = []  # delivered at least once (redelivery candidates)
        self._offset = 0

    async def changed(self) -> None:
        await self.collect()

    # -- the bus -------------------------------------------------------------------------------

    async def collect(self, *, crash_before_marking: bool = False) -> int:
        """What each relay would publish now. With `crash_before_marking` the rows reach the bus
        but stay unmarked, so the next collection publishes them again (a relay killed between
        the broker's acknowledgement and its own commit)."""
        found = 0
        for node in self.nodes.values():
            async with node.db.read() as conn:
                rows = (
                    await conn.execute(sa.select(outbox).where(outbox.c.published_at.is_(None)).order_by(outbox.c.seq))
                ).all()
            for row in rows:
                self._offset += 1
                self.pending.append(
                    Record(
                        topic=row.topic,
                        partition=0,
                        offset=self._offset,
                        value=row.payload,
                        key=row.key,
                        headers=orjson.loads(row.headers),
                        timestamp_ms=0,
                    )
                )
            if rows and not crash_before_marking:
                async with node.db.transaction() as conn:
                    await conn.execute(
                        outbox.update().where(outbox.c.seq.in_([r.seq for r in rows])).values(published_at=self.now)
                    )
            found += len(rows)
        return found

    def deliverable(self) -> list[int]:
        """Pending records a broker could hand out next: the first of each (topic, key)."""
        seen: set[tuple[str, str | None]] = set()
        out = []
        for i, record in enumerate(self.pending):
            if (record.topic, record.key) not in seen:
                out.append(i)
                seen.add((record.topic, record.key))
        return out

    async def deliver(self, index: int) -> None:
        record = self.pending.pop(index)
        await self._process(record)
        self.delivered.append(record)
        await self.collect()

    async def redeliver(self, index: int) -> None:
        """Deliver an old record again, as after a consumer crash before its offset commit."""
        await self._process(self.delivered[index])
        await self.collect()

    async def _process(self, record: Record) -> None:
        for node in self.nodes.values():
            for runner in node.runners:
                if record.topic in runner.topics:
                    await runner.process(record)

    async def settle_everything(self, *, rounds: int = 400) -> None:
        """Run the world until nothing moves: every message delivered, every payment worked,
        every ticket and delivery moved on, every deadline passed."""
        for _ in range(rounds):
            await self.collect()
            while self.pending:
                await self.deliver(self.deliverable()[0])
            await self.work_payments()
            for order_id in self.order_ids:
                await self.kitchen_step(order_id)
                await self.delivery_step(order_id)
            if not self.pending and await self.all_final():
                return
            await self.pass_time(60)
        raise AssertionError("the system did not settle")
