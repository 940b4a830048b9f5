"""Audit log queries (administrators): by order, by user, by time range."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.kit.auth import require_roles
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.errors import BadRequest
from pizzeria.kit.schemas import FilterTime
from pizzeria.services.audit import analytics
from pizzeria.services.audit.handlers import query

router = APIRouter(prefix="/api/v1/ops", tags=["ops"], dependencies=[Depends(require_roles("admin"))])


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


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="Audit entries in the order they were recorded, by order, user (subject or actor), type, time",
)
async def audit(
    runtime: RuntimeDep,
    order_id: Annotated[str | None, Query(max_length=64)] = None,
    user_id: Annotated[str | None, Query(max_length=64)] = None,
    type: Annotated[str | None, Query(max_length=200)] = None,
    since: FilterTime | None = None,
    until: FilterTime | None = None,
    after: Annotated[int | None, Query(ge=0, description="the `next_after` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    correlation_id: Annotated[str | None, Query(max_length=64)] = None,
    newest_first: Annotated[
        bool, Query(description="the newest entries first (a live view); `next_after` is then null")
    ] = False,
) -> AuditPage:
    stmt = query(
        order_id=order_id,
        user_id=user_id,
        type_=type,
        since=since,
        until=until,
        after=after,
        limit=limit + 1,
        correlation_id=correlation_id,
        newest_first=newest_first,
    )
    async with runtime.db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    page = [AuditEntry.model_validate(dict(r._mapping)) for r in rows[:limit]]
    more = len(rows) > limit and not newest_first
    return AuditPage(items=page, next_after=page[-1].seq if more else None)


class Figures(BaseModel):
    orders: int
    orders_per_minute: float | None
    delivered: int
    cancelled: int
    revenue: int = Field(description="total of the delivered orders, in minor units")
    payment_success_rate: float | None
    delivery_time_avg_s: float | None
    delivery_time_p95_s: float | None


class BucketFigures(Figures):
    start: datetime


class TopItem(BaseModel):
    name: str
    quantity: int


class AnalyticsReport(BaseModel):
    since: datetime
    until: datetime
    bucket: Literal["hour", "day"]
    summary: Figures
    top_items: list[TopItem]
    buckets: list[BucketFigures]


class BadPeriod(BadRequest):
    type_slug = "bad-period"
    title = "Bad period"


@router.get(
    "/analytics",
    response_model=AnalyticsReport,
    summary="Business figures of the orders placed in a period, in total and per hour or day",
)
async def analytics_report(
    runtime: RuntimeDep,
    since: FilterTime | None = None,
    until: FilterTime | None = None,
    bucket: Literal["hour", "day"] = "hour",
) -> AnalyticsReport:
    until = as_utc(until) if until else utcnow()
    since = as_utc(since) if since else until - timedelta(days=1)
    if since >= until:
        raise BadPeriod("`since` must be before `until`")
    if until - since > timedelta(days=366):
        raise BadPeriod("ask for a year at most")
    async with runtime.db.read() as conn:
        return AnalyticsReport.model_validate(await analytics.report(conn, since=since, until=until, bucket=bucket))
