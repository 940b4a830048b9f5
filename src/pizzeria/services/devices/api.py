"""Devices HTTP routes: staff and admins register devices, set their desired settings and send
them commands; a courier sees their own tracker; the devices themselves report and acknowledge
with their own key (`X-Device-Key`), not a user's token."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.kit.auth import DeviceKey, Principal, require_roles
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import NotFound
from pizzeria.kit.schemas import RequestBody
from pizzeria.services.devices import handlers, repository
from pizzeria.services.devices.deps import DevicesDep
from pizzeria.services.devices.domain import (
    MAX_DEADLINE,
    CommandName,
    CommandStatus,
    DeviceKind,
    Outcome,
    Scalar,
    difference,
)

StaffDep = Annotated[Principal, Depends(require_roles("staff", "admin"))]
ViewerDep = Annotated[Principal, Depends(require_roles("courier", "staff", "admin"))]

#: Routes for people (staff, admins, couriers): access tokens.
router = APIRouter(prefix="/api/v1", tags=["devices"])
#: Routes for the devices: their own key.
device_router = APIRouter(prefix="/api/v1", tags=["devices: device side"])

Name = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^\S(.*\S)?$")]


# -- views ---------------------------------------------------------------------------------------


class DifferenceView(BaseModel):
    setting: str
    desired: Scalar
    reported: Scalar = Field(description="null: the device has not reported this setting")


class DeviceView(BaseModel):
    id: UUID
    kind: DeviceKind
    name: str
    station: str | None
    courier_id: str | None
    online: bool
    last_seen_at: datetime | None
    desired: dict[str, Scalar]
    desired_version: int
    reported: dict[str, Scalar]
    reported_at: datetime | None
    difference: list[DifferenceView] = Field(description="desired settings the device does not report running with")
    in_sync: bool
    created_at: datetime


class DeviceList(BaseModel):
    items: list[DeviceView]


class RegisteredDevice(DeviceView):
    secret: str = Field(description="the device's key (`X-Device-Key`): shown this once, keep it on the device")


class CommandView(BaseModel):
    id: UUID
    device_id: UUID
    command: CommandName
    parameters: dict[str, Scalar]
    status: CommandStatus
    issued_at: datetime
    deadline: datetime
    settled_at: datetime | None
    detail: str


class CommandList(BaseModel):
    items: list[CommandView]


def device_view(row: Any) -> DeviceView:
    return DeviceView(**_device_fields(row))


def _device_fields(row: Any) -> dict[str, Any]:
    differences = difference(row.desired, row.reported)
    return {
        "id": row.id,
        "kind": DeviceKind(row.kind),
        "name": row.name,
        "station": row.station,
        "courier_id": row.courier_id,
        "online": row.online,
        "last_seen_at": row.last_seen_at,
        "desired": row.desired,
        "desired_version": row.desired_version,
        "reported": row.reported,
        "reported_at": row.reported_at,
        "difference": [DifferenceView(setting=d.setting, desired=d.desired, reported=d.reported) for d in differences],
        "in_sync": not differences,
        "created_at": row.created_at,
    }


def command_view(row: Any) -> CommandView:
    return CommandView(
        id=row.id,
        device_id=row.device_id,
        command=CommandName(row.command),
        parameters=row.parameters,
        status=CommandStatus(row.status),
        issued_at=row.issued_at,
        deadline=row.deadline,
        settled_at=row.settled_at,
        detail=row.detail,
    )


# -- bodies --------------------------------------------------------------------------------------


class NewDevice(RequestBody):
    kind: DeviceKind
    name: Name
    station: str | None = Field(None, description="an oven's kitchen station, e.g. `oven-1`")
    courier_id: str | None = Field(None, max_length=64, description="a tracker's courier: their account id")


class DesiredSettings(RequestBody):
    """Every setting of the device's kind: an oven's `temperature_c` (50-500) and
    `bake_profile`; a tracker's `report_interval_s` (1-600)."""

    temperature_c: int | None = None
    bake_profile: str | None = None
    report_interval_s: int | None = None


class NewCommand(RequestBody):
    command: CommandName
    temperature_c: int | None = Field(
        None, description="preheat (default: the desired temperature) and set_temperature (needed)"
    )
    deadline_s: int | None = Field(
        None,
        ge=1,
        le=int(MAX_DEADLINE.total_seconds()),
        description="how long the device has to acknowledge it (default DEVICE_COMMAND_DEADLINE_S)",
    )


class Report(RequestBody):
    state: dict[str, Any] = Field(
        description="what the device runs with and other plain values; each replaces the one reported before, "
        "null removes it"
    )


class Acknowledgement(RequestBody):
    outcome: Outcome
    detail: str = Field("", max_length=200)


# -- people's routes -----------------------------------------------------------------------------


def _visible(row: Any, caller: Principal) -> bool:
    """Staff and admins see every device; a courier only the tracker they carry."""
    return caller.role != "courier" or (row.kind == DeviceKind.TRACKER and row.courier_id == caller.user_id)


@router.get("/devices", response_model=DeviceList, summary="Devices (a courier: their own tracker)")
async def list_devices(
    runtime: RuntimeDep,
    caller: ViewerDep,
    kind: DeviceKind | None = None,
    station: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> DeviceList:
    courier = None
    if caller.role == "courier":  # their own tracker, whatever they ask for
        if kind is DeviceKind.OVEN:
            return DeviceList(items=[])
        kind, courier = DeviceKind.TRACKER, caller.user_id
    async with runtime.db.read() as conn:
        rows = await repository.listing(
            conn, kind=kind.value if kind else None, station=station, courier_id=courier, limit=limit
        )
    return DeviceList(items=[device_view(r) for r in rows])


@router.post(
    "/devices",
    response_model=RegisteredDevice,
    status_code=201,
    summary="Register a device; its key is in the answer, this once",
)
async def register(body: NewDevice, runtime: RuntimeDep, _: StaffDep) -> RegisteredDevice:
    registered = await handlers.register(runtime.uow(), body.kind, body.name, body.station, body.courier_id)
    async with runtime.db.read() as conn:
        row = await repository.get(conn, registered.device_id)
    return RegisteredDevice(**_device_fields(row), secret=registered.secret)


@router.get("/devices/{device_id}", response_model=DeviceView, summary="A device and its twin")
async def get_device(device_id: UUID, runtime: RuntimeDep, caller: ViewerDep) -> DeviceView:
    async with runtime.db.read() as conn:
        row = await repository.get(conn, device_id)
    if row is None or not _visible(row, caller):
        raise NotFound(f"device {device_id} does not exist")
    return device_view(row)


@router.put("/devices/{device_id}/desired", response_model=DeviceView, summary="Set what the device should run with")
async def set_desired(device_id: UUID, body: DesiredSettings, runtime: RuntimeDep, _: StaffDep) -> DeviceView:
    await handlers.set_desired(runtime.uow(), device_id, body.model_dump(exclude_unset=True))
    async with runtime.db.read() as conn:
        row = await repository.get(conn, device_id)
    return device_view(row)


@router.post(
    "/devices/{device_id}/commands",
    response_model=CommandView,
    status_code=202,
    summary="Send the device a command (it waits for the device's acknowledgement until its deadline)",
)
async def send_command(
    device_id: UUID, body: NewCommand, runtime: RuntimeDep, parts: DevicesDep, _: StaffDep
) -> CommandView:
    deadline = timedelta(seconds=body.deadline_s or parts.settings.command_deadline_s)
    command_id = await handlers.send_command(runtime.uow(), device_id, body.command, body.temperature_c, deadline)
    async with runtime.db.read() as conn:
        row = await repository.command(conn, device_id, command_id)
    return command_view(row)


@router.get("/devices/{device_id}/commands", response_model=CommandList, summary="A device's commands, newest first")
async def list_commands(
    device_id: UUID, runtime: RuntimeDep, _: StaffDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> CommandList:
    async with runtime.db.read() as conn:
        if await repository.get(conn, device_id) is None:
            raise NotFound(f"device {device_id} does not exist")
        rows = await repository.commands(conn, device_id, limit)
    return CommandList(items=[command_view(r) for r in rows])


@router.get("/devices/{device_id}/commands/{command_id}", response_model=CommandView, summary="One command")
async def get_command(device_id: UUID, command_id: UUID, runtime: RuntimeDep, _: StaffDep) -> CommandView:
    async with runtime.db.read() as conn:
        row = await repository.command(conn, device_id, command_id)
    if row is None:
        raise NotFound(f"device {device_id} has no command {command_id}")
    return command_view(row)


# -- the devices' routes -------------------------------------------------------------------------


#: The most pending commands one report's answer lists (the oldest; the rest come in later answers).
PENDING_SHOWN = 20


class ReportAnswer(BaseModel):
    """What the device should run with, to catch up when its report differs."""

    desired: dict[str, Scalar]
    desired_version: int
    difference: list[DifferenceView]
    commands: list[CommandView] = Field(
        description="commands waiting for the device's acknowledgement (deadline not passed), oldest first; "
        f"at most {PENDING_SHOWN}"
    )


@device_router.post(
    "/devices/{device_id}/reports",
    response_model=ReportAnswer,
    summary="A device reports what it runs with (the device's key); the answer: what it should, and the commands "
    "waiting for it",
)
async def report(device_id: UUID, body: Report, runtime: RuntimeDep, key: DeviceKey) -> ReportAnswer:
    await handlers.report(runtime.uow(), device_id, key, body.state)
    async with runtime.db.read() as conn:
        row = await repository.get(conn, device_id)
        pending = await repository.pending_of(conn, device_id, utcnow(), PENDING_SHOWN)
    view = device_view(row)
    return ReportAnswer(
        desired=view.desired,
        desired_version=view.desired_version,
        difference=view.difference,
        commands=[command_view(c) for c in pending],
    )


@device_router.post(
    "/devices/{device_id}/commands/{command_id}/ack",
    response_model=CommandView,
    summary="A device acknowledges a command before its deadline (the device's key)",
    responses={409: {"description": "the command expired, or was acknowledged otherwise before"}},
)
async def acknowledge(
    device_id: UUID, command_id: UUID, body: Acknowledgement, runtime: RuntimeDep, key: DeviceKey
) -> CommandView:
    await handlers.acknowledge(runtime.uow(), device_id, command_id, key, body.outcome, body.detail)
    async with runtime.db.read() as conn:
        row = await repository.command(conn, device_id, command_id)
    return command_view(row)
