"""Delivery HTTP routes: the couriers' board."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.kit.auth import require_roles
from pizzeria.services.delivery import handlers, repository
from pizzeria.services.delivery.deps import DeliveryDep
from pizzeria.services.delivery.domain import DeliveryStatus

router = APIRouter(
    prefix="/api/v1", tags=["delivery"], dependencies=[Depends(require_roles("courier", "staff", "admin"))]
)


class DeliveryView(BaseModel):
    id: UUID
    order_id: UUID
    customer_id: str
    address: str
    courier_id: UUID | None
    status: DeliveryStatus
    created_at: datetime
    updated_at: datetime


class DeliveryList(BaseModel):
    items: list[DeliveryView]
    #: Pass as `cursor` for the next page; null on the last one.
    next_cursor: UUID | None = None


class CourierView(BaseModel):
    id: UUID
    name: str
    delivery_id: UUID | None


class CourierList(BaseModel):
    items: list[CourierView]


def view(row: Any) -> DeliveryView:
    return DeliveryView(
        id=row.id,
        order_id=row.order_id,
        customer_id=row.customer_id,
        address=row.address,
        courier_id=row.courier_id,
        status=DeliveryStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("/deliveries", response_model=DeliveryList, summary="Deliveries, oldest first")
async def list_deliveries(
    runtime: RuntimeDep,
    status: Annotated[list[DeliveryStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[UUID | None, Query(description="the `next_cursor` of the page before")] = None,
) -> DeliveryList:
    wanted = [s.value for s in status] if status else ["waiting", "assigned", "out_for_delivery"]
    async with runtime.db.read() as conn:
        rows = await repository.listing(conn, wanted, limit, after=cursor)
    return DeliveryList(items=[view(r) for r in rows], next_cursor=rows[-1].id if len(rows) == limit else None)


@router.post(
    "/deliveries/{delivery_id}/advance",
    response_model=DeliveryView,
    summary="Courier's action: assigned → out_for_delivery → delivered",
)
async def advance(delivery_id: UUID, runtime: RuntimeDep, parts: DeliveryDep) -> DeliveryView:
    status = await handlers.advance(runtime.uow(), delivery_id)
    if status is DeliveryStatus.DELIVERED:
        parts.wake_dispatcher()  # the courier is free: hand out what waits
    async with runtime.db.read() as conn:
        row = await repository.get(conn, delivery_id)
    return view(row)


@router.get("/couriers", response_model=CourierList, summary="Couriers and what they carry")
async def list_couriers(runtime: RuntimeDep) -> CourierList:
    async with runtime.db.read() as conn:
        rows = await repository.all_couriers(conn)
    return CourierList(items=[CourierView(id=r.id, name=r.name, delivery_id=r.delivery_id) for r in rows])
