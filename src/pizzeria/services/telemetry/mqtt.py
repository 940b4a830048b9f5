"""Readings over MQTT, the devices' own protocol (when MQTT_URL is set).

A device publishes a batch to `pizzeria/devices/<device_id>/telemetry` (QoS 1), its payload the
body of the HTTP route plus the device's key:

    {"key": "<the device's key>", "readings": [{"at": "2026-11-29T12:00:00.250Z", "temperature_c": 431.5}]}

and telemetry takes it in exactly as a batch sent over HTTP (the same checks, idempotent by
device and time).

One broker session for the service: an MQTT broker drops a client when another connects with
its client id, and a session nobody connects to again keeps its share of the batches for good.
On PostgreSQL the replica that holds a lock of the database (`SessionLock`, "telemetry-mqtt")
takes the batches, as `pizzeria-telemetry-1`; the others wait for the lock and take the same
session over when it is let go (the replica stopped, died, or lost its database), with what the
broker queued for it meanwhile. On SQLite, where the supervisor numbers its replicas, each is
`pizzeria-telemetry-<n>`, and they share the subscription (`$share/telemetry/...`).

Why the key rides in the payload: an MQTT subscriber learns the topic and payload of a message,
never who published it, so credentials given to the broker at connect time (username and
password) prove nothing to telemetry; the broker alone could check them, against a copy of
every device's key it would have to be sent. With the key in the message, telemetry checks it
against the digest devices announced, as for HTTP. The broker's ACL must then keep the topics
write-only for devices and readable by telemetry alone (deploy/compose/mosquitto: devices
publish, only the `telemetry` user subscribes), the same trust as in the HTTPS path, where the
key is seen by the proxies that end TLS. A bad batch has no one to answer: it is logged and
counted (`pizzeria_telemetry_readings_rejected_total{source="mqtt"}`).

Delivery: at least once, end to end. Telemetry acknowledges a batch to the broker only once it
is taken in — stored, or refused for good — so one received by a process that dies before it
commits is sent again to its session (a duplicate, ignored, if it had been stored). A batch
that fails for a reason that will not pass (a bug, data the database refuses) is logged,
counted (`reason="error"`) and acknowledged: held, it would come back first after every
restart and stop the batches behind it for good. While the database is briefly away the batch
waits and the broker queues the ones behind it (deploy/compose/mosquitto: `max_queued_messages`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from urllib.parse import unquote, urlsplit
from uuid import UUID

import aiomqtt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pizzeria.chassis.addresses import replica_number
from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.auth import InvalidDeviceKey
from pizzeria.kit.db import Database, SessionLock, is_transient_error
from pizzeria.kit.errors import ValidationFailed
from pizzeria.kit.logging import get_logger
from pizzeria.services.telemetry.domain import Reading
from pizzeria.services.telemetry.ingest import Ingest
from pizzeria.services.telemetry.metrics import mqtt_subscribed, readings_rejected
from pizzeria.services.telemetry.settings import MAX_BATCH

log = get_logger(__name__)

TOPIC = "pizzeria/devices/+/telemetry"
#: Replicas of telemetry share one subscription: a batch reaches one of them.
SUBSCRIPTION = f"$share/telemetry/{TOPIC}"
MAX_BACKOFF_S = 10.0
#: The client id of the lock's holder on PostgreSQL: the one id every telemetry had before
#: replicas took turns, so that a broker's session from then is the one taken up.
HOLDER_IDENTIFIER = "pizzeria-telemetry-1"
LOCK_NAME = "telemetry-mqtt"
#: How often a replica without the lock tries for it, and the holder checks it still holds it.
LOCK_RETRY_S = 2.0
LOCK_CHECK_S = 5.0
#: How long the server waits for the holder's next check before it ends the lock's session:
#: above a check's interval and timeout (5 s) and the close after it, so that a holder cut off
#: from its database gives its broker connection up before another replica can take the lock.
LOCK_IDLE_S = 30.0
#: How long the holder tries to reach the broker before it lets another replica try.
BROKER_PATIENCE_S = 30.0


def turns_lock(db: Database) -> SessionLock | None:
    """The lock telemetry's replicas take turns by on PostgreSQL; None on SQLite (numbered
    replicas, a session each)."""
    return SessionLock(db, LOCK_NAME, idle_timeout_s=LOCK_IDLE_S) if db.is_postgres else None


class MqttBatch(BaseModel):
    """What a device publishes: its key and a batch of its readings."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=200)
    readings: list[Reading] = Field(min_length=1, max_length=MAX_BATCH)


def device_of(topic: str) -> UUID | None:
    """The device a telemetry topic names (None: not one of ours)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[:2] != ["pizzeria", "devices"] or parts[3] != "telemetry":
        return None
    try:
        return UUID(parts[2])
    except ValueError:
        return None


def topic_of(device_id: UUID) -> str:
    """Where a device publishes its readings."""
    return f"pizzeria/devices/{device_id}/telemetry"


class MqttIngest:
    """Subscribes to the devices' telemetry topics and takes each batch in; connects again
    (with a growing pause) whenever the broker goes away."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        ingest: Ingest,
        url: str,
        *,
        lock: SessionLock | None = None,
        lock_retry_s: float = LOCK_RETRY_S,
        lock_check_s: float = LOCK_CHECK_S,
        broker_patience_s: float = BROKER_PATIENCE_S,
    ) -> None:
        self.runtime = runtime
        self.ingest = ingest
        self.lock = lock
        self.lock_retry_s = lock_retry_s
        self.lock_check_s = lock_check_s
        self.broker_patience_s = broker_patience_s
        #: Since when the broker could not be reached (None while it can).
        self.unreachable_since: float | None = None
        self.identifier = HOLDER_IDENTIFIER if lock is not None else f"pizzeria-telemetry-{replica_number()}"
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise SystemExit(f"MQTT_URL must be mqtt://[user:password@]host[:port] (or mqtts://), not {url!r}")
        self.hostname = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.tls = ssl.create_default_context() if parts.scheme == "mqtts" else None
        #: True while subscribed (for tests and logs).
        self.subscribed = asyncio.Event()
        #: How many times it has subscribed.
        self.subscriptions = 0

    def client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self.hostname,
            self.port,
            username=self.username,
            password=self.password,
            identifier=self.identifier,
            # The broker keeps the subscription and queues QoS 1 batches while this replica
            # restarts.
            clean_session=False,
            tls_context=self.tls,
        )
        # A batch is acknowledged to the broker only once it is taken in (stored, or refused
        # for good): one received by a process that dies before it commits is sent again to
        # the session when it connects again (and is a duplicate, ignored, if it had been
        # stored). aiomqtt has no option for it yet, so paho's own switch, set before it
        # connects (a persistent session's queued batches come right after the connection).
        client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        if self.lock is None:
            await self.subscribed_forever()
            return
        while True:
            try:
                got = await self.lock.acquire()
            except Exception as exc:  # the database is away: try again, as for a lock taken
                log.warning("cannot ask for the MQTT lock", error=str(exc))
                got = False
            if not got:
                await asyncio.sleep(self.lock_retry_s)
                continue
            log.info("this replica takes the devices' readings over MQTT", client_id=self.identifier)
            try:
                stepped_aside = await self._while_held()
            finally:
                await self.lock.release()
            if stepped_aside:  # the others ask every `lock_retry_s`: one of them first
                await asyncio.sleep(2 * self.lock_retry_s)

    async def _while_held(self) -> bool:
        """Subscribed while the lock is held; the connection (not the session) given up as soon
        as the lock may be another replica's, which then connects as this one did. True if it
        stepped aside because the broker stayed out of its reach (another replica may reach
        it)."""
        assert self.lock is not None
        self.unreachable_since = None
        session = asyncio.create_task(self.subscribed_forever())
        try:
            while True:
                done, _ = await asyncio.wait([session], timeout=self.lock_check_s)
                if done:
                    session.result()  # it ends only by raising
                    return False
                if not await self.lock.holds():
                    log.warning("lost the MQTT lock: another replica takes the readings")
                    return False
                since = self.unreachable_since
                if since is not None and time.monotonic() - since > self.broker_patience_s:
                    log.warning("the MQTT broker is out of this replica's reach: another replica may try")
                    return True
        finally:
            session.cancel()
            await asyncio.wait([session])  # (a cancellation of this task still comes through)
            if not session.cancelled():
                session.exception()  # retrieved: what ended it was raised above, or it was cancelled
            self.subscribed.clear()
            mqtt_subscribed.set(0)

    async def subscribed_forever(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with self.client() as client:
                    await client.subscribe(SUBSCRIPTION, qos=1)
                    self.subscriptions += 1
                    self.unreachable_since = None
                    self.subscribed.set()
                    mqtt_subscribed.set(1)
                    log.info(
                        "subscribed to the devices' telemetry",
                        broker=f"{self.hostname}:{self.port}",
                        client_id=self.identifier,
                    )
                    backoff = 0.5
                    async for message in client.messages:
                        await self.take(message.topic.value, bytes(message.payload or b""))
                        client._client.ack(message.mid, message.qos)
            except aiomqtt.MqttError as exc:
                self.subscribed.clear()
                mqtt_subscribed.set(0)
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # the client's exit failed on the way out
                    raise asyncio.CancelledError from exc
                log.warning("MQTT broker unreachable; connecting again", error=str(exc), backoff_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def take(self, topic: str, payload: bytes) -> None:
        """Take one published batch in; a bad one is logged and counted, never raised."""
        device_id = device_of(topic)
        if device_id is None:
            readings_rejected.labels("mqtt", "malformed").inc()
            log.warning("MQTT message on a topic that names no device: ignored", topic=topic[:200])
            return
        try:
            batch = MqttBatch.model_validate_json(payload)
        except ValidationError as exc:
            readings_rejected.labels("mqtt", "malformed").inc()
            log.warning("MQTT batch refused", device_id=str(device_id), reason=_reasons(exc))
            return
        if len(batch.readings) > self.ingest.settings.max_batch:
            readings_rejected.labels("mqtt", "invalid").inc(len(batch.readings))
            log.warning("MQTT batch refused", device_id=str(device_id), reason="too many readings")
            return
        delay = 0.05
        while True:
            try:
                await self.ingest(self.runtime.uow(), device_id, batch.key, batch.readings, source="mqtt")
                return
            except (InvalidDeviceKey, ValidationFailed) as exc:
                log.warning("MQTT batch refused", device_id=str(device_id), reason=exc.detail)
                return
            except Exception as exc:
                if not is_transient_error(exc):
                    readings_rejected.labels("mqtt", "error").inc(len(batch.readings))
                    log.exception("MQTT batch could not be taken in: dropped", device_id=str(device_id))
                    return
                # The database is briefly away: hold the batch (and the ones behind it) and retry.
                log.warning("MQTT batch waits for the database", device_id=str(device_id), error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)


def _reasons(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors()[:5])
