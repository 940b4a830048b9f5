"""The order read model (CQRS): what customers and staff read about orders, kept by consuming
the facts of every context, and rebuildable from them without downtime.

The views live in generations. The active generation answers reads while its projector keeps
it current; `pizzeria projections rebuild orders` asks for a new generation, which a second
projector fills from the first event on (a consumer group of its own), and once it has caught
up the service switches reads to it and drops the old one.

Every replica of orders runs both projectors, each a member of its generation's group, so each
replica owns a share of the partitions. The rebuilt generation has caught up when its group as a
whole has (its committed offsets at the end of every partition, whoever owns them), not when one
replica's share has; one replica switches (the switch is conditional on the rebuild still being
the one under way), the others follow at their next look, and the old generation is dropped
only `DROP_AFTER_S` after the switch, once every replica reads the new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
from pizzeria.contracts.topology import generation_group
from pizzeria.kit.cache import Cache
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.db import one_of
from pizzeria.kit.logging import get_logger
from pizzeria.kit.loops import BackgroundLoop
from pizzeria.kit.statements import fetch_rows
from pizzeria.kit.upsert import insert_ignore, insert_rows, update_rows
from pizzeria.messaging.consumer import ConsumerRunner, HandlerRegistry, Incoming
from pizzeria.messaging.message import Message
from pizzeria.messaging.topics import dlq_topic
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.orders.domain import PAYMENT_NEXT, PaymentStatus, Status
from pizzeria.services.orders.tables import order_views, projections

log = get_logger(__name__)

NAME = "orders"
BASE_GROUP = "orders-projection"
#: How long after a switch the old generation is kept: replicas read the active generation at
#: most once a second (`ProjectionManager.generation`), so by then none reads the old one.
DROP_AFTER_S = 10.0

_VIEW = sa.select(order_views).where(
    order_views.c.generation == sa.bindparam("g"), order_views.c.id == sa.bindparam("order_id")
)
_VIEWS_FOR_UPDATE = (
    sa.select(order_views)
    .where(
        order_views.c.generation == sa.bindparam("g"),
        one_of(order_views.c.id, "ids"),
    )
    .with_for_update()
)
_UPDATE = order_views.update().where(
    order_views.c.generation == sa.bindparam("g"), order_views.c.id == sa.bindparam("order_id")
)
_STATE = sa.select(projections).where(projections.c.name == sa.bindparam("name"))
_PAYMENT: dict[type[Message], PaymentStatus] = {
    PaymentCompleted: PaymentStatus.COMPLETED,
    PaymentFailed: PaymentStatus.FAILED,
    PaymentRefunded: PaymentStatus.REFUNDED,
    PaymentVoided: PaymentStatus.FAILED,
}
_COLUMNS = [c.name for c in order_views.c if c.name not in ("generation", "id")]


def _latest(current: Any, at: datetime) -> datetime:
    return at if current is None or as_utc(current) < at else as_utc(current)


def view_key(generation: int, order_id: UUID) -> str:
    """Where one order's view is cached (a new generation starts with nothing cached)."""
    return f"order:{generation}:{order_id}"


def _placed(event: OrderPlaced, view: dict[str, Any]) -> datetime:
    view.update(
        customer_id=event.customer_id,
        total=event.total,
        currency=event.currency,
        delivery_address=event.delivery_address,
        created_at=event.placed_at,
        items=[i.model_dump(mode="json") for i in event.items],
    )
    view["status"] = view["status"] or Status.PENDING.value
    if not any(h["status"] == Status.PENDING for h in view["history"]):
        view["history"].insert(0, {"status": Status.PENDING.value, "at": event.placed_at.isoformat()})
    view["payment_status"] = view["payment_status"] or PaymentStatus.PENDING.value
    return event.placed_at


def _status_changed(event: OrderStatusChanged, view: dict[str, Any]) -> datetime:
    entry = {"status": event.status, "at": event.at.isoformat()}
    if entry not in view["history"]:
        view["history"].append(entry)
    view["status"] = event.status
    if event.status == Status.CANCELLED:
        view["cancel_reason"], view["cancel_requested"] = event.reason, False
    return event.at


def _cancellation(event: OrderCancellationRequested | OrderCancellationRefused, view: dict[str, Any]) -> datetime:
    if view["status"] != Status.CANCELLED:
        view["cancel_requested"] = isinstance(event, OrderCancellationRequested)
    return event.at


def _payment(event: Any, view: dict[str, Any]) -> datetime:
    status = _PAYMENT[type(event)]
    current = PaymentStatus(view["payment_status"] or PaymentStatus.PENDING.value)
    if status in PAYMENT_NEXT[current]:
        view["payment_status"] = status.value
    return getattr(event, "at", None) or utcnow()


def _courier(event: CourierAssigned, view: dict[str, Any]) -> None:
    view["courier_name"] = event.courier_name


#: How each fact changes an order's view; the time it happened (None: when it was sent).
APPLY: dict[type[Message], Callable[[Any, dict[str, Any]], datetime | None]] = {
    OrderPlaced: _placed,
    OrderStatusChanged: _status_changed,
    OrderCancellationRequested: _cancellation,
    OrderCancellationRefused: _cancellation,
    **dict.fromkeys(_PAYMENT, _payment),
    CourierAssigned: _courier,
}


def build_projector(
    generation: int, cache: Cache | None = None, on_change: Callable[[UUID], None] | None = None
) -> HandlerRegistry:
    """The handlers that keep generation `generation` of the views (and the cache of them);
    `on_change` hears of every order whose view changed, once the change has committed."""
    registry = HandlerRegistry()

    @registry.on_batch(*APPLY)
    async def project(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """A run of facts: the views of every order they concern are read at once, changed in
        memory, and written back with one statement for new views and one for the others."""
        order_ids = {item.message.order_id for item in items}
        keys = [view_key(generation, i) for i in order_ids]
        if cache is not None:  # before the change (covering it) and once it has committed
            await cache.invalidate(*keys)
            uow.after_commit(lambda: cache.invalidate(*keys))
        rows = await fetch_rows(uow.conn, _VIEWS_FOR_UPDATE, {"g": generation, "ids": list(order_ids)})
        found = {row.id: {c: getattr(row, c) for c in _COLUMNS} for row in rows}
        views: dict[UUID, dict[str, Any]] = {}
        for item in items:
            order_id = item.message.order_id
            view: dict[str, Any] = (
                views.get(order_id)
                or found.get(order_id)
                or (dict.fromkeys(_COLUMNS) | {"history": [], "cancel_requested": False})
            )
            view["history"] = list(view["history"])
            at = APPLY[type(item.message)](item.message, view) or item.envelope.time
            view["updated_at"] = _latest(view["updated_at"], at)
            views[order_id] = view
        new = [{"generation": generation, "id": i, **v} for i, v in views.items() if i not in found]
        changed = [{"g": generation, "order_id": i, **v} for i, v in views.items() if i in found]
        if new:
            await insert_rows(uow.conn, order_views, new)
        if changed:
            await update_rows(uow.conn, _UPDATE, changed)
        if on_change is not None:
            uow.after_commit(lambda: _announce_all(on_change, order_ids))

    return registry


def _announce_all(on_change: Callable[[UUID], None], order_ids: set[UUID]) -> None:
    for order_id in order_ids:
        on_change(order_id)


# -- reading ---------------------------------------------------------------------------------------


async def active_generation(conn: AsyncConnection) -> int:
    rows = await fetch_rows(conn, _STATE, {"name": NAME})
    return int(rows[0].active_generation) if rows else 1


async def view_of(conn: AsyncConnection, generation: int, order_id: UUID) -> Any:
    row = (await conn.execute(_VIEW, {"g": generation, "order_id": order_id})).first()
    return row if row is not None and row.customer_id is not None else None


async def views(
    conn: AsyncConnection,
    generation: int,
    *,
    customer_id: str | None,
    status: Status | None,
    limit: int,
    before: UUID | None,
) -> list[Any]:
    query = (
        sa.select(order_views)
        .where(order_views.c.generation == generation, order_views.c.customer_id.is_not(None))
        .order_by(order_views.c.id.desc())
        .limit(limit)
    )
    if customer_id is not None:
        query = query.where(order_views.c.customer_id == customer_id)
    if status is not None:
        query = query.where(order_views.c.status == status.value)
    if before is not None:
        query = query.where(order_views.c.id < before)
    return list(await conn.execute(query))


async def ensure_state(conn: AsyncConnection) -> None:
    """The views' row of a new database: generation 1 (whoever writes it first, of the replicas
    that start together or a rebuild asked for meanwhile; the others leave it as it is)."""
    await conn.execute(insert_ignore(conn, projections).values(name=NAME, active_generation=1))


async def request_rebuild(conn: AsyncConnection) -> int | None:
    """Ask the orders service to rebuild the views; the generation it will build, or None if
    a rebuild is already under way."""
    await ensure_state(conn)
    row = (await conn.execute(_STATE.with_for_update(), {"name": NAME})).one()
    if row.building_generation is not None:
        return None
    building = int(row.active_generation) + 1
    await conn.execute(
        projections.update()
        .where(projections.c.name == NAME)
        .values(building_generation=building, requested_at=utcnow())
    )
    return building


async def status(conn: AsyncConnection) -> dict[str, Any]:
    row = (await conn.execute(_STATE, {"name": NAME})).first()
    counts = await conn.execute(sa.select(order_views.c.generation, sa.func.count()).group_by(order_views.c.generation))
    return {
        "active_generation": row.active_generation if row else 1,
        "building_generation": row.building_generation if row else None,
        "switched_at": row.switched_at if row else None,
        "rows": {int(g): int(n) for g, n in counts.all()},
    }


# -- running -----------------------------------------------------------------------------------------


class ProjectionManager:
    """Runs the active generation's projector, and a rebuild when one is asked for."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        topics: tuple[str, ...],
        cache: Cache | None = None,
        on_change: Callable[[UUID], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.topics = topics
        self.cache = cache
        self.on_change = on_change
        self.active: tuple[int, ConsumerRunner] | None = None
        self.building: tuple[int, ConsumerRunner] | None = None
        self._cache: tuple[float, int] = (0.0, 1)
        self._dropped_before = 1  # generations below this one are known to be gone

    def _runner(self, generation: int) -> ConsumerRunner:
        projector = build_projector(generation, self.cache, self.on_change)
        return self.runtime.launch(
            generation_group(BASE_GROUP, generation),
            projector,
            topics=self.topics,
            dead_letter_topic=dlq_topic(BASE_GROUP),
        )

    async def generation(self, conn: AsyncConnection) -> int:
        """The generation reads use (read at most once a second)."""
        at, generation = self._cache
        if time.monotonic() - at > 1.0:
            generation = await active_generation(conn)
            self._cache = (time.monotonic(), generation)
        return generation

    async def run(self) -> None:
        async with self.runtime.db.transaction() as conn:
            await ensure_state(conn)
        try:
            await BackgroundLoop("projections", self._tend, interval=1.0).run()
        finally:
            for _, runner in filter(None, (self.active, self.building)):
                await self.runtime.halt(runner)

    async def _tend(self) -> None:
        async with self.runtime.db.read() as conn:
            rows = await fetch_rows(conn, _STATE, {"name": NAME})
        if not rows:
            return
        row = rows[0]
        active, building = int(row.active_generation), row.building_generation
        if self.building is not None and self.building[0] == active:
            await self._promote()  # another replica switched to the generation this one built too
        elif self.building is not None and self.building[0] != building:
            await self.runtime.halt(self.building[1])  # that rebuild is no longer under way
            self.building = None
        if self.active is None or self.active[0] != active:
            if self.active is not None:
                await self.runtime.halt(self.active[1])
            self.active = (active, self._runner(active))
        await self._drop_old(active, row.switched_at)
        if building is None:
            return
        if self.building is None:
            log.info("rebuilding the order views", generation=building)
            self.building = (building, self._runner(building))
            return
        if await self._caught_up(self.building[1]):
            await self._switch(active, building)

    async def _caught_up(self, runner: ConsumerRunner) -> bool:
        """Has the rebuilding group as a whole reached the end of every partition? (This
        replica's member owning some of them and being done with those says nothing of the
        partitions other replicas own.)"""
        consumer = runner.consumer
        if consumer is None or not runner.healthy or not consumer.assignment():
            return False
        return all(lag == 0 for lag in (await consumer.group_lag()).values())

    async def _switch(self, old: int, new: int) -> None:
        async with self.runtime.db.transaction() as conn:
            switched = await conn.execute(
                projections.update()
                .where(projections.c.name == NAME, projections.c.building_generation == new)
                .values(active_generation=new, building_generation=None, switched_at=utcnow())
            )
        if not switched.rowcount:
            return  # another replica switched (or the rebuild was dropped): the next look follows
        await self._promote()
        log.info("order views switched to the rebuilt generation", generation=new, previous=old)

    async def _promote(self) -> None:
        """Reads and the projector move to the generation just built."""
        assert self.building is not None
        previous, self.active, self.building = self.active, self.building, None
        self._cache = (0.0, self.active[0])
        if previous is not None:
            await self.runtime.halt(previous[1])

    async def _drop_old(self, active: int, switched_at: datetime | None) -> None:
        """Drop the generations before the active one, `DROP_AFTER_S` after the switch (every
        replica does, once: deleting what is gone already costs nothing)."""
        if active <= self._dropped_before or switched_at is None:
            return
        if (utcnow() - as_utc(switched_at)).total_seconds() < DROP_AFTER_S:
            return
        async with self.runtime.db.transaction() as conn:
            await conn.execute(order_views.delete().where(order_views.c.generation < active))
        self._dropped_before = active
