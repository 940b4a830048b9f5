"""Telemetry's own settings: how long readings are kept, what counts as an oven out of range or
a courier arriving, how often devices hear that a device is alive, and the MQTT broker."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY_S = 86_400
#: The most readings a batch may ever carry (TELEMETRY_MAX_BATCH may allow fewer).
MAX_BATCH = 10_000


class TelemetrySettings(BaseSettings):
    """Read from the environment; `.env.example` lists them."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    #: Raw readings older than this are deleted (and refused when they come in).
    retention_s: int = Field(7 * DAY_S, alias="TELEMETRY_RETENTION_S", ge=60)
    #: Per-minute rollups are kept this long.
    rollup_retention_s: int = Field(90 * DAY_S, alias="TELEMETRY_ROLLUP_RETENTION_S", ge=60)
    #: How far ahead of this service's clock a reading's time may be (devices' clocks drift).
    clock_skew_s: int = Field(300, alias="TELEMETRY_CLOCK_SKEW_S", ge=0, le=DAY_S)
    #: The most readings one batch may carry.
    max_batch: int = Field(1000, alias="TELEMETRY_MAX_BATCH", ge=1, le=MAX_BATCH)
    #: Devices hears that a device sent readings at most once per device this often (keep it
    #: well under DEVICE_OFFLINE_AFTER_S).
    seen_every_s: float = Field(10.0, alias="TELEMETRY_SEEN_EVERY_S", gt=0)
    #: An oven is in range within this many degrees of its desired temperature.
    oven_tolerance_c: float = Field(40.0, alias="TELEMETRY_OVEN_TOLERANCE_C", gt=0)
    #: A courier this close to the address is arriving (CourierArriving, once per delivery).
    arriving_distance_m: float = Field(500.0, alias="TELEMETRY_ARRIVING_DISTANCE_M", gt=0)
    #: A new arrival estimate is announced when it moved by this much (DeliveryEtaChanged).
    eta_change_s: int = Field(60, alias="TELEMETRY_ETA_CHANGE_S", ge=1)
    #: The speed a standing courier's estimate assumes (metres a second; ~18 km/h in town).
    courier_speed_mps: float = Field(5.0, alias="TELEMETRY_COURIER_SPEED_MPS", gt=0)
    #: The MQTT broker the devices publish to (`mqtt://host:1883`, `mqtts://` for TLS); empty:
    #: readings come by HTTP only.
    mqtt_url: str = Field("", alias="MQTT_URL")
    #: The retention loop looks for old readings this often.
    retention_interval_s: float = Field(60.0, alias="TELEMETRY_RETENTION_INTERVAL_S", gt=0)
