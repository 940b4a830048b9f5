"""Telemetry composition root: the ingest of the devices' readings (batch HTTP, and MQTT when
MQTT_URL is set), the consumer that keeps telemetry's copy of devices and deliveries, and the
retention loop."""

from __future__ import annotations

from fastapi import FastAPI

from pizzeria.chassis.service import open_runtime, service_app
from pizzeria.contracts.topology import CONSUMER_GROUPS
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.services.telemetry.api import device_router, router
from pizzeria.services.telemetry.deps import TelemetryParts
from pizzeria.services.telemetry.handlers import build_handlers
from pizzeria.services.telemetry.ingest import Ingest
from pizzeria.services.telemetry.mqtt import MqttIngest, turns_lock
from pizzeria.services.telemetry.retention import Retention
from pizzeria.services.telemetry.settings import TelemetrySettings
from pizzeria.services.telemetry.tables import MIGRATIONS

NAME = "telemetry"


def create_app(settings: Settings | None = None, own: TelemetrySettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    own = own or TelemetrySettings()
    runtime = open_runtime(NAME, settings)
    ingest = Ingest(own)
    runtime.subscribe(NAME, build_handlers(), topics=CONSUMER_GROUPS[NAME])
    retention = Retention(runtime, own)
    runtime.add_loop("retention", retention.step, interval=own.retention_interval_s)
    if own.mqtt_url:
        # One replica at a time on PostgreSQL (see mqtt.py).
        mqtt = MqttIngest(runtime, ingest, own.mqtt_url, lock=turns_lock(runtime.db))
        runtime.add_worker(mqtt.run, "mqtt-ingest")
    return service_app(
        runtime,
        TelemetryParts(settings=own, ingest=ingest),
        migrations=MIGRATIONS,
        routers=[router, device_router],
        description="Telemetry: the devices' readings as time series, and the events they make.",
    )
