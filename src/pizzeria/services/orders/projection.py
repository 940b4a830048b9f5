"""The order read model (CQRS): what customers and staff read about orders, kept by consuming
the facts of every context, and rebuildable from them without downtime.

The views live in generations. The active generation answers reads while its projector keeps
it current; `pizzeria projections rebuild orders` asks for a new generation, which a second
projector fills from the first event on (a consumer group of its own), and once it has caught
up the service switches reads to it and drops the old one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.contracts.delivery import CourierAssigned
from pizzeria.contracts.orders import (
    OrderCancellationRefused,
    OrderCancellationRequested,
    OrderPlaced,
    OrderStatusChanged,
)
from pizzeria.contracts.payments import PaymentCompleted, PaymentFailed, PaymentRefunded, PaymentVoided
from pizzeria.kit.cache import Cache
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.logging import get_logger
from pizzeria.kit.loops import BackgroundLoop
from pizzeria.messaging.consumer import ConsumerRunner, HandlerRegistry
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.topics import dlq_topic
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.orders.domain import PAYMENT_NEXT, PaymentStatus, Status
from pizzeria.services.orders.tables import order_views, projections

log = get_logger(__name__)

NAME = "orders"
BASE_GROUP = "orders-projection"

_VIEW = sa.select(order_views).where(order_views.c.generation == sa.bindparam("g"),
                                     order_views.c.id == sa.bindparam("order_id"))
_VIEW_FOR_UPDATE = _VIEW.with_for_update()
_INSERT = order_views.insert()
_UPDATE = order_views.update().where(order_views.c.generation == sa.bindparam("g"),
                                     order_views.c.id == sa.bindparam("order_id"))
_STATE = sa.select(projections).where(projections.c.name == sa.bindparam("name"))
_PAYMENT: dict[type[Message], PaymentStatus] = {
    PaymentCompleted: PaymentStatus.COMPLETED, PaymentFailed: PaymentStatus.FAILED,
    PaymentRefunded: PaymentStatus.REFUNDED, PaymentVoided: PaymentStatus.FAILED,
}
_COLUMNS = [c.name for c in order_views.c if c.name not in ("generation", "id")]


def _latest(current: Any, at: datetime) -> datetime:
    return at if current is None or as_utc(current) < at else as_utc(current)


def view_key(generation: int, order_id: UUID) -> str:
    """Where one order's view is cached (a new generation starts with nothing cached)."""
    return f"order:{generation}:{order_id}"


async def _invalidate(cache: Cache | None, uow: UnitOfWork, key: str) -> None:
    """Invalidate a cached view before the change (covering it) and once it has committed."""
    if cache is not None:
        await cache.invalidate(key)
        uow.after_commit(lambda: cache.invalidate(key))


def _announce(on_change: Callable[[UUID], None] | None, uow: UnitOfWork, order_id: UUID) -> None:
    if on_change is not None:
        uow.after_commit(lambda: on_change(order_id))


def build_projector(generation: int, cache: Cache | None = None,
                    on_change: Callable[[UUID], None] | None = None) -> HandlerRegistry:
    """The handlers that keep generation `generation` of the views (and the cache of them);
    `on_change` hears of every order whose view changed, once the change has committed."""
    registry = HandlerRegistry()

    async def change(uow: UnitOfWork, order_id: UUID, at: datetime, apply: Any) -> None:
        await _invalidate(cache, uow, view_key(generation, order_id))
        _announce(on_change, uow, order_id)
        row = (await uow.conn.execute(_VIEW_FOR_UPDATE, {"g": generation, "order_id": order_id})).first()
        view: dict[str, Any] = (
            {c: getattr(row, c) for c in _COLUMNS} if row is not None
            else dict.fromkeys(_COLUMNS) | {"history": [], "cancel_requested": False}
        )
        view["history"] = list(view["history"])
        apply(view)
        view["updated_at"] = _latest(view["updated_at"], at)
        if row is None:
            await uow.conn.execute(_INSERT, {"generation": generation, "id": order_id, **view})
        else:
            await uow.conn.execute(_UPDATE, {"g": generation, "order_id": order_id, **view})

    @registry.on(OrderPlaced)
    async def placed(event: OrderPlaced, _: Envelope, uow: UnitOfWork) -> None:
        def apply(view: dict[str, Any]) -> None:
            view.update(customer_id=event.customer_id, total=event.total, currency=event.currency,
                        delivery_address=event.delivery_address, created_at=event.placed_at,
                        items=[i.model_dump(mode="json") for i in event.items])
            view["status"] = view["status"] or Status.PENDING.value
            if not any(h["status"] == Status.PENDING for h in view["history"]):
                view["history"].insert(0, {"status": Status.PENDING.value, "at": event.placed_at.isoformat()})
            view["payment_status"] = view["payment_status"] or PaymentStatus.PENDING.value

        await change(uow, event.order_id, event.placed_at, apply)

    @registry.on(OrderStatusChanged)
    async def status_changed(event: OrderStatusChanged, _: Envelope, uow: UnitOfWork) -> None:
        def apply(view: dict[str, Any]) -> None:
            entry = {"status": event.status, "at": event.at.isoformat()}
            if entry not in view["history"]:
                view["history"].append(entry)
            view["status"] = event.status
            if event.status == Status.CANCELLED:
                view["cancel_reason"], view["cancel_requested"] = event.reason, False

        await change(uow, event.order_id, event.at, apply)

    @registry.on(OrderCancellationRequested)
    @registry.on(OrderCancellationRefused)
    async def cancellation(event: OrderCancellationRequested, _: Envelope, uow: UnitOfWork) -> None:
        requested = isinstance(event, OrderCancellationRequested)

        def apply(view: dict[str, Any]) -> None:
            if view["status"] != Status.CANCELLED:
                view["cancel_requested"] = requested

        await change(uow, event.order_id, event.at, apply)

    async def payment(event: Message, _: Envelope, uow: UnitOfWork) -> None:
        status = _PAYMENT[type(event)]

        def apply(view: dict[str, Any]) -> None:
            current = PaymentStatus(view["payment_status"] or PaymentStatus.PENDING.value)
            if status in PAYMENT_NEXT[current]:
                view["payment_status"] = status.value

        await change(uow, event.order_id, getattr(event, "at", utcnow()), apply)  # type: ignore[attr-defined]

    for kind in _PAYMENT:
        registry.add(kind, payment)

    @registry.on(CourierAssigned)
    async def courier(event: CourierAssigned, env: Envelope, uow: UnitOfWork) -> None:
        def apply(view: dict[str, Any]) -> None:
            view["courier_name"] = event.courier_name

        await change(uow, event.order_id, env.time, apply)

    return registry


# -- reading ---------------------------------------------------------------------------------------

async def active_generation(conn: AsyncConnection) -> int:
    row = (await conn.execute(_STATE, {"name": NAME})).first()
    return int(row.active_generation) if row is not None else 1


async def view_of(conn: AsyncConnection, generation: int, order_id: UUID) -> Any:
    row = (await conn.execute(_VIEW, {"g": generation, "order_id": order_id})).first()
    return row if row is not None and row.customer_id is not None else None


async def views(conn: AsyncConnection, generation: int, *, customer_id: str | None, status: Status | None,
                limit: int, before: UUID | None) -> list[Any]:
    query = (sa.select(order_views)
             .where(order_views.c.generation == generation, order_views.c.customer_id.is_not(None))
             .order_by(order_views.c.id.desc()).limit(limit))
    if customer_id is not None:
        query = query.where(order_views.c.customer_id == customer_id)
    if status is not None:
        query = query.where(order_views.c.status == status.value)
    if before is not None:
        query = query.where(order_views.c.id < before)
    return list(await conn.execute(query))


async def request_rebuild(conn: AsyncConnection) -> int | None:
    """Ask the orders service to rebuild the views; the generation it will build, or None if
    a rebuild is already under way."""
    row = (await conn.execute(_STATE.with_for_update(), {"name": NAME})).first()
    if row is None:
        await conn.execute(projections.insert().values(name=NAME, active_generation=1, building_generation=2,
                                                       requested_at=utcnow()))
        return 2
    if row.building_generation is not None:
        return None
    building = int(row.active_generation) + 1
    await conn.execute(projections.update().where(projections.c.name == NAME)
                       .values(building_generation=building, requested_at=utcnow()))
    return building


async def status(conn: AsyncConnection) -> dict[str, Any]:
    row = (await conn.execute(_STATE, {"name": NAME})).first()
    counts = await conn.execute(sa.select(order_views.c.generation, sa.func.count())
                                .group_by(order_views.c.generation))
    return {
        "active_generation": row.active_generation if row else 1,
        "building_generation": row.building_generation if row else None,
        "switched_at": row.switched_at if row else None,
        "rows": {int(g): int(n) for g, n in counts.all()},
    }


# -- running -----------------------------------------------------------------------------------------

class ProjectionManager:
    """Runs the active generation's projector, and a rebuild when one is asked for."""

    def __init__(self, runtime: ServiceRuntime, topics: tuple[str, ...],
                 cache: Cache | None = None, on_change: Callable[[UUID], None] | None = None) -> None:
        self.runtime = runtime
        self.topics = topics
        self.cache = cache
        self.on_change = on_change
        self.active: tuple[int, ConsumerRunner] | None = None
        self.building: tuple[int, ConsumerRunner] | None = None
        self._cache: tuple[float, int] = (0.0, 1)

    def _runner(self, generation: int) -> ConsumerRunner:
        projector = build_projector(generation, self.cache, self.on_change)
        return self.runtime.launch(f"{BASE_GROUP}-g{generation}", projector, topics=self.topics,
                                   dead_letter_topic=dlq_topic(BASE_GROUP))

    async def generation(self, conn: AsyncConnection) -> int:
        """The generation reads use (read at most once a second)."""
        at, generation = self._cache
        if time.monotonic() - at > 1.0:
            generation = await active_generation(conn)
            self._cache = (time.monotonic(), generation)
        return generation

    async def run(self) -> None:
        async with self.runtime.db.transaction() as conn:
            if (await conn.execute(_STATE, {"name": NAME})).first() is None:
                await conn.execute(projections.insert().values(name=NAME, active_generation=1))
        try:
            await BackgroundLoop("projections", self._tend, interval=1.0).run()
        finally:
            for _, runner in filter(None, (self.active, self.building)):
                await self.runtime.halt(runner)

    async def _tend(self) -> None:
        async with self.runtime.db.read() as conn:
            row = (await conn.execute(_STATE, {"name": NAME})).first()
        if row is None:
            return
        active, building = int(row.active_generation), row.building_generation
        if self.active is None or self.active[0] != active:
            if self.active is not None:
                await self.runtime.halt(self.active[1])
            self.active = (active, self._runner(active))
        if building is None:
            return
        if self.building is None:
            log.info("rebuilding the order views", generation=building)
            self.building = (building, self._runner(building))
            return
        if await self._caught_up(self.building[1]):
            await self._switch(active, building)

    async def _caught_up(self, runner: ConsumerRunner) -> bool:
        consumer = runner.consumer
        if consumer is None or not runner.healthy or not consumer.assignment():
            return False
        return all(lag == 0 for lag in (await consumer.lag()).values())

    async def _switch(self, old: int, new: int) -> None:
        async with self.runtime.db.transaction() as conn:
            await conn.execute(projections.update().where(projections.c.name == NAME).values(
                active_generation=new, building_generation=None, switched_at=utcnow()))
        assert self.building is not None
        previous, self.active, self.building = self.active, self.building, None
        self._cache = (0.0, new)
        if previous is not None:
            await self.runtime.halt(previous[1])
        log.info("order views switched to the rebuilt generation", generation=new)
        with contextlib.suppress(Exception):
            async with self.runtime.db.transaction() as conn:
                await conn.execute(order_views.delete().where(order_views.c.generation == old))
