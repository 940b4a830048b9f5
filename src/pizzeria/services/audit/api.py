"""Audit log queries (administrators): by order, by user, by time range."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from pizzeria.kit.auth import require_roles
from pizzeria.messaging.service import Runtime
from pizzeria.services.audit.handlers import query

router = APIRouter(prefix="/api/v1/ops/audit", tags=["ops"], dependencies=[Depends(require_roles("admin"))])


class AuditEntry(BaseModel):
    seq: int
    message_id: str
    topic: str
    type: str
    source: str
    subject: str | None
    order_id: str | None
    user_id: str | None
    actor: str | None
    correlation_id: str | None
    causation_id: str | None
    trace_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_after: int | None


@router.get("", response_model=AuditPage,
            summary="Audit entries in the order they were recorded, by order, user (subject or actor), type, time")
async def audit(
    runtime: Runtime,
    order_id: Annotated[str | None, Query(max_length=64)] = None,
    user_id: Annotated[str | None, Query(max_length=64)] = None,
    type: Annotated[str | None, Query(max_length=200)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Annotated[int | None, Query(ge=0, description="the `next_after` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    stmt = query(order_id=order_id, user_id=user_id, type_=type, since=since, until=until, after=after,
                 limit=limit + 1)
    async with runtime.db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    page = [AuditEntry.model_validate(dict(r._mapping)) for r in rows[:limit]]
    return AuditPage(items=page, next_after=page[-1].seq if len(rows) > limit else None)
