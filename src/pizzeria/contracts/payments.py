"""Payments: the charge and refund commands of the order saga, and their outcomes."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pizzeria.messaging.message import Message

CONTEXT = "payments"


class ChargePayment(Message, context=CONTEXT, kind="command", key="order_id"):
    """Charge the order's amount to the customer's card (idempotent per order)."""

    order_id: UUID
    customer_id: str
    amount: int
    currency: str
    token: str


class RefundPayment(Message, context=CONTEXT, kind="command", key="order_id"):
    """Give the money back (compensation): refund a completed charge, or void one still in
    progress so that it never completes. Answered by `PaymentRefunded` or `PaymentVoided`."""

    order_id: UUID
    reason: str


class PaymentCompleted(Message, context=CONTEXT, key="order_id"):
    """The provider captured the order's amount."""

    payment_id: UUID
    order_id: UUID
    amount: int
    currency: str
    provider_charge_id: str
    at: datetime


class PaymentFailed(Message, context=CONTEXT, key="order_id"):
    """The provider declined, or could not be reached for long enough to give up."""

    payment_id: UUID
    order_id: UUID
    amount: int
    currency: str
    reason: str
    at: datetime


class PaymentRefunded(Message, context=CONTEXT, key="order_id"):
    """The captured amount went back to the card."""

    payment_id: UUID
    order_id: UUID
    amount: int
    currency: str
    provider_refund_id: str
    at: datetime


class PaymentVoided(Message, context=CONTEXT, key="order_id"):
    """No money was taken, and none will be: the charge failed, never started, or was stopped."""

    payment_id: UUID | None
    order_id: UUID
    at: datetime


class PaymentRefundRequested(Message, context=CONTEXT, key="order_id"):
    """An administrator asked for a completed payment's money back (outside any saga); the
    refund itself follows as `PaymentRefunded`."""

    payment_id: UUID
    order_id: UUID
    customer_id: str
    amount: int
    currency: str
    actor: str
    at: datetime
