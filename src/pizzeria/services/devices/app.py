"""Devices composition root: the registry of devices and their twins, the commands sent to
them, and the watches that take silent devices offline and expire unanswered commands."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from pizzeria.chassis.service import open_runtime, service_app
from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.services.devices.api import device_router, router
from pizzeria.services.devices.deps import DevicesParts
from pizzeria.services.devices.handlers import build_handlers
from pizzeria.services.devices.settings import DevicesSettings
from pizzeria.services.devices.tables import MIGRATIONS
from pizzeria.services.devices.watch import CommandExpiry, PresenceWatch

NAME = "devices"
#: The longest a watch sleeps: what another replica changed is seen within it.
WATCH_INTERVAL_S = 1.0


def create_app(settings: Settings | None = None, own: DevicesSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    own = own or DevicesSettings()
    runtime = open_runtime(NAME, settings)
    # Telemetry's word that a device's readings came in keeps its presence.
    runtime.subscribe(NAME, build_handlers(), topics=CONSUMER_GROUPS[NAME])
    presence = PresenceWatch(runtime, timedelta(seconds=own.offline_after_s))
    runtime.add_loop("device-presence", presence.step, interval=WATCH_INTERVAL_S)
    runtime.add_loop("command-expiry", CommandExpiry(runtime).step, interval=WATCH_INTERVAL_S)
    return service_app(
        runtime,
        DevicesParts(settings=own),
        migrations=MIGRATIONS,
        routers=[router, device_router],
        description="Devices: the kitchen's ovens and the couriers' trackers, their twins and commands.",
    )
