"""Devices: the ovens of the kitchen stations and the couriers' trackers, their twins, the
commands sent to them and whether they are online.

Commands travel to the devices on `devices.commands`, keyed by the device (a device's commands
stay in order); a device acknowledges one before its deadline or it expires. Settings values
are plain JSON scalars (an oven's `temperature_c` and `bake_profile`, a tracker's
`report_interval_s`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pizzeria.messaging.message import Message

CONTEXT = "devices"

DeviceKind = Literal["oven", "tracker"]
CommandName = Literal["preheat", "set_temperature", "reboot"]
Scalar = str | int | float | bool | None


class DeviceCommand(Message, context=CONTEXT, kind="command", key="device_id"):
    """Do this before `deadline` and acknowledge it (`POST /api/v1/devices/{id}/commands/{command_id}/ack`);
    past the deadline it has expired and must not be carried out."""

    command_id: UUID
    device_id: UUID
    command: CommandName
    #: What the command needs (`temperature_c` for preheat and set_temperature).
    parameters: dict[str, Scalar]
    issued_at: datetime
    deadline: datetime


class DeviceRegistered(Message, context=CONTEXT, key="device_id"):
    device_id: UUID
    kind: DeviceKind
    name: str
    #: The kitchen station an oven stands at (None for a tracker).
    station: str | None
    #: The account of the courier who carries a tracker (None for an oven).
    courier_id: str | None
    #: The SHA-256 (hex) of the device's key, so that services the device calls with its key
    #: (telemetry) can check it without asking devices. Safe to publish: the key is 256
    #: random bits, so its digest neither gives the key back nor can be answered without it;
    #: it checks a key, it is not one. (None: a producer from before the field.)
    key_digest: str | None = None


class DeviceConfigurationChanged(Message, context=CONTEXT, key="device_id"):
    """Staff set what the device should run with (its twin's desired settings, version `version`)."""

    device_id: UUID
    desired: dict[str, Scalar]
    version: int


class DeviceWentOnline(Message, context=CONTEXT, key="device_id"):
    """The device reported after a silence (or for the first time)."""

    device_id: UUID
    kind: DeviceKind
    at: datetime


class DeviceWentOffline(Message, context=CONTEXT, key="device_id"):
    """Nothing came from the device for longer than the silence allowed (DEVICE_OFFLINE_AFTER_S)."""

    device_id: UUID
    kind: DeviceKind
    last_seen_at: datetime
    at: datetime


class DeviceCommandAcknowledged(Message, context=CONTEXT, key="device_id"):
    """The device answered a command in time: carried out (`done`) or refused (`rejected`)."""

    command_id: UUID
    device_id: UUID
    command: CommandName
    outcome: Literal["done", "rejected"]
    detail: str
    at: datetime


class DeviceCommandExpired(Message, context=CONTEXT, key="device_id"):
    """No acknowledgement came before the command's deadline."""

    command_id: UUID
    device_id: UUID
    command: CommandName
    deadline: datetime
