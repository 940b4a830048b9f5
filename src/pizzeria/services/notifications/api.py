"""Notifications HTTP routes: a customer's notification history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.kit.auth import CustomerOrAdmin, owner_scope
from pizzeria.kit.logging import mask_email, mask_phone
from pizzeria.services.notifications import repository

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])


class NotificationView(BaseModel):
    id: UUID
    customer_id: str
    order_id: UUID | None
    template: str
    channel: str
    recipient: str  # masked: the history is not a way to read personal data back
    subject: str
    body: str
    status: str
    created_at: datetime


class NotificationList(BaseModel):
    items: list[NotificationView]
    next_cursor: UUID | None


def view(row: Any) -> NotificationView:
    recipient = mask_email(row.recipient) if row.channel == "email" else mask_phone(row.recipient)
    return NotificationView(
        id=row.id,
        customer_id=row.customer_id,
        order_id=row.order_id,
        template=row.template,
        channel=row.channel,
        recipient=recipient,
        subject=row.subject,
        body=row.body,
        status=row.status,
        created_at=row.created_at,
    )


@router.get("", response_model=NotificationList, summary="Notification history, newest first")
async def list_notifications(
    caller: CustomerOrAdmin,
    runtime: RuntimeDep,
    order_id: Annotated[UUID | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[UUID | None, Query()] = None,
    customer_id: Annotated[str | None, Query(max_length=64, description="admins: one customer's")] = None,
) -> NotificationList:
    customer_id = owner_scope(caller) or customer_id
    async with runtime.db.read() as conn:
        rows = await repository.history(
            conn, customer_id=customer_id, order_id=order_id, limit=limit + 1, before=cursor
        )
    page = rows[:limit]
    return NotificationList(items=[view(r) for r in page], next_cursor=page[-1].id if len(rows) > limit else None)
