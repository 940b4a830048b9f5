"""Devices use cases: register a device, set its desired settings, take its reports, send it
commands and settle them, and notice when it goes silent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy.exc import IntegrityError

from pizzeria.contracts.devices import (
    DeviceCommand,
    DeviceCommandAcknowledged,
    DeviceCommandExpired,
    DeviceConfigurationChanged,
    DeviceRegistered,
    DeviceWentOffline,
    DeviceWentOnline,
)
from pizzeria.contracts.telemetry import DeviceSeen
from pizzeria.kit.auth import NOT_ITS_KEY, InvalidDeviceKey
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.errors import Conflict, NotFound
from pizzeria.kit.ids import uuid7
from pizzeria.messaging.consumer import HandlerRegistry, Incoming
from pizzeria.messaging.uow import UnitOfWork, each_in_one_transaction
from pizzeria.services.devices import repository
from pizzeria.services.devices.domain import (
    DEFAULT_DESIRED,
    Command,
    CommandName,
    CommandStatus,
    DeviceKind,
    Outcome,
    command_parameters,
    desired_settings,
    merge_reported,
    new_secret,
    placement,
    secret_digest,
    secret_matches,
    silent,
)


@dataclass(frozen=True)
class Registered:
    device_id: UUID
    #: The device's secret: shown this once, stored only as a digest.
    secret: str


async def register(
    uow: UnitOfWork, kind: DeviceKind, name: str, station: str | None, courier_id: str | None
) -> Registered:
    station, courier_id = placement(kind, station, courier_id)
    secret = new_secret()
    digest = secret_digest(secret)
    device_id = uuid7()
    now = utcnow()
    desired = DEFAULT_DESIRED[kind]
    async with uow:
        clash = await repository.taken(uow.conn, name, courier_id)
        if clash is not None:
            if clash.name == name:
                raise Conflict(f"a device named {name!r} exists already")
            raise Conflict(f"courier {courier_id} carries a tracker already")
        try:
            await repository.add(
                uow.conn,
                id=device_id,
                kind=kind.value,
                name=name,
                station=station,
                courier_id=courier_id,
                secret_digest=digest,
                desired=desired,
                desired_version=1,
                reported={},
                reported_at=None,
                online=False,
                last_seen_at=None,
                created_at=now,
            )
        except IntegrityError:  # a concurrent registration of that name or courier won
            raise Conflict(f"a device named {name!r}, or a tracker of this courier, exists already") from None
        uow.emit(
            DeviceRegistered(
                device_id=device_id,
                kind=kind.value,
                name=name,
                station=station,
                courier_id=courier_id,
                key_digest=digest,
            )
        )
        uow.emit(DeviceConfigurationChanged(device_id=device_id, desired=desired, version=1))
        await uow.commit()
    return Registered(device_id, secret)


async def _device(uow: UnitOfWork, device_id: UUID) -> Any:
    device = await repository.get(uow.conn, device_id, for_update=True)
    if device is None:
        raise NotFound(f"device {device_id} does not exist")
    return device


async def set_desired(uow: UnitOfWork, device_id: UUID, values: Mapping[str, Any]) -> int:
    """Staff set what the device should run with; the new version of its desired settings."""
    async with uow:
        device = await _device(uow, device_id)
        desired = desired_settings(DeviceKind(device.kind), values)
        version: int = device.desired_version
        if desired != device.desired:
            version += 1
            await repository.update(uow.conn, device_id, desired=desired, desired_version=version)
            uow.emit(DeviceConfigurationChanged(device_id=device_id, desired=desired, version=version))
        await uow.commit()
    return version


async def _authenticated(uow: UnitOfWork, device_id: UUID, key: str) -> Any:
    """The device, locked, when `key` is its secret (401 otherwise, alike for a device that
    does not exist: a key is not a way to learn which devices do)."""
    device = await repository.get(uow.conn, device_id, for_update=True)
    if device is None or not secret_matches(key, device.secret_digest):
        raise InvalidDeviceKey(NOT_ITS_KEY)
    return device


async def report(uow: UnitOfWork, device_id: UUID, key: str, state: Mapping[str, Any]) -> None:
    """A device says what it runs with (values it names replace the ones reported before; a
    null removes one). It is online from now; DeviceWentOnline when it was not."""
    now = utcnow()
    async with uow:
        device = await _authenticated(uow, device_id, key)
        reported = merge_reported(DeviceKind(device.kind), device.reported, state)
        await repository.update(uow.conn, device_id, reported=reported, reported_at=now, last_seen_at=now, online=True)
        if not device.online:
            uow.emit(DeviceWentOnline(device_id=device_id, kind=device.kind, at=now))
        await uow.commit()


def build_handlers() -> HandlerRegistry:
    """The `devices` group: telemetry's word that readings came from a device."""
    registry = HandlerRegistry()

    @registry.on_batch(DeviceSeen)
    async def seen(items: Sequence[Incoming], uow: UnitOfWork) -> None:
        """Devices heard from through their readings are online from then; DeviceWentOnline
        for each that was not. A late word older than what is known changes nothing."""
        latest: dict[UUID, Incoming] = {}
        for item in items:
            known = latest.get(item.message.device_id)
            if known is None or item.message.at > known.message.at:
                latest[item.message.device_id] = item
        for device_id, item in latest.items():
            with item.handling():
                await heard_from(uow, device_id, as_utc(item.message.at))

    return registry


async def heard_from(uow: UnitOfWork, device_id: UUID, at: datetime) -> None:
    """The device was heard from at `at` (inside the caller's transaction)."""
    device = await repository.get(uow.conn, device_id, for_update=True)
    if device is None:
        return  # not a device of ours (any more): nothing to keep
    last_seen = as_utc(device.last_seen_at) if device.last_seen_at else None
    if last_seen is not None and at <= last_seen:
        return
    await repository.update(uow.conn, device_id, last_seen_at=at, online=True)
    if not device.online:
        uow.emit(DeviceWentOnline(device_id=device_id, kind=device.kind, at=at))


async def send_command(
    uow: UnitOfWork, device_id: UUID, command: CommandName, temperature_c: int | None, deadline: timedelta
) -> UUID:
    """Send a command to the device through the broker; it waits for the device's
    acknowledgement until the deadline."""
    now = utcnow()
    command_id = uuid7()
    async with uow:
        device = await _device(uow, device_id)
        parameters = command_parameters(DeviceKind(device.kind), command, temperature_c, device.desired)
        await repository.add_command(
            uow.conn,
            id=command_id,
            device_id=device_id,
            command=command.value,
            parameters=parameters,
            status=CommandStatus.PENDING.value,
            issued_at=now,
            deadline=now + deadline,
            settled_at=None,
            detail="",
        )
        uow.emit(
            DeviceCommand(
                command_id=command_id,
                device_id=device_id,
                command=command.value,
                parameters=parameters,
                issued_at=now,
                deadline=now + deadline,
            )
        )
        await uow.commit()
    return command_id


async def acknowledge(
    uow: UnitOfWork, device_id: UUID, command_id: UUID, key: str, outcome: Outcome, detail: str
) -> None:
    """The device answers a command: carried out or refused. Past the deadline the command
    expires instead (and the answer is a 409 problem); the same answer again changes nothing."""
    now = utcnow()
    async with uow:
        await _authenticated(uow, device_id, key)
        row = await repository.command(uow.conn, device_id, command_id, for_update=True)
        if row is None:
            raise NotFound(f"device {device_id} has no command {command_id}")
        command = Command(CommandStatus(row.status), as_utc(row.deadline))
        if _expire(uow, row, command, now):
            await repository.settle_command(uow.conn, command_id, status=command.status.value, settled_at=now)
            await uow.commit()
        if command.acknowledge(outcome, now):  # raises, expired or settled otherwise
            await repository.settle_command(
                uow.conn, command_id, status=command.status.value, settled_at=now, detail=detail
            )
            uow.emit(
                DeviceCommandAcknowledged(
                    command_id=command_id,
                    device_id=device_id,
                    command=row.command,
                    outcome=outcome.value,
                    detail=detail,
                    at=now,
                )
            )
            await uow.commit()


def _expire(uow: UnitOfWork, row: Any, command: Command, now: datetime) -> bool:
    """Expire an overdue command, announcing it; the caller writes its new status."""
    if not command.expire(now):
        return False
    uow.emit(
        DeviceCommandExpired(command_id=row.id, device_id=row.device_id, command=row.command, deadline=command.deadline)
    )
    return True


async def expire_commands(uow: UnitOfWork, due: Sequence[tuple[UUID, datetime]]) -> int:
    """Expire every command of `due` still pending past its deadline, in one transaction."""
    now = utcnow()

    async def expire(item: tuple[UUID, datetime]) -> bool:
        row = await repository.command_by_id(uow.conn, item[0])
        if row is None:
            return False
        command = Command(CommandStatus(row.status), as_utc(row.deadline))
        if not _expire(uow, row, command, now):
            return False  # acknowledged meanwhile (or by another replica's watch)
        await repository.settle_command(uow.conn, row.id, status=command.status.value, settled_at=now)
        return True

    return await each_in_one_transaction(uow, due, expire, skip=())


async def mark_offline(uow: UnitOfWork, due: Sequence[tuple[UUID, datetime]], offline_after: timedelta) -> int:
    """Every device of `due` still silent for `offline_after` goes offline, in one transaction
    (one that reported meanwhile stays online)."""
    now = utcnow()

    async def go_offline(item: tuple[UUID, datetime]) -> bool:
        device = await repository.get(uow.conn, item[0], for_update=True)
        if device is None or not device.online:
            return False
        last_seen = as_utc(device.last_seen_at) if device.last_seen_at else None
        if not silent(last_seen, now, offline_after):
            return False
        await repository.update(uow.conn, device.id, online=False)
        uow.emit(DeviceWentOffline(device_id=device.id, kind=device.kind, last_seen_at=last_seen or now, at=now))
        return True

    return await each_in_one_transaction(uow, due, go_offline, skip=())
