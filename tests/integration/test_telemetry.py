"""The telemetry service on SQLite and PostgreSQL, run with its real lifespan (migrations,
relay, consumer, retention) on the embedded broker, the test playing devices and delivery on
the bus: batches of readings stored once (duplicates ignored, late ones in time order), bad
batches refused whole with each reason, device keys enforced, rollups, retention, the events
the readings make (an oven's excursion, a courier arriving, estimates, a device seen), and who
may read what."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from pizzeria.contracts.delivery import DeliveryCompleted, DeliveryPickedUp, GeoPoint
from pizzeria.contracts.devices import DeviceConfigurationChanged, DeviceRegistered
from pizzeria.contracts.telemetry import (
    CourierArriving,
    DeliveryEtaChanged,
    DeviceSeen,
    OvenTemperatureAlarm,
    OvenTemperatureRecovered,
)
from pizzeria.kit.auth import device_key_digest
from pizzeria.kit.clock import utcnow
from pizzeria.messaging.broker import Broker
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.services.telemetry.retention import Retention
from pizzeria.services.telemetry.settings import TelemetrySettings
from tests.integration.services import running_on
from tests.integration.test_devices import Bus as DevicesBus
from tests.integration.test_service_api import assert_problem
from tests.support.participant import decode
from tests.support.tokens import bearer

STAFF = bearer("chef", "staff")
HOME = GeoPoint(lat=40.8518, lon=14.2681)


@dataclass
class Bus(DevicesBus):
    """The test's end of the broker: it reads what telemetry published, and publishes what
    devices and delivery would."""

    broker: Broker | None = None

    async def publish(self, *messages: Message) -> None:
        assert self.broker is not None
        await self.broker.publish([Envelope.wrap(m, source="/test").to_outgoing(m.topic()) for m in messages])

    async def read(self) -> None:
        """Take in what was published since (waiting a moment for it)."""
        for record in await self.consumer.fetch(100, timeout=0.1):
            self.seen.append(decode(Envelope.from_record(record)))


@dataclass
class Telemetry:
    app: FastAPI
    client: httpx.AsyncClient
    bus: Bus


@pytest.fixture(params=["sqlite", "postgres"])
async def telemetry(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Telemetry]:
    monkeypatch.setenv("TELEMETRY_SEEN_EVERY_S", "3600")  # one DeviceSeen per device in a test
    on = running_on(request.param, "telemetry", tmp_path, monkeypatch, lambda topic: topic == "telemetry.events")
    async with on as (app, client, broker, reader):
        yield Telemetry(app, client, Bus(reader, broker=broker))


@dataclass(frozen=True)
class Device:
    id: uuid.UUID
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Device-Key": self.key}

    @property
    def path(self) -> str:
        return f"/api/v1/telemetry/devices/{self.id}/readings"


async def known(t: Telemetry, kind: str, *, courier_id: str | None = None, target_c: int = 430) -> Device:
    """A device devices registered (and, for an oven, set to `target_c`), once telemetry knows it."""
    device = Device(uuid.uuid4(), f"key-{uuid.uuid4()}")
    await t.bus.publish(
        DeviceRegistered(
            device_id=device.id,
            kind=kind,  # type: ignore[arg-type]
            name=f"{kind} {device.id}",
            station="oven-1" if kind == "oven" else None,
            courier_id=courier_id,
            key_digest=device_key_digest(device.key),
        ),
        DeviceConfigurationChanged(
            device_id=device.id,
            desired={"temperature_c": target_c, "bake_profile": "neapolitan"}
            if kind == "oven"
            else {"report_interval_s": 5},
            version=1,
        ),
    )
    deadline = time.monotonic() + 20
    while True:  # known once staff see it
        listed = (await t.client.get("/api/v1/telemetry/devices", headers=STAFF)).json()["items"]
        if any(d["device_id"] == str(device.id) for d in listed):
            return device
        assert time.monotonic() < deadline, "telemetry never learnt of the device"
        await t.bus.read()


def at(seconds: float, base: datetime | None = None) -> str:
    return ((base or utcnow()) + timedelta(seconds=seconds)).isoformat()


async def send(t: Telemetry, device: Device, readings: list[dict[str, Any]]) -> httpx.Response:
    return await t.client.post(device.path, json={"readings": readings}, headers=device.headers)


async def stored(t: Telemetry, device: Device, since: datetime, until: datetime) -> list[dict[str, Any]]:
    response = await t.client.get(
        device.path, params={"since": since.isoformat(), "until": until.isoformat()}, headers=STAFF
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# -- ingest ---------------------------------------------------------------------------------------


async def test_a_batch_is_stored_once_in_time_order_whatever_order_and_however_often_it_comes(
    telemetry: Telemetry,
) -> None:
    oven = await known(telemetry, "oven")
    base = utcnow() - timedelta(minutes=10)
    late_first = [{"at": at(s, base), "temperature_c": 400 + s} for s in (3, 1, 2)]
    answer = await send(telemetry, oven, late_first)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"stored": 3, "duplicates": 0}

    again = await send(telemetry, oven, [*late_first, {"at": at(0, base), "temperature_c": 400, "door_open": True}])
    assert again.json() == {"stored": 1, "duplicates": 3}, "sent again: stored once"

    items = await stored(telemetry, oven, base - timedelta(seconds=1), base + timedelta(seconds=10))
    assert [i["temperature_c"] for i in items] == [400, 401, 402, 403]
    assert [i["door_open"] for i in items] == [True, None, None, None]
    assert items[0]["lat"] is None
    latest = (await telemetry.client.get("/api/v1/telemetry/devices", headers=STAFF)).json()["items"]
    mine = next(d for d in latest if d["device_id"] == str(oven.id))
    assert mine["temperature_c"] == 403, "the newest by the device's clock, not the last to come"


async def test_the_ingest_rate_counts_the_readings_of_the_last_window_by_the_devices_clocks(
    telemetry: Telemetry,
) -> None:
    oven, other = await known(telemetry, "oven"), await known(telemetry, "oven")
    recent = [{"at": at(-s), "temperature_c": 400} for s in range(1, 31)]
    assert (await send(telemetry, oven, recent)).status_code == 200
    assert (await send(telemetry, other, [{"at": at(-s), "temperature_c": 400} for s in (2, 4)])).status_code == 200
    old = [{"at": at(-600 - s), "temperature_c": 400} for s in range(5)]
    assert (await send(telemetry, other, old)).status_code == 200, "older than the window: not counted"

    rate = await telemetry.client.get("/api/v1/telemetry/ingest", params={"window_s": 60}, headers=STAFF)
    assert rate.status_code == 200, rate.text
    assert rate.json() == {"window_s": 60, "readings": 32, "per_second": round(32 / 60, 2), "devices": 2}
    courier = bearer("rider", "courier")
    assert (await telemetry.client.get("/api/v1/telemetry/ingest", headers=courier)).status_code == 403
    too_wide = await telemetry.client.get("/api/v1/telemetry/ingest", params={"window_s": 0}, headers=STAFF)
    assert too_wide.status_code == 422


async def test_a_batch_with_bad_readings_is_refused_whole_naming_each(telemetry: Telemetry) -> None:
    tracker = await known(telemetry, "tracker", courier_id="courier-bad")
    base = utcnow() - timedelta(minutes=1)
    batch = [
        {"at": at(0, base), "lat": 40.0, "lon": 14.0},
        {"at": at(1, base), "lat": 95.0, "lon": 14.0},
        {"at": at(2, base), "lat": 40.0, "lon": 14.0, "temperature_c": 20},
        {"at": at(3, base), "lat": 40.0},
        {"at": at(3600)},
    ]
    refused = assert_problem(await send(telemetry, tracker, batch), 422, "validation-failed")
    named = {e["field"] for e in refused["errors"]}
    assert {"readings.1.lat"} <= named, refused
    # Values of the wrong kind, a missing one, the future: named once the shape is right.
    shaped = [batch[0], batch[2], batch[3], {"at": at(3600), "lat": 1.0, "lon": 1.0}]
    refused = assert_problem(await send(telemetry, tracker, shaped), 422, "validation-failed")
    assert {e["field"] for e in refused["errors"]} == {"readings.1.temperature_c", "readings.2.lon", "readings.3.at"}
    assert "not stored" in refused["detail"]
    assert await stored(telemetry, tracker, base - timedelta(minutes=1), utcnow()) == [], "nothing of it was kept"

    for body in ({"readings": []}, {"readings": "x"}, {"readings": [{"at": "yesterday", "lat": 1, "lon": 1}]}, {}):
        answer = await telemetry.client.post(tracker.path, json=body, headers=tracker.headers)
        assert_problem(answer, 422, "validation-failed")
    # The batch is parsed from its bytes by pydantic (kit.http.JsonBody): what is not JSON, or
    # not said to be, is the same 422 as any bad body, naming what is wrong.
    good = orjson.dumps({"readings": [batch[0]]})
    for content, media, field in (
        (b'{"readings": [', "application/json", "body"),
        (b"", "application/json", "body"),
        (good, "text/plain", "body"),
        (
            b'{"readings": [{"at": "%s", "lat": "40.0", "lon": 14.0}]}' % at(0, base).encode(),
            "application/json",
            "readings.0.lat",
        ),
        (b'{"readings": [{"at": "%s", "lat": true, "lon": 14.0}]}' % at(0, base).encode(), None, "readings.0.lat"),
    ):
        headers = {**tracker.headers, **({"content-type": media} if media else {})}
        answer = await telemetry.client.post(tracker.path, content=content, headers=headers)
        refused = assert_problem(answer, 422, "validation-failed")
        assert any(e["field"].startswith(field) for e in refused["errors"]), (content, refused)
    too_many = [{"at": at(-n / 1000), "lat": 1.0, "lon": 1.0} for n in range(1001)]
    refused = assert_problem(await send(telemetry, tracker, too_many), 422, "validation-failed")
    assert "at most 1000" in refused["detail"]


async def test_only_the_devices_own_key_lets_its_readings_in(telemetry: Telemetry) -> None:
    oven = await known(telemetry, "oven")
    other = await known(telemetry, "oven")
    reading = [{"at": at(0), "temperature_c": 420}]
    for headers in ({}, {"X-Device-Key": ""}, {"X-Device-Key": "guess"}, other.headers, STAFF):
        answer = await telemetry.client.post(oven.path, json={"readings": reading}, headers=headers)
        problem = assert_problem(answer, 401, "invalid-device-key")
        assert "X-Device-Key" in answer.headers["www-authenticate"], problem
    # No key is refused before the body is read: a caller without one learns nothing of it.
    for body in ({}, {"readings": "x"}):
        answer = await telemetry.client.post(oven.path, json=body)
        assert_problem(answer, 401, "invalid-device-key")
    unknown = Device(uuid.uuid4(), oven.key)
    assert_problem(await send(telemetry, unknown, reading), 401, "invalid-device-key")
    assert (await send(telemetry, oven, reading)).json()["stored"] == 1


async def test_readings_fold_into_per_minute_rollups_and_late_ones_fold_in_too(telemetry: Telemetry) -> None:
    oven = await known(telemetry, "oven")
    minute = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=5)
    await send(
        telemetry, oven, [{"at": at(s, minute), "temperature_c": t} for s, t in ((1, 400), (20, 420), (61, 430))]
    )
    await send(telemetry, oven, [{"at": at(40, minute), "temperature_c": 380, "door_open": True}])
    await send(telemetry, oven, [{"at": at(40, minute), "temperature_c": 999}])  # a duplicate counts nothing
    response = await telemetry.client.get(
        f"/api/v1/telemetry/devices/{oven.id}/rollups",
        params={"since": minute.isoformat(), "until": (minute + timedelta(minutes=2)).isoformat()},
        headers=STAFF,
    )
    assert response.status_code == 200, response.text
    rows = {(r["metric"], r["minute"]): r for r in response.json()["items"]}
    first = minute.isoformat().replace("+00:00", "Z")
    temperature = rows[("temperature_c", first)]
    assert (temperature["low"], temperature["high"], temperature["count"]) == (380, 420, 3)
    assert temperature["average"] == pytest.approx(400)
    assert rows[("door_open", first)]["count"] == 1
    assert len([k for k in rows if k[0] == "temperature_c"]) == 2


async def test_retention_deletes_old_readings_and_keeps_rollups_longer(telemetry: Telemetry) -> None:
    oven = await known(telemetry, "oven")
    now = utcnow()
    old, recent = now - timedelta(hours=3), now - timedelta(minutes=1)
    await send(telemetry, oven, [{"at": at(0, old), "temperature_c": 400}, {"at": at(0, recent), "temperature_c": 410}])
    runtime = telemetry.app.state.runtime
    keep_an_hour = TelemetrySettings(TELEMETRY_RETENTION_S=3600, TELEMETRY_ROLLUP_RETENTION_S=4 * 3600)  # type: ignore[call-arg]
    assert await Retention(runtime, keep_an_hour).step() is False
    items = await stored(telemetry, oven, now - timedelta(hours=4), now)
    assert [i["temperature_c"] for i in items] == [410]
    rollups = (
        await telemetry.client.get(
            f"/api/v1/telemetry/devices/{oven.id}/rollups",
            params={"since": (now - timedelta(hours=4)).isoformat()},
            headers=STAFF,
        )
    ).json()["items"]
    assert len([r for r in rollups if r["metric"] == "temperature_c"]) == 2, "rollups outlive raw readings"
    keep_rollups_two_hours = TelemetrySettings(TELEMETRY_RETENTION_S=3600, TELEMETRY_ROLLUP_RETENTION_S=7200)  # type: ignore[call-arg]
    await Retention(runtime, keep_rollups_two_hours).step()
    rollups = (
        await telemetry.client.get(
            f"/api/v1/telemetry/devices/{oven.id}/rollups",
            params={"since": (now - timedelta(hours=4)).isoformat()},
            headers=STAFF,
        )
    ).json()["items"]
    assert len([r for r in rollups if r["metric"] == "temperature_c"]) == 1


# -- what the readings mean -----------------------------------------------------------------------


async def test_an_ovens_excursion_is_announced_once_and_its_end_once(telemetry: Telemetry) -> None:
    oven = await known(telemetry, "oven", target_c=430)
    base = utcnow() - timedelta(minutes=2)
    heating = [{"at": at(s, base), "temperature_c": t} for s, t in enumerate((20, 200, 380, 425))]
    await send(telemetry, oven, heating)
    hot = [{"at": at(10 + s, base), "temperature_c": t} for s, t in enumerate((480, 495, 500))]
    await send(telemetry, oven, hot[:1])
    await send(telemetry, oven, hot[1:])
    await send(telemetry, oven, [{"at": at(5, base), "temperature_c": 300}])  # late: stored, changes nothing
    await send(
        telemetry, oven, [{"at": at(20, base), "temperature_c": 440}, {"at": at(21, base), "temperature_c": 431}]
    )
    bus = telemetry.bus
    await bus.until(lambda _: bool(bus.of(OvenTemperatureRecovered, device_id=oven.id)), "the oven back in range")
    await bus.until(lambda _: bool(bus.of(DeviceSeen, device_id=oven.id)), "the oven seen")
    alarms = bus.of(OvenTemperatureAlarm, device_id=oven.id)
    assert [(a.direction, a.temperature_c, a.low_c, a.high_c) for a in alarms] == [("high", 480, 390, 470)]
    assert [r.temperature_c for r in bus.of(OvenTemperatureRecovered, device_id=oven.id)] == [440]
    assert len(bus.of(DeviceSeen, device_id=oven.id)) == 1, "devices hears of it at most once a period"
    state = next(
        d
        for d in (await telemetry.client.get("/api/v1/telemetry/devices?kind=oven", headers=STAFF)).json()["items"]
        if d["device_id"] == str(oven.id)
    )
    assert state["oven_state"] == "in_range"


async def test_a_courier_on_the_way_makes_estimates_and_arrives_once(telemetry: Telemetry) -> None:
    courier = str(uuid.uuid4())
    tracker = await known(telemetry, "tracker", courier_id=courier)
    order_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    await telemetry.bus.publish(
        DeliveryPickedUp(
            order_id=order_id,
            delivery_id=delivery_id,
            courier_id=uuid.UUID(courier),
            at=utcnow(),
            customer_id="cust-1",
            destination=HOME,
        )
    )
    customer, stranger = bearer("cust-1"), bearer("cust-2")
    where = f"/api/v1/telemetry/orders/{order_id}/courier"
    deadline = time.monotonic() + 20
    while (answer := await telemetry.client.get(where, headers=customer)).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        await telemetry.bus.read()
    assert answer.json()["position"] is None, "no reading yet"

    base = utcnow() - timedelta(seconds=30)
    far = {"lat": HOME.lat + 0.018, "lon": HOME.lon, "speed_mps": 6.0, "battery_pct": 80.0}  # ~2 km
    near = {"lat": HOME.lat + 0.003, "lon": HOME.lon, "speed_mps": 6.0}  # ~330 m
    await send(telemetry, tracker, [{"at": at(0, base), **far}])
    await send(telemetry, tracker, [{"at": at(1, base), **far, "speed_mps": 5.9}])  # hardly moved: no new estimate
    await send(telemetry, tracker, [{"at": at(10, base), **near}, {"at": at(11, base), **near}])
    await send(telemetry, tracker, [{"at": at(12, base), "lat": HOME.lat, "lon": HOME.lon, "speed_mps": 0.0}])
    bus = telemetry.bus
    await bus.until(lambda _: len(bus.of(DeliveryEtaChanged, order_id=order_id)) >= 2, "two estimates")
    arriving = bus.of(CourierArriving, order_id=order_id)
    assert len(arriving) == 1, arriving
    assert (arriving[0].customer_id, arriving[0].courier_id) == ("cust-1", courier)
    assert 300 < arriving[0].distance_m < 360
    assert arriving[0].eta_s == 56
    estimates = [e.eta_s for e in bus.of(DeliveryEtaChanged, order_id=order_id)]
    assert estimates[0] == pytest.approx(334, abs=2)
    assert estimates[1] == 56

    seen = (await telemetry.client.get(where, headers=customer)).json()
    assert seen["position"]["lat"] == HOME.lat
    assert seen["eta_s"] == 0
    assert seen["distance_m"] == 0
    assert seen["destination"] == {"lat": HOME.lat, "lon": HOME.lon}
    assert_problem(await telemetry.client.get(where, headers=stranger), 404, "not-found")
    own = await telemetry.client.get(
        f"/api/v1/telemetry/couriers/{courier}/position", headers=bearer(courier, "courier")
    )
    assert own.json()["device_id"] == str(tracker.id)
    for path in (f"/api/v1/telemetry/couriers/{courier}/position", tracker.path):
        assert_problem(await telemetry.client.get(path, headers=bearer("other", "courier")), 404, "not-found")
    assert_problem(await telemetry.client.get(tracker.path, headers=customer), 403, "forbidden")
    assert (await telemetry.client.get(tracker.path, headers=bearer(courier, "courier"))).status_code == 200

    await bus.publish(
        DeliveryCompleted(order_id=order_id, delivery_id=delivery_id, courier_id=uuid.UUID(courier), at=utcnow())
    )
    deadline = time.monotonic() + 20
    while (await telemetry.client.get(where, headers=customer)).status_code != 404:
        assert time.monotonic() < deadline, "the customer still sees the courier after the delivery"
        await telemetry.bus.read()
    assert (await telemetry.client.get(where, headers=STAFF)).json()["status"] == "delivered"
