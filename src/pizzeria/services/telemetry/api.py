"""Telemetry HTTP routes: devices send batches of readings with their own key (`X-Device-Key`);
people read them with their access token: staff and admins everything, a courier their own
tracker, a customer the courier bringing their order while it is on its way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, field_validator

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.kit.auth import PRIVILEGED, DeviceKey, Principal, require_roles
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import NotFound, ValidationFailed
from pizzeria.kit.http import JsonBody
from pizzeria.kit.schemas import FilterTime, RequestBody
from pizzeria.services.telemetry import repository
from pizzeria.services.telemetry.deps import TelemetryDep
from pizzeria.services.telemetry.domain import DeviceKind, Reading, distance_m, eta_s, from_ms, to_ms
from pizzeria.services.telemetry.metrics import readings_rejected
from pizzeria.services.telemetry.settings import MAX_BATCH

#: Routes for people: access tokens.
router = APIRouter(prefix="/api/v1/telemetry", tags=["telemetry"])
#: Routes for the devices: their own key.
device_router = APIRouter(prefix="/api/v1/telemetry", tags=["telemetry: device side"])

ViewerDep = Annotated[Principal, Depends(require_roles("courier", "staff", "admin"))]
AnyoneDep = Annotated[Principal, Depends(require_roles("customer", "courier", "staff", "admin"))]
#: The widest span one read of readings or rollups may cover.
MAX_SPAN = timedelta(days=31)


# -- the devices' route ---------------------------------------------------------------------------


class ReadingBatch(RequestBody):
    """Readings of the device the route names, in any order; at most `TELEMETRY_MAX_BATCH`."""

    readings: list[Reading] = Field(min_length=1, max_length=MAX_BATCH)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # A reading is numbers, flags and a time (strict types: text in their place is refused
        # already): no text for the NUL rule to look into, and walking hundreds of readings
        # for none would cost more than checking them.
        return value


#: A batch is read by pydantic straight from the request's bytes: a batch of 500 readings is
#: the one body on a hot path (docs/performance.md, "Telemetry").
read_batch = JsonBody(ReadingBatch)


class BatchAnswer(BaseModel):
    stored: int = Field(description="readings stored now")
    duplicates: int = Field(description="readings stored before (same device and time): ignored")


@device_router.post(
    "/devices/{device_id}/readings",
    response_model=BatchAnswer,
    summary="A device sends a batch of its readings (the device's key)",
    responses={422: {"description": "a bad reading: nothing of the batch was stored; `errors` names each"}},
    openapi_extra=read_batch.openapi,
)
async def send_readings(
    device_id: UUID,
    key: DeviceKey,  # first: a device that sent no key is refused (401) before its body is read
    runtime: RuntimeDep,
    parts: TelemetryDep,
    body: Annotated[ReadingBatch, Depends(read_batch)],
) -> BatchAnswer:
    if len(body.readings) > parts.settings.max_batch:
        readings_rejected.labels("http", "invalid").inc(len(body.readings))
        raise ValidationFailed(
            f"a batch carries at most {parts.settings.max_batch} readings; this one has {len(body.readings)}",
            errors=[{"field": "readings", "message": f"at most {parts.settings.max_batch}"}],
        )
    ingested = await parts.ingest(runtime.uow(), device_id, key, body.readings, source="http")
    return BatchAnswer(stored=ingested.stored, duplicates=ingested.duplicates)


# -- views ----------------------------------------------------------------------------------------


class LatestView(BaseModel):
    """A device and its newest reading (values it does not report are null)."""

    device_id: UUID
    kind: DeviceKind
    station: str | None
    courier_id: str | None
    at: datetime | None = Field(description="the newest reading's time (the device's clock); null: none yet")
    received_at: datetime | None
    temperature_c: float | None
    door_open: bool | None
    lat: float | None
    lon: float | None
    speed_mps: float | None
    battery_pct: float | None
    oven_state: str | None = Field(description="an oven against its range: settling, in_range, high or low")


class LatestList(BaseModel):
    items: list[LatestView]


class ReadingView(BaseModel):
    at: datetime
    temperature_c: float | None
    door_open: bool | None
    lat: float | None
    lon: float | None
    speed_mps: float | None
    battery_pct: float | None


class ReadingList(BaseModel):
    device_id: UUID
    items: list[ReadingView] = Field(description="oldest first")


class RollupView(BaseModel):
    minute: datetime
    metric: str
    low: float
    high: float
    average: float
    count: int


class RollupList(BaseModel):
    device_id: UUID
    items: list[RollupView] = Field(description="oldest minute first")


class Destination(BaseModel):
    lat: float
    lon: float


class CourierPosition(BaseModel):
    """Where the courier bringing an order is, and when they are likely there."""

    order_id: UUID
    courier_id: str
    status: str = Field(description="out (for delivery) or delivered")
    destination: Destination | None
    position: LatestView | None = Field(description="null: no reading from the courier's tracker yet")
    distance_m: float | None
    eta_s: int | None = Field(description="seconds to the address at the courier's speed, from their newest position")


def _time(at_ms: int | None) -> datetime | None:
    return None if at_ms is None else from_ms(at_ms)


def latest_view(row: Any) -> LatestView:
    return LatestView(
        device_id=row.id,
        kind=DeviceKind(row.kind),
        station=row.station,
        courier_id=row.courier_id,
        at=_time(row.last_at_ms),
        received_at=row.received_at,
        temperature_c=row.temperature_c,
        door_open=row.door_open,
        lat=row.lat,
        lon=row.lon,
        speed_mps=row.speed_mps,
        battery_pct=row.battery_pct,
        oven_state=row.oven_state if row.kind == DeviceKind.OVEN else None,
    )


# -- who sees what --------------------------------------------------------------------------------


def _sees_device(row: Any, caller: Principal) -> bool:
    """Staff and admins see every device; a courier only the tracker they carry."""
    return caller.role in PRIVILEGED or (row.kind == DeviceKind.TRACKER and row.courier_id == caller.user_id)


async def _visible_device(runtime: RuntimeDep, device_id: UUID, caller: Principal) -> Any:
    async with runtime.db.read() as conn:
        row = await repository.device(conn, device_id)
    if row is None or not _sees_device(row, caller):
        raise NotFound(f"device {device_id} does not exist")
    return row


def _span(since: datetime | None, until: datetime | None) -> tuple[int, int]:
    until = until or utcnow()
    since = since or until - timedelta(hours=1)
    if since >= until:
        raise ValidationFailed("`since` must come before `until`", errors=[{"field": "since", "message": "too late"}])
    if until - since > MAX_SPAN:
        raise ValidationFailed(
            f"one read covers at most {MAX_SPAN.days} days", errors=[{"field": "since", "message": "too early"}]
        )
    return to_ms(since), to_ms(until)


Since = Annotated[FilterTime | None, Query(description="from this time on (default: an hour before `until`)")]
Until = Annotated[FilterTime | None, Query(description="before this time (default: now)")]


# -- people's routes ------------------------------------------------------------------------------


@router.get("/devices", response_model=LatestList, summary="Devices and their newest readings (a courier: theirs)")
async def list_latest(
    runtime: RuntimeDep,
    caller: ViewerDep,
    kind: DeviceKind | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> LatestList:
    if caller.role not in PRIVILEGED:
        async with runtime.db.read() as conn:
            row = await repository.tracker_of(conn, caller.user_id)
        mine = row is not None and kind in (None, DeviceKind.TRACKER)
        return LatestList(items=[latest_view(row)] if mine else [])
    async with runtime.db.read() as conn:
        rows = await repository.devices_listing(conn, kind.value if kind else None, limit)
    return LatestList(items=[latest_view(r) for r in rows])


@dataclass(frozen=True)
class SeriesQuery:
    """A read of one device's series: the device (one the caller may see) and the span (ms)."""

    device_id: UUID
    since_ms: int
    until_ms: int
    limit: int


async def series_query(
    device_id: UUID,
    runtime: RuntimeDep,
    caller: ViewerDep,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> SeriesQuery:
    await _visible_device(runtime, device_id, caller)
    since_ms, until_ms = _span(since, until)
    return SeriesQuery(device_id, since_ms, until_ms, limit)


SeriesDep = Annotated[SeriesQuery, Depends(series_query)]


@router.get("/devices/{device_id}/readings", response_model=ReadingList, summary="A device's readings over a time span")
async def device_readings(query: SeriesDep, runtime: RuntimeDep) -> ReadingList:
    async with runtime.db.read() as conn:
        rows = await repository.readings_between(conn, query.device_id, query.since_ms, query.until_ms, query.limit)
    items = [
        ReadingView(
            at=from_ms(r.at_ms),
            temperature_c=r.temperature_c,
            door_open=r.door_open,
            lat=r.lat,
            lon=r.lon,
            speed_mps=r.speed_mps,
            battery_pct=r.battery_pct,
        )
        for r in rows
    ]
    return ReadingList(device_id=query.device_id, items=items)


@router.get(
    "/devices/{device_id}/rollups",
    response_model=RollupList,
    summary="A device's per-minute lowest, highest and average values over a time span",
)
async def device_rollups(query: SeriesDep, runtime: RuntimeDep) -> RollupList:
    async with runtime.db.read() as conn:
        rows = await repository.rollups_between(conn, query.device_id, query.since_ms, query.until_ms, query.limit)
    items = [
        RollupView(
            minute=from_ms(r.minute_ms),
            metric=r.metric,
            low=r.low,
            high=r.high,
            average=r.total / r.count,
            count=r.count,
        )
        for r in rows
    ]
    return RollupList(device_id=query.device_id, items=items)


class IngestRate(BaseModel):
    window_s: int
    readings: int = Field(description="readings taken in the window, by the devices' clocks")
    per_second: float
    devices: int = Field(description="devices that sent some")


StaffDep = Annotated[Principal, Depends(require_roles("staff", "admin"))]


@router.get("/ingest", response_model=IngestRate, summary="How many readings came in lately (staff and admins)")
async def ingest_rate(
    runtime: RuntimeDep, _: StaffDep, window_s: Annotated[int, Query(ge=1, le=3600)] = 60
) -> IngestRate:
    async with runtime.db.read() as conn:
        count, heard = await repository.readings_since(conn, to_ms(utcnow()) - window_s * 1000)
    return IngestRate(window_s=window_s, readings=count, per_second=round(count / window_s, 2), devices=heard)


@router.get(
    "/couriers/{courier_id}/position",
    response_model=LatestView,
    summary="A courier's newest position (a courier: their own)",
)
async def courier_position(courier_id: str, runtime: RuntimeDep, caller: ViewerDep) -> LatestView:
    if caller.role not in PRIVILEGED and courier_id != caller.user_id:
        raise NotFound(f"courier {courier_id} carries no tracker")
    async with runtime.db.read() as conn:
        row = await repository.tracker_of(conn, courier_id)
    if row is None:
        raise NotFound(f"courier {courier_id} carries no tracker")
    return latest_view(row)


@router.get(
    "/orders/{order_id}/courier",
    response_model=CourierPosition,
    summary="Where the courier bringing an order is, and its estimated arrival",
    description="A customer sees their own order's courier while it is out for delivery; a courier the orders "
    "they carry; staff and admins any.",
)
async def order_courier(order_id: UUID, runtime: RuntimeDep, parts: TelemetryDep, caller: AnyoneDep) -> CourierPosition:
    async with runtime.db.read() as conn:
        delivery = await repository.delivery(conn, order_id)
        tracker = None if delivery is None else await repository.tracker_of(conn, delivery.courier_id)
    allowed = delivery is not None and (
        caller.role in PRIVILEGED
        or (caller.role == "courier" and delivery.courier_id == caller.user_id)
        or (caller.role == "customer" and delivery.customer_id == caller.user_id and delivery.status == "out")
    )
    if not allowed:
        raise NotFound(f"order {order_id} is not out for delivery")
    position = None if tracker is None or tracker.last_at_ms is None else latest_view(tracker)
    destination = None if delivery.dest_lat is None else Destination(lat=delivery.dest_lat, lon=delivery.dest_lon)
    distance = eta = None
    if position is not None and destination is not None and position.lat is not None and position.lon is not None:
        distance = round(distance_m(position.lat, position.lon, destination.lat, destination.lon), 1)
        eta = eta_s(distance, position.speed_mps, parts.settings.courier_speed_mps)
    return CourierPosition(
        order_id=order_id,
        courier_id=delivery.courier_id,
        status=delivery.status,
        destination=destination,
        position=position,
        distance_m=distance,
        eta_s=eta,
    )
