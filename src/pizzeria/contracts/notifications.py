"""Notifications facts: a message went out to a customer."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pizzeria.messaging.message import Message

CONTEXT = "notifications"


class NotificationSent(Message, context=CONTEXT, key="notification_id"):
    """A notification was delivered to its channel (recipient not included: personal data)."""

    notification_id: UUID
    customer_id: str
    order_id: UUID | None
    template: str
    channel: str
    at: datetime
