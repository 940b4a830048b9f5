"""Notifications facts (a message went out to a customer), and what a customer is told."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from pizzeria.messaging.message import Message

CONTEXT = "notifications"

#: What a customer is told about an order, and on which of the channels they gave (a template
#: → its channels): what they wait for or must act on. The rest of an order's story (placed,
#: preparing, baking, ready) is on the order's page as it happens; a message for each step would
#: be noise. One notification per event and channel; the receipt is the email a payment sends,
#: `order_paid` its text message.
TOLD: dict[str, frozenset[str]] = {
    "order_paid": frozenset({"sms"}),
    "payment_receipt": frozenset({"email"}),
    "order_out_for_delivery": frozenset({"email", "sms"}),
    "courier_arriving": frozenset({"email", "sms"}),
    "order_delivered": frozenset({"email", "sms"}),
    "order_cancelled": frozenset({"email", "sms"}),
    "payment_refunded": frozenset({"email", "sms"}),
    "order_cancellation_refused": frozenset({"email", "sms"}),
}


def told(template: str, channels: Iterable[str]) -> list[str]:
    """Those of `channels` a customer is told `template` on (none, for what is not told)."""
    on = TOLD.get(template, frozenset())
    return [c for c in channels if c in on]


class NotificationSent(Message, context=CONTEXT, key="notification_id"):
    """A notification was delivered to its channel (recipient not included: personal data)."""

    notification_id: UUID
    customer_id: str
    order_id: UUID | None
    template: str
    channel: str
    at: datetime
