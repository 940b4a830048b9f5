"""Payments HTTP routes."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.kit.auth import Admin, CustomerOrAdmin, owner_scope
from pizzeria.kit.errors import NotFound
from pizzeria.services.payments import handlers, repository
from pizzeria.services.payments.deps import PaymentsDep
from pizzeria.services.payments.domain import Payment
from pizzeria.services.payments.schemas import PaymentList, PaymentView

router = APIRouter(prefix="/api/v1/payments", tags=["payments"])


def view(p: Payment) -> PaymentView:
    return PaymentView(
        id=p.id,
        order_id=p.order_id,
        customer_id=p.customer_id,
        amount=p.amount,
        currency=p.currency,
        status=p.status,
        failure_reason=p.failure_reason,
        provider_charge_id=p.provider_charge_id,
        attempts=p.attempts,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


@router.get("/{payment_id}", response_model=PaymentView, summary="One payment")
async def get_payment(payment_id: UUID, caller: CustomerOrAdmin, runtime: RuntimeDep) -> PaymentView:
    async with runtime.db.read() as conn:
        payment = await repository.get(conn, payment_id)
    if payment is None or owner_scope(caller) not in (None, payment.customer_id):
        raise NotFound(f"payment {payment_id} does not exist")
    return view(payment)


@router.get("", response_model=PaymentList, summary="Payments of an order, or the newest ones")
async def list_payments(
    caller: CustomerOrAdmin,
    runtime: RuntimeDep,
    order_id: Annotated[UUID | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PaymentList:
    owner = owner_scope(caller)
    async with runtime.db.read() as conn:
        if order_id is None:
            found = await repository.recent(conn, customer_id=owner, limit=limit)
        else:
            found = await repository.for_order(conn, order_id)
    return PaymentList(items=[view(p) for p in found if owner in (None, p.customer_id)])


@router.post(
    "/{payment_id}/refund",
    response_model=PaymentView,
    status_code=202,
    summary="Refund a completed payment (administrators)",
)
async def refund_payment(payment_id: UUID, admin: Admin, runtime: RuntimeDep, parts: PaymentsDep) -> PaymentView:
    payment = await handlers.request_refund(runtime.uow(), payment_id, actor=admin.user_id)
    parts.wake_charger()  # the refund is due now
    return view(payment)
