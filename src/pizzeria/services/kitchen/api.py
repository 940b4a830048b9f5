"""Kitchen HTTP routes: tickets for the staff board, and the inventory."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.kit.auth import require_roles
from pizzeria.kit.errors import NotFound
from pizzeria.kit.schemas import RequestBody
from pizzeria.services.kitchen import handlers, repository
from pizzeria.services.kitchen.domain import TicketStatus

router = APIRouter(prefix="/api/v1", tags=["kitchen"], dependencies=[Depends(require_roles("staff", "admin"))])


class TicketView(BaseModel):
    id: UUID
    order_id: UUID
    status: TicketStatus
    lines: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


class TicketList(BaseModel):
    items: list[TicketView]
    #: Pass as `cursor` for the next page; null on the last one.
    next_cursor: UUID | None = None


class IngredientView(BaseModel):
    ingredient: str
    on_hand: int
    reserved: int
    consumed: int
    received: int


class Inventory(BaseModel):
    items: list[IngredientView]


class StockLevel(RequestBody):
    model_config = ConfigDict(extra="ignore")

    on_hand: int = Field(ge=0, le=100_000_000, description="units on hand after the delivery or count")


def ticket_view(row: Any) -> TicketView:
    return TicketView(
        id=row.id,
        order_id=row.order_id,
        status=TicketStatus(row.status),
        lines=row.lines,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("/kitchen/tickets", response_model=TicketList, summary="Tickets, oldest first")
async def list_tickets(
    runtime: RuntimeDep,
    status: Annotated[list[TicketStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[UUID | None, Query(description="the `next_cursor` of the page before")] = None,
) -> TicketList:
    wanted = [s.value for s in status] if status else ["queued", "preparing", "baking", "ready"]
    async with runtime.db.read() as conn:
        rows = await repository.tickets_by_status(conn, wanted, limit, after=cursor)
    return TicketList(items=[ticket_view(r) for r in rows], next_cursor=rows[-1].id if len(rows) == limit else None)


@router.post(
    "/kitchen/tickets/{ticket_id}/advance",
    response_model=TicketView,
    summary="Move a ticket on: queued → preparing → baking → ready",
)
async def advance(ticket_id: UUID, runtime: RuntimeDep) -> TicketView:
    await handlers.advance_ticket(runtime.uow(), ticket_id)
    async with runtime.db.read() as conn:
        row = await repository.ticket(conn, ticket_id)
    return ticket_view(row)


@router.get("/inventory", response_model=Inventory, summary="Stock per ingredient")
async def inventory(runtime: RuntimeDep) -> Inventory:
    async with runtime.db.read() as conn:
        rows = await repository.all_stock(conn)
    return Inventory(
        items=[
            IngredientView(
                ingredient=r.name, on_hand=r.on_hand, reserved=r.reserved, consumed=r.consumed, received=r.received
            )
            for r in rows
        ]
    )


@router.put("/inventory/{ingredient}", response_model=IngredientView, summary="Set an ingredient's stock level")
async def restock(
    ingredient: Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")],
    body: StockLevel,
    runtime: RuntimeDep,
) -> IngredientView:
    await handlers.set_stock(runtime.uow(), ingredient, body.on_hand)
    async with runtime.db.read() as conn:
        row = (await repository.stock(conn, [ingredient])).get(ingredient)
    if row is None:  # pragma: no cover - just written
        raise NotFound(f"ingredient {ingredient} does not exist")
    return IngredientView(
        ingredient=row.name, on_hand=row.on_hand, reserved=row.reserved, consumed=row.consumed, received=row.received
    )
