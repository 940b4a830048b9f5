"""Readings over MQTT against a real Mosquitto broker the test starts: a device publishes a
batch with its key and telemetry stores it as it would over HTTP; a batch with a wrong key, one
that is not a batch and one with a bad reading are refused (logged and counted, nothing kept)
and the ones after them still come in; after the broker went away and came back, telemetry is
subscribed again."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from prometheus_client import REGISTRY

from pizzeria.contracts.topology import all_topics
from pizzeria.kit.clock import utcnow
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.services.telemetry.mqtt import topic_of
from tests.integration.services import embedded_settings, running
from tests.integration.test_telemetry import STAFF, Bus, Device, Telemetry, at, known, stored
from tests.support.mosquitto import Mosquitto


@pytest.fixture
async def mqtt(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
async def telemetry(tmp_path: Path, mqtt: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Telemetry]:
    monkeypatch.setenv("MQTT_URL", mqtt.url)
    settings = embedded_settings(tmp_path)
    async with running("telemetry", settings) as (app, client):
        broker = broker_from_settings(settings, client_id="test-reader")
        await broker.start()
        consumer = broker.consumer("test-reader", [t for t in all_topics() if t == "telemetry.events"])
        await consumer.start()
        try:
            yield Telemetry(app, client, Bus(consumer, broker=broker))
        finally:
            await consumer.close()
            await broker.close()


async def publish(mqtt: Mosquitto, device: Device, payload: Any) -> None:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    async with aiomqtt.Client("127.0.0.1", mqtt.port) as client:
        await client.publish(topic_of(device.id), body, qos=1)


def rejected(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("pizzeria_telemetry_readings_rejected_total", {"source": "mqtt", "reason": reason})
        or 0.0
    )


async def published_until_stored(
    t: Telemetry, mqtt: Mosquitto, device: Device, readings: list[dict[str, Any]], timeout: float = 30
) -> list[dict[str, Any]]:
    """Publish the batch until telemetry has stored it (the first may go out before telemetry
    is subscribed; sent again it is a duplicate)."""
    since, until = utcnow() - timedelta(hours=1), utcnow() + timedelta(minutes=1)
    deadline = time.monotonic() + timeout
    while True:
        await publish(mqtt, device, {"key": device.key, "readings": readings})
        poll_until = time.monotonic() + 1
        while time.monotonic() < poll_until:
            items = await stored(t, device, since, until)
            if len(items) >= len(readings):
                return items
        assert time.monotonic() < deadline, f"never stored; broker log: {mqtt.log()[-2000:]}"


async def test_a_batch_published_with_the_devices_key_is_stored_and_bad_ones_are_refused(
    telemetry: Telemetry, mqtt: Mosquitto
) -> None:
    oven = await known(telemetry, "oven")
    base = utcnow() - timedelta(minutes=5)
    first = [{"at": at(2, base), "temperature_c": 410}, {"at": at(1, base), "temperature_c": 400}]
    items = await published_until_stored(telemetry, mqtt, oven, first)
    assert [i["temperature_c"] for i in items] == [400, 410]

    before = {reason: rejected(reason) for reason in ("unauthorized", "malformed", "invalid")}
    await publish(mqtt, oven, {"key": "not-its-key", "readings": [{"at": at(3, base), "temperature_c": 1}]})
    await publish(mqtt, oven, b"not json")
    await publish(mqtt, oven, {"key": oven.key, "readings": [{"at": at(4, base), "temperature_c": 1, "lat": 1.0}]})
    await publish(mqtt, oven, {"key": oven.key, "readings": [{"at": at(5, base), "temperature_c": 420}]})
    deadline = time.monotonic() + 30
    while len(items) < 3:  # the good batch after the bad ones comes in: they were passed over
        assert time.monotonic() < deadline, "the batch after the refused ones never came in"
        items = await stored(telemetry, oven, base, utcnow())
    assert [i["temperature_c"] for i in items] == [400, 410, 420], "nothing of the refused batches was kept"
    assert rejected("unauthorized") == before["unauthorized"] + 1
    assert rejected("malformed") == before["malformed"] + 1
    assert rejected("invalid") == before["invalid"] + 1

    listed = (await telemetry.client.get("/api/v1/telemetry/devices", headers=STAFF)).json()["items"]
    assert next(d for d in listed if d["device_id"] == str(oven.id))["temperature_c"] == 420


async def test_telemetry_subscribes_again_when_the_broker_comes_back(telemetry: Telemetry, mqtt: Mosquitto) -> None:
    tracker = await known(telemetry, "tracker", courier_id=str(uuid.uuid4()))
    base = utcnow() - timedelta(minutes=1)
    await published_until_stored(telemetry, mqtt, tracker, [{"at": at(0, base), "lat": 40.0, "lon": 14.0}])
    mqtt.stop()
    mqtt.start()
    again = [{"at": at(0, base), "lat": 40.0, "lon": 14.0}, {"at": at(1, base), "lat": 40.1, "lon": 14.1}]
    items = await published_until_stored(telemetry, mqtt, tracker, again)
    assert [i["lat"] for i in items] == [40.0, 40.1]
