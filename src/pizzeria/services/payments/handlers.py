"""Payments: the saga's charge and refund commands, and settling them with the provider."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

from pizzeria.contracts.payments import (
    ChargePayment,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    PaymentRefundRequested,
    PaymentVoided,
    RefundPayment,
)
from pizzeria.kit import context
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import Conflict, NotFound
from pizzeria.kit.ids import uuid7
from pizzeria.messaging.consumer import HandlerRegistry, Incoming
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.payments import repository
from pizzeria.services.payments.domain import Payment, Status, backoff_for
from pizzeria.services.payments.settling import Change, Settler


def build_handlers(wake_charger: Callable[[], None]) -> HandlerRegistry:
    """The commands payments executes; new work wakes the charger after commit."""
    registry = HandlerRegistry()

    @registry.on_batch(ChargePayment)
    async def charge(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """A run of charges: one payment per order (however often asked), written in one
        statement at commit; the charger takes them from there."""
        now = utcnow()
        new = []
        for item in items:
            command: ChargePayment = item.message
            with item.handling():  # the payment carries on the trace of the command that asked for it
                new.append(
                    Payment(
                        id=uuid7(),
                        order_id=command.order_id,
                        customer_id=command.customer_id,
                        amount=command.amount,
                        currency=command.currency,
                        token=command.token,
                        status=Status.PENDING,
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                        updated_at=now,
                        traceparent=context.traceparent.get(),
                    )
                )
        if await repository.add_if_new(uow.conn, new):
            uow.after_commit(wake_charger)

    @registry.on(RefundPayment)
    async def refund(command: RefundPayment, _: Envelope, uow: UnitOfWork) -> None:
        payment = await repository.of_order_for_update(uow.conn, command.order_id)
        now = utcnow()
        if payment is None:
            # Asked to give back what was never charged: record a voided payment so that a
            # charge command arriving late finds one and does nothing.
            payment = Payment(
                id=uuid7(),
                order_id=command.order_id,
                customer_id="",
                amount=0,
                currency="XXX",
                token="",
                status=Status.FAILED,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
                failure_reason="cancelled",
            )
            await repository.add_if_new(uow.conn, [payment])
            uow.emit(PaymentVoided(payment_id=None, order_id=command.order_id, at=now))
            return
        outcome = payment.request_money_back(at=now)
        await repository.save(uow.conn, payment, unlock=False)
        if outcome == "voided":
            uow.emit(PaymentVoided(payment_id=payment.id, order_id=payment.order_id, at=now))
        elif outcome == "refunded":
            uow.emit(_refunded(payment, now))
        else:  # the charger voids or refunds it, then answers
            uow.after_commit(wake_charger)

    return registry


def _refunded(payment: Payment, at: datetime) -> PaymentRefunded:
    return PaymentRefunded(
        payment_id=payment.id,
        order_id=payment.order_id,
        amount=payment.amount,
        currency=payment.currency,
        provider_refund_id=payment.provider_refund_id or "",
        at=at,
    )


# The outcomes of the charger's provider calls. Each is applied with others that finish close
# together, in one transaction (settling.Settler); each returns False if there was nothing to do
# any more (a previous holder whose lease ran out got there first).


def completing(charge_id: str) -> Change:
    """The change of a payment the provider captured as `charge_id`, and what it tells."""

    def complete(payment: Payment, now: datetime) -> list[Message]:
        payment.complete(charge_id, at=now)
        return [
            PaymentCompleted(
                payment_id=payment.id,
                order_id=payment.order_id,
                amount=payment.amount,
                currency=payment.currency,
                provider_charge_id=charge_id,
                at=now,
            )
        ]

    return complete


async def settle_completed(settler: Settler, payment_id: UUID, charge_id: str) -> bool:
    """The provider captured the charge: record it and tell the world (if the saga has given
    up on it meanwhile, the payment now waits for its refund)."""
    return await settler.settle(payment_id, completing(charge_id)) is not None


async def settle_failed(settler: Settler, payment_id: UUID, reason: str) -> bool:
    """The charge cannot succeed: record why and tell the world."""

    def fail(payment: Payment, now: datetime) -> list[Message]:
        cancelled = payment.cancel_requested
        payment.fail(reason, at=now)
        failed: list[Message] = [
            PaymentFailed(
                payment_id=payment.id,
                order_id=payment.order_id,
                amount=payment.amount,
                currency=payment.currency,
                reason=reason,
                at=now,
            )
        ]
        if cancelled:  # the saga is waiting for its compensation's answer
            failed.append(PaymentVoided(payment_id=payment.id, order_id=payment.order_id, at=now))
        return failed

    return await settler.settle(payment_id, fail) is not None


async def settle_voided(settler: Settler, payment_id: UUID) -> bool:
    """Stopped before the provider took anything."""

    def void(payment: Payment, now: datetime) -> list[Message]:
        payment.void(at=now)
        return [PaymentVoided(payment_id=payment.id, order_id=payment.order_id, at=now)]

    return await settler.settle(payment_id, void) is not None


async def settle_refunded(settler: Settler, payment_id: UUID, refund_id: str) -> bool:
    def refunded(payment: Payment, now: datetime) -> list[Message]:
        payment.refunded(refund_id, at=now)
        return [_refunded(payment, now)]

    return await settler.settle(payment_id, refunded) is not None


async def schedule_retry(settler: Settler, payment_id: UUID, *, attempt: int | None) -> int:
    """Release the payment for a later attempt; returns the attempts made so far. `attempt` is
    the number of the attempt that just failed (the attempts the payment had when it was
    claimed, plus one), or None when no call was made (the breaker was open). Counted as a
    number, not an increment: written twice (a commit that raised after it went through, then
    tried again alone), the attempt still counts once."""

    def retry(payment: Payment, now: datetime) -> list[Message]:
        if not (payment.is_open or payment.needs_refund):
            raise Conflict(f"payment {payment.id} is {payment.status}: nothing to retry")
        if attempt is not None:
            payment.attempts = max(payment.attempts, attempt)
        backoff = backoff_for(max(1, payment.attempts))
        if payment.needs_refund:
            payment.retry_refund_later(at=now, backoff=backoff)
        else:
            payment.retry_later(at=now, backoff=backoff)
        return []

    payment = await settler.settle(payment_id, retry)
    return 0 if payment is None else payment.attempts


async def request_refund(uow: UnitOfWork, payment_id: UUID, actor: str) -> Payment:
    """An administrator (`actor`) refunds a completed payment (outside any saga)."""
    async with uow:
        payment = await repository.get(uow.conn, payment_id, for_update=True)
        if payment is None:
            raise NotFound(f"payment {payment_id} does not exist")
        if payment.status is not Status.COMPLETED:
            raise Conflict(f"payment {payment_id} is {payment.status}; only a completed payment can be refunded")
        now = utcnow()
        payment.request_money_back(at=now)
        await repository.save(uow.conn, payment, unlock=False)
        uow.emit(
            PaymentRefundRequested(
                payment_id=payment.id,
                order_id=payment.order_id,
                customer_id=payment.customer_id,
                amount=payment.amount,
                currency=payment.currency,
                actor=actor,
                at=now,
            )
        )
        await uow.commit()
    return payment
