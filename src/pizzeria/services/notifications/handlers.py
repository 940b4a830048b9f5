"""Which events become which notifications, and the dispatcher that sends them."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.contracts.notifications import TOLD, NotificationSent, told
from pizzeria.contracts.orders import OrderCancellationRefused, OrderPlaced, OrderStatusChanged
from pizzeria.contracts.payments import PaymentCompleted, PaymentRefunded
from pizzeria.contracts.telemetry import CourierArriving
from pizzeria.kit import context, tracing
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.ids import uuid7
from pizzeria.kit.logging import get_logger
from pizzeria.messaging.consumer import HandlerRegistry, Incoming
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.notifications import repository
from pizzeria.services.notifications.channels import ChannelSender
from pizzeria.services.notifications.domain import (
    REASONS,
    MessageTemplate,
    minutes_away,
    money,
    order_ref,
    recipients,
)
from pizzeria.services.notifications.metrics import notifications_sent

log = get_logger(__name__)


_templates: weakref.WeakKeyDictionary[Database, dict[str, dict[str, MessageTemplate]]] = weakref.WeakKeyDictionary()


async def templates_named(uow: UnitOfWork, name: str) -> dict[str, MessageTemplate]:
    """A template by channel. Templates change only with a release (seeded at start), so each
    process reads them once per database."""
    if uow.db not in _templates:
        _templates[uow.db] = await repository.all_templates(uow.conn)
    return _templates[uow.db].get(name, {})


async def notify(uow: UnitOfWork, *, event_id: str, order_id: UUID, template: str, values: dict[str, str]) -> int:
    """Queue one notification per channel the customer can be reached on and is told
    `template` on (`TOLD`); returns how many. Without the order's contact yet, the notification
    waits for it."""
    if template not in TOLD:
        return 0
    now = utcnow()
    contact = await repository.contact(uow, order_id)
    if contact is None:
        repository.defer(uow, event_id, template, order_id, values, now)
        return 0
    queued = 0
    found = await templates_named(uow, template)
    values = {"order_ref": order_ref(str(order_id)), **values}
    reachable = recipients(contact.email, contact.phone)
    for channel in told(template, reachable):
        tmpl = found.get(channel)
        if tmpl is None:
            continue
        address = reachable[channel]
        subject, body = tmpl.render(values)
        queued += 1
        repository.add_notification(
            uow,
            {
                "id": uuid7(),
                "customer_id": contact.customer_id,
                "order_id": order_id,
                "event_id": event_id,
                "traceparent": context.traceparent.get(),
                "template": template,
                "channel": channel,
                "recipient": address,
                "subject": subject,
                "body": body,
                "status": "queued",
                "created_at": now,
            },
        )
    return queued


def build_events(wake_dispatcher: Callable[[], None]) -> HandlerRegistry:
    events = HandlerRegistry()

    async def queue(uow: UnitOfWork, **kwargs: object) -> None:
        if await notify(uow, **kwargs):  # type: ignore[arg-type]
            uow.after_commit(wake_dispatcher)

    @events.on_batch(
        OrderPlaced, OrderStatusChanged, PaymentRefunded, OrderCancellationRefused, PaymentCompleted, CourierArriving
    )
    async def on_run(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """A run of order and payment events: the contacts of every order they concern are read
        at once, the notifications written at commit in one statement."""
        await repository.load_contacts(uow, {item.message.order_id for item in items})
        for item in items:
            with item.handling():
                await ON[type(item.message)](item.message, item.envelope, uow)

    async def on_order_placed(event: OrderPlaced, env: Envelope, uow: UnitOfWork) -> None:
        repository.add_contact(
            uow, event.order_id, event.customer_id, event.contact.email, event.contact.phone, utcnow()
        )
        await queue(
            uow,
            event_id=env.id,
            order_id=event.order_id,
            template="order_placed",
            values={"total": money(event.total, event.currency)},
        )
        for row in await repository.take_deferred(uow.conn, event.order_id):
            await queue(
                uow, event_id=row.event_id, order_id=row.order_id, template=row.template, values=dict(row.values)
            )

    async def on_status_changed(event: OrderStatusChanged, env: Envelope, uow: UnitOfWork) -> None:
        reason = REASONS.get(event.reason or "", event.reason or "")
        await queue(
            uow, event_id=env.id, order_id=event.order_id, template=f"order_{event.status}", values={"reason": reason}
        )

    async def on_payment_refunded(event: PaymentRefunded, env: Envelope, uow: UnitOfWork) -> None:
        await queue(
            uow,
            event_id=env.id,
            order_id=event.order_id,
            template="payment_refunded",
            values={"total": money(event.amount, event.currency)},
        )

    async def on_cancellation_refused(event: OrderCancellationRefused, env: Envelope, uow: UnitOfWork) -> None:
        await queue(uow, event_id=env.id, order_id=event.order_id, template="order_cancellation_refused", values={})

    async def on_payment_completed(event: PaymentCompleted, env: Envelope, uow: UnitOfWork) -> None:
        await queue(
            uow,
            event_id=env.id,
            order_id=event.order_id,
            template="payment_receipt",
            values={"total": money(event.amount, event.currency), "charge_ref": event.provider_charge_id},
        )

    async def on_courier_arriving(event: CourierArriving, env: Envelope, uow: UnitOfWork) -> None:
        # Keyed by the order, not by the event: a courier arriving is told once per order,
        # however many times telemetry says so.
        await queue(
            uow,
            event_id=f"courier-arriving:{event.order_id}",
            order_id=event.order_id,
            template="courier_arriving",
            values={"minutes": minutes_away(event.eta_s)},
        )

    ON: dict[type[Any], Callable[[Any, Envelope, UnitOfWork], Awaitable[None]]] = {
        OrderPlaced: on_order_placed,
        OrderStatusChanged: on_status_changed,
        PaymentRefunded: on_payment_refunded,
        OrderCancellationRefused: on_cancellation_refused,
        PaymentCompleted: on_payment_completed,
        CourierArriving: on_courier_arriving,
    }
    return events


async def release_deferred(uow: UnitOfWork, limit: int = 100) -> int:
    """Queue deferred notifications whose contact has arrived. The order's own `OrderPlaced`
    releases them at once; this catches the case where both events were handled concurrently
    (each transaction unable to see the other's rows), so a receipt is late, never lost."""
    async with uow.db.read() as conn:  # the usual answer is "nothing": no write transaction for it
        if not await repository.deferred_with_contact(conn, 1):
            return 0
    async with uow:
        rows = await repository.deferred_with_contact(uow.conn, limit, claim=True)
        for row in rows:
            await notify(
                uow, event_id=row.event_id, order_id=row.order_id, template=row.template, values=dict(row.values)
            )
            await repository.drop_deferred(uow.conn, row.event_id, row.template)
        await uow.commit()
    return len(rows)


class NotificationSender:
    """Sends queued notifications through their channel and records that they went out; its
    `step` runs in a background loop, woken when a notification is queued."""

    def __init__(self, runtime: ServiceRuntime, sender: ChannelSender, *, batch: int = 100) -> None:
        self.runtime = runtime
        self.sender = sender
        self.batch = batch

    async def step(self) -> bool:
        """True if more may be waiting (deferred ones were released, or a full batch went out)."""
        released = await release_deferred(self.runtime.uow())
        sent = await self.dispatch_once()
        return bool(released) or sent >= self.batch

    async def dispatch_once(self) -> int:
        """Send one batch. A crash after sending and before recording re-sends on restart
        (at least once), as with any real gateway."""
        async with self.runtime.db.read() as conn:
            if not await repository.any_queued(conn):
                return 0
        async with self.runtime.uow() as uow:
            rows = await repository.claim_queued(uow.conn, self.batch)
            for row in rows:
                await self.sender.send(channel=row.channel, recipient=row.recipient, subject=row.subject, body=row.body)
                with tracing.span(
                    f"notifications send {row.channel}",
                    parent=row.traceparent or "",
                    attributes={"notification.id": str(row.id), "order.id": str(row.order_id)},
                ):
                    uow.emit(
                        NotificationSent(
                            notification_id=row.id,
                            customer_id=row.customer_id,
                            order_id=row.order_id,
                            template=row.template,
                            channel=row.channel,
                            at=utcnow(),
                        )
                    )
            if rows:
                await repository.mark(uow.conn, [r.id for r in rows], "sent")
            await uow.commit()
        for row in rows:
            notifications_sent.labels(row.channel).inc()
        return len(rows)
