"""Payments response bodies."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel

from pizzeria.services.payments.domain import Status


class PaymentView(BaseModel):
    id: UUID
    order_id: UUID
    customer_id: str
    amount: int
    currency: str
    status: Status
    failure_reason: str | None
    provider_charge_id: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime


class PaymentList(BaseModel):
    items: list[PaymentView]
