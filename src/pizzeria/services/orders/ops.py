"""Operators' view of the order sagas (the gateway's `/ops/sagas` reads it)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.kit.auth import require_roles
from pizzeria.kit.errors import NotFound
from pizzeria.messaging import saga
from pizzeria.messaging.saga import SagaState

router = APIRouter(prefix="/api/v1/ops/sagas", tags=["ops"], dependencies=[Depends(require_roles("admin"))])


class SagaView(BaseModel):
    id: str
    type: str
    state: SagaState
    step: int
    reason: str | None
    deadline_at: datetime | None
    resends: int
    created_at: datetime
    updated_at: datetime
    log: list[dict[str, Any]] | None = None


class SagaList(BaseModel):
    items: list[SagaView]
    counts: dict[str, int]


def view(found: saga.Saga, log: list[dict[str, Any]] | None = None) -> SagaView:
    return SagaView(
        id=found.id,
        type=found.type,
        state=found.state,
        step=found.step,
        reason=found.reason,
        deadline_at=found.deadline_at,
        resends=found.resends,
        created_at=found.created_at,
        updated_at=found.updated_at,
        log=log,
    )


@router.get("", response_model=SagaList, summary="Sagas, most recently changed first, and counts by state")
async def list_sagas(
    runtime: RuntimeDep,
    state: Annotated[SagaState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    oldest_first: Annotated[bool, Query(description="the sagas left unchanged longest first")] = False,
) -> SagaList:
    async with runtime.db.read() as conn:
        found = await saga.listing(conn, state=state.value if state else None, limit=limit, oldest_first=oldest_first)
        counts = await saga.counts(conn)
    return SagaList(items=[view(s) for s in found], counts=counts)


@router.get("/{saga_id}", response_model=SagaView, summary="One saga with its log")
async def get_saga(saga_id: str, runtime: RuntimeDep) -> SagaView:
    async with runtime.db.read() as conn:
        row = await saga.load(conn, saga_id)
        if row is None:
            raise NotFound(f"saga {saga_id} does not exist")
        log = await saga.history(conn, saga_id)
    return view(row, log)
