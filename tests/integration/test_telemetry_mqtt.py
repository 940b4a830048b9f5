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
import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY

from pizzeria.contracts.topology import all_topics
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.messaging.connect import broker_from_settings
from pizzeria.services.telemetry.mqtt import HOLDER_IDENTIFIER, MqttIngest, topic_of, turns_lock
from tests.integration.services import embedded_settings, running
from tests.integration.test_telemetry import STAFF, Bus, Device, Telemetry, at, known, stored
from tests.support.mosquitto import Mosquitto
from tests.support.polling import eventually
from tests.support.postgres import create_database, drop_database
from tests.support.tcpproxy import free_port

#: Stands in for the service's runtime: the ingests here (`Taking`) use no unit of work.
NO_RUNTIME = cast(Any, type("Runtime", (), {"uow": lambda self: None})())


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

    # the good batch after the bad ones comes in: they were passed over
    async def all_three() -> list[dict[str, Any]] | None:
        found = await stored(telemetry, oven, base, utcnow())
        return found if len(found) >= 3 else None

    items = await eventually(all_three, "the batch after the refused ones never came in", 30, every=0)
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


@contextlib.asynccontextmanager
async def subscribed(mqtt: Mosquitto, ingest: Taking) -> AsyncIterator[None]:
    """A telemetry MQTT client (the same session each time) running until the block ends, as a
    process ends when it is killed: whatever it was doing is abandoned."""
    client = MqttIngest(NO_RUNTIME, cast(Any, ingest), mqtt.url)
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.subscribed.wait(), 30)
        yield
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
        await eventually(lambda: dying.batches, "the first batch never reached telemetry", 30)
    # Received, never taken in: the broker still holds it for the session, and sends it again.
    taking = Taking(dies=False)
    async with subscribed(mqtt, taking):
        await eventually(lambda: taking.batches, "the batch received before the crash was not sent again", 30)
        assert taking.batches[0] == (device, "first")
    # Taken in, so acknowledged: the next process of the session gets only what comes after.
    after = Taking(dies=False)
    async with subscribed(mqtt, after):
        await send("second")
        await eventually(lambda: after.batches, "the second batch never reached telemetry", 30)
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
        await eventually(lambda: len(failing.batches) == 2, "the batch behind the failing one never came", 30)
    assert [key for _, key in failing.batches] == ["poison", "good"]
    assert rejected("error") == before + 1
    after = Taking(dies=False)
    async with subscribed(mqtt, after):
        await send("next")
        await eventually(lambda: after.batches, "the next batch never reached telemetry", 30)
        assert after.batches[0] == (device, "next"), "the failing batch came back"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    url = await create_database("pzmqtt")
    try:
        yield url
    finally:
        await drop_database(url)


class Replica:
    """A telemetry replica on PostgreSQL, a process of its own (its own engine): `start`, and
    `stop` as a process ends (whatever it was doing abandoned)."""

    def __init__(self, mqtt: Mosquitto | str, url: str) -> None:
        self.taking = Taking(dies=False)
        self.db = Database(url)
        self.client = MqttIngest(
            NO_RUNTIME,
            cast(Any, self.taking),
            mqtt if isinstance(mqtt, str) else mqtt.url,
            lock=turns_lock(self.db),
            lock_retry_s=0.05,
            lock_check_s=0.05,
            broker_patience_s=0.5,
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Replica:
        self.task = asyncio.create_task(self.client.run())
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.db.dispose()

    def keys(self) -> list[str]:
        return [key for _, key in self.taking.batches]


async def publish_batches(mqtt: Mosquitto, device: uuid.UUID, numbers: range) -> None:
    async with aiomqtt.Client("127.0.0.1", mqtt.port) as client:
        for n in numbers:
            batch = {"key": f"batch-{n}", "readings": [{"at": at(n), "lat": 40.0, "lon": 14.0}]}
            await client.publish(topic_of(device), orjson.dumps(batch), qos=1)


async def test_on_postgresql_one_replica_takes_the_readings_and_the_next_takes_its_session_over(
    mqtt: Mosquitto, pg_url: str
) -> None:
    """Replicas started alike (Compose's, a Kubernetes Deployment's) take turns: the holder of
    the lock takes every batch as the one broker session; when it stops, another takes that
    session over, batches queued meanwhile included. (Each with a session of its own, a session
    whose replica never came back would keep its share for good; with one id and no turns, the
    broker would drop each replica as the other connected.)"""
    device = uuid.uuid4()
    first = Replica(mqtt, pg_url).start()
    await eventually(first.client.subscribed.is_set, "no replica took the readings", 30)
    second = Replica(mqtt, pg_url).start()
    try:
        assert first.client.identifier == HOLDER_IDENTIFIER
        await publish_batches(mqtt, device, range(5))
        await eventually(lambda: len(first.keys()) == 5, "the holder did not take every batch", 30)
        assert second.keys() == []
        assert second.client.subscriptions == 0, "a second replica connected beside the holder"
        await first.stop()
        await publish_batches(mqtt, device, range(5, 10))  # the session's, whoever comes for it
        await eventually(lambda: len(second.keys()) == 5, "the next replica did not take the session over", 30)
        assert second.keys() == [f"batch-{n}" for n in range(5, 10)]
        assert first.keys() == [f"batch-{n}" for n in range(5)]
        assert second.client.subscriptions == 1
    finally:
        if not first.task or not first.task.done():
            await first.stop()
        await second.stop()


async def test_a_replica_whose_lock_went_with_its_database_session_lets_the_readings_go(
    mqtt: Mosquitto, pg_url: str
) -> None:
    """The lock lives as long as the holder's database session: ended (the server restarted,
    the connection broke), another replica may hold it already, so the holder gives its broker
    connection up at once, and takes the readings again only once it holds the lock again."""
    device = uuid.uuid4()
    holder = Replica(mqtt, pg_url).start()
    try:
        await eventually(holder.client.subscribed.is_set, "the replica did not take the readings", 30)
        admin = await asyncpg.connect(pg_url.replace("+asyncpg", "").split("?", 1)[0])
        try:
            ended = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        finally:
            await admin.close()
        assert ended == 1
        await eventually(
            lambda: holder.client.subscriptions == 2, "the replica kept its connection without the lock", 30
        )
        await publish_batches(mqtt, device, range(3))
        await eventually(lambda: len(holder.keys()) == 3, "the readings did not come back with the lock", 30)
    finally:
        await holder.stop()


async def test_a_stop_ends_the_ingest_even_when_the_client_fails_on_its_way_out(
    mqtt: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's exit can raise its own error (the connection broke while it closed) in place
    of the stop's cancellation: taken for a lost broker, the ingest would connect again, and the
    process would never stop."""
    leave = aiomqtt.Client.__aexit__

    async def failing_exit(self: aiomqtt.Client, exc_type: Any, *exc: Any) -> None:
        await leave(self, exc_type, *exc)
        if exc_type is asyncio.CancelledError:
            raise aiomqtt.MqttError("the connection broke while it closed")

    monkeypatch.setattr(aiomqtt.Client, "__aexit__", failing_exit)  # (read as the client connects)
    client = MqttIngest(NO_RUNTIME, cast(Any, Taking(dies=False)), mqtt.url)
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(client.subscribed.wait(), 30)
    try:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=10)
        assert done, "the ingest went on connecting after it was stopped"
        assert task.cancelled()
    finally:
        monkeypatch.undo()  # (its next connection closes as usual, and ends)
        if not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=30)


async def test_a_replica_that_cannot_reach_the_broker_lets_another_take_the_readings(
    mqtt: Mosquitto, pg_url: str
) -> None:
    """The holder of the lock tries to reach the broker for a while, then steps aside: a replica
    that can reach it (another node, another network) takes the readings."""
    device = uuid.uuid4()
    cut_off = Replica(f"mqtt://127.0.0.1:{free_port()}", pg_url).start()  # nothing listens there
    try:
        await eventually(
            lambda: cut_off.client.lock is not None and cut_off.client.lock.held, "it never took the lock", 30
        )
        reaching = Replica(mqtt, pg_url).start()
        try:
            await eventually(
                reaching.client.subscribed.is_set, "the replica that reaches the broker never took over", 30
            )
            await publish_batches(mqtt, device, range(3))
            await eventually(lambda: len(reaching.keys()) == 3, "the readings did not come", 30)
        finally:
            await reaching.stop()
    finally:
        await cut_off.stop()
