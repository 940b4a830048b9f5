"""Readings over MQTT against a real Mosquitto broker the test starts: a device publishes a
batch with its key and telemetry stores it as it would over HTTP; a batch with a wrong key, one
that is not a batch and one with a bad reading are refused (logged and counted, nothing kept)
and the ones after them still come in; after the broker went away and came back, telemetry is
subscribed again; a batch received by a process that dies before taking it in is sent again."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import aiomqtt
import orjson
import pytest
from prometheus_client import REGISTRY

from pizzeria.contracts.topology import all_topics
from pizzeria.kit.clock import utcnow
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.services.telemetry.mqtt import MqttIngest, client_identifier, topic_of
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


class Taking:
    """Stands in for telemetry's ingest behind the MQTT client: records each batch it is
    handed; while `dies` it never returns (the process dies before its transaction commits);
    a batch whose key is `fails` raises as a bug would."""

    def __init__(self, *, dies: bool, fails: str = "") -> None:
        self.dies = dies
        self.fails = fails
        self.batches: list[tuple[uuid.UUID, str]] = []
        self.settings = type("Settings", (), {"max_batch": 1000})()

    async def __call__(self, uow: Any, device_id: uuid.UUID, key: str, batch: Any, *, source: str) -> None:
        self.batches.append((device_id, key))
        if key == self.fails:
            raise ValueError("a bug")
        if self.dies:
            await asyncio.Event().wait()


async def until(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def subscribed(mqtt: Mosquitto, ingest: Taking, identifier: str | None = None) -> AsyncIterator[MqttIngest]:
    """A telemetry MQTT client (the same session each time, unless `identifier` names another)
    running until the block ends, as a process ends when it is killed: whatever it was doing is
    abandoned."""
    client = MqttIngest(cast(Any, None), cast(Any, ingest), mqtt.url, identifier=identifier)
    client.runtime = cast(Any, type("Runtime", (), {"uow": lambda self: None})())
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.subscribed.wait(), 30)
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_batch_received_by_a_process_that_dies_before_taking_it_in_is_sent_again(mqtt: Mosquitto) -> None:
    device = uuid.uuid4()
    batch = {"readings": [{"at": at(0), "lat": 40.0, "lon": 14.0}]}

    async def send(key: str) -> None:
        async with aiomqtt.Client("127.0.0.1", mqtt.port) as client:
            await client.publish(topic_of(device), orjson.dumps({"key": key, **batch}), qos=1)

    dying = Taking(dies=True)
    async with subscribed(mqtt, dying):
        await send("first")
        await until(lambda: dying.batches, "the first batch never reached telemetry")
    # Received, never taken in: the broker still holds it for the session, and sends it again.
    taking = Taking(dies=False)
    async with subscribed(mqtt, taking):
        await until(lambda: taking.batches, "the batch received before the crash was not sent again")
        assert taking.batches[0] == (device, "first")
    # Taken in, so acknowledged: the next process of the session gets only what comes after.
    after = Taking(dies=False)
    async with subscribed(mqtt, after):
        await send("second")
        await until(lambda: after.batches, "the second batch never reached telemetry")
        assert after.batches[0] == (device, "second"), "a batch taken in was sent again"


async def test_a_batch_that_cannot_be_taken_in_is_dropped_not_held_forever(mqtt: Mosquitto) -> None:
    """A batch that fails for a reason that will not pass is acknowledged (logged and counted):
    held, it would come back first after every restart and stop every batch behind it."""
    device = uuid.uuid4()
    batch = {"readings": [{"at": at(0), "lat": 40.0, "lon": 14.0}]}

    async def send(key: str) -> None:
        async with aiomqtt.Client("127.0.0.1", mqtt.port) as client:
            await client.publish(topic_of(device), orjson.dumps({"key": key, **batch}), qos=1)

    before = rejected("error")
    failing = Taking(dies=False, fails="poison")
    async with subscribed(mqtt, failing):
        await send("poison")
        await send("good")
        await until(lambda: len(failing.batches) == 2, "the batch behind the failing one never came")
    assert [key for _, key in failing.batches] == ["poison", "good"]
    assert rejected("error") == before + 1
    after = Taking(dies=False)
    async with subscribed(mqtt, after):
        await send("next")
        await until(lambda: after.batches, "the next batch never reached telemetry")
        assert after.batches[0] == (device, "next"), "the failing batch came back"


async def test_replicas_without_a_number_share_the_batches_without_pushing_each_other_off(mqtt: Mosquitto) -> None:
    """Two replicas as Compose or a Kubernetes Deployment runs them: the same environment (no
    `PIZZERIA_REPLICA`), hosts of their own. Each keeps its connection and session, and each
    batch reaches one of them. (With one client id the broker would drop each in turn as the
    other connected, and batches would wait on whichever was away.)"""
    device = uuid.uuid4()
    first, second = Taking(dies=False), Taking(dies=False)
    names = client_identifier({}, "telemetry-7d9f-abc12"), client_identifier({}, "telemetry-7d9f-xyz34")
    async with subscribed(mqtt, first, names[0]) as a, subscribed(mqtt, second, names[1]) as b:
        async with aiomqtt.Client("127.0.0.1", mqtt.port) as client:
            for n in range(20):
                batch = {"key": f"batch-{n}", "readings": [{"at": at(n), "lat": 40.0, "lon": 14.0}]}
                await client.publish(topic_of(device), orjson.dumps(batch), qos=1)
        await until(lambda: len(first.batches) + len(second.batches) >= 20, "not every batch reached a replica")
        keys = sorted(key for _, key in first.batches + second.batches)
        assert keys == sorted(f"batch-{n}" for n in range(20)), "a batch was lost or taken twice"
        assert first.batches, "the replicas did not share the subscription"
        assert second.batches, "the replicas did not share the subscription"
        assert (a.subscriptions, b.subscriptions) == (1, 1), "a replica was pushed off and connected again"
        assert a.subscribed.is_set()
        assert b.subscribed.is_set()


async def test_a_replica_that_stops_leaves_the_subscription_so_no_batch_waits_for_it(mqtt: Mosquitto) -> None:
    """A replica stopped for good (replaced by a container of another name) leaves the shared
    subscription as it stops: every batch published afterwards reaches the replica that stays.
    (Its session kept subscribed, the broker would queue every other batch there, for a client
    that never comes back.)"""
    device = uuid.uuid4()
    leaving, staying = Taking(dies=False), Taking(dies=False)
    async with subscribed(mqtt, staying, client_identifier({}, "telemetry-1-staying")):
        async with subscribed(mqtt, leaving, client_identifier({}, "telemetry-1-leaving")):
            pass
        async with aiomqtt.Client("127.0.0.1", mqtt.port) as client:
            for n in range(10):
                batch = {"key": f"batch-{n}", "readings": [{"at": at(n), "lat": 40.0, "lon": 14.0}]}
                await client.publish(topic_of(device), orjson.dumps(batch), qos=1)
        await until(lambda: len(staying.batches) == 10, "batches published after a replica left did not all come")
    assert [key for _, key in staying.batches] == [f"batch-{n}" for n in range(10)]
    assert leaving.batches == []
