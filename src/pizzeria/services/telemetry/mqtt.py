"""Readings over MQTT, the devices' own protocol (when MQTT_URL is set).

A device publishes a batch to `pizzeria/devices/<device_id>/telemetry` (QoS 1), its payload the
body of the HTTP route plus the device's key:

    {"key": "<the device's key>", "readings": [{"at": "2026-11-29T12:00:00.250Z", "temperature_c": 431.5}]}

and telemetry takes it in exactly as a batch sent over HTTP (the same checks, idempotent by
device and time). Replicas share the subscription (`$share/telemetry/...`): each batch goes to
one of them.

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
import contextlib
import os
import socket
import ssl
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit
from uuid import UUID

import aiomqtt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pizzeria.chassis.addresses import REPLICA_VARIABLE, replica_number
from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.auth import InvalidDeviceKey
from pizzeria.kit.db import is_transient_error
from pizzeria.kit.errors import ValidationFailed
from pizzeria.kit.logging import get_logger
from pizzeria.services.telemetry.domain import Reading
from pizzeria.services.telemetry.ingest import Ingest
from pizzeria.services.telemetry.metrics import readings_rejected
from pizzeria.services.telemetry.settings import MAX_BATCH

log = get_logger(__name__)

TOPIC = "pizzeria/devices/+/telemetry"
#: Replicas of telemetry share one subscription: a batch reaches one of them.
SUBSCRIPTION = f"$share/telemetry/{TOPIC}"
MAX_BACKOFF_S = 10.0
#: How long a stopping replica gives itself to leave the subscription and take in what it was
#: sent (the supervisor and Kubernetes wait longer before they kill), and how long a quiet
#: connection means nothing more is coming.
LEAVE_S = 5.0
LEAVE_QUIET_S = 0.3


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


def client_identifier(environ: Mapping[str, str] = os.environ, host: str | None = None) -> str:
    """This process's MQTT client id, which names its persistent session at the broker: the
    same after a restart (the session, with the batches queued for it, is taken up again) and
    different for each replica running at once, since a broker drops a client when another
    connects with its id (two replicas with one id would push each other off for good).
    The supervisor numbers its replicas (`PIZZERIA_REPLICA`); replicas without a number
    (Compose's `deploy.replicas`, a Kubernetes Deployment) are told apart by their host name,
    which each container has to itself and keeps when it restarts."""
    if REPLICA_VARIABLE in environ:
        return f"pizzeria-telemetry-{replica_number(environ)}"
    return f"pizzeria-telemetry-{host if host is not None else socket.gethostname()}"


class MqttIngest:
    """Subscribes to the devices' telemetry topics and takes each batch in; connects again
    (with a growing pause) whenever the broker goes away."""

    def __init__(self, runtime: ServiceRuntime, ingest: Ingest, url: str, *, identifier: str | None = None) -> None:
        self.runtime = runtime
        self.identifier = identifier or client_identifier()
        self.ingest = ingest
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
        #: How many times it has subscribed: once, unless the connection was lost.
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
        backoff = 0.5
        while True:
            try:
                async with self.client() as client:
                    await client.subscribe(SUBSCRIPTION, qos=1)
                    self.subscriptions += 1
                    self.subscribed.set()
                    log.info(
                        "subscribed to the devices' telemetry",
                        broker=f"{self.hostname}:{self.port}",
                        client_id=self.identifier,
                    )
                    backoff = 0.5
                    try:
                        async for message in client.messages:
                            await self.taken(client, message)
                    except asyncio.CancelledError:
                        await self.leave(client)
                        raise
            except aiomqtt.MqttError as exc:
                self.subscribed.clear()
                log.warning("MQTT broker unreachable; connecting again", error=str(exc), backoff_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def taken(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Take a batch in, then acknowledge it to the broker."""
        await self.take(message.topic.value, bytes(message.payload or b""))
        client._client.ack(message.mid, message.qos)

    async def leave(self, client: aiomqtt.Client) -> None:
        """On the way out (the process stops): leave the shared subscription, so that the broker
        sends every batch from then on to the replicas that stay, and take in what it had sent
        here already. A replica that comes back under another name (a new container) does not
        find its session again: what the broker had queued for it would wait there for good.
        A batch whose taking in was interrupted stays unacknowledged in the session (as in a
        crash); bounded by `LEAVE_S` and by whatever stops the process."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(LEAVE_S):
                await client.unsubscribe(SUBSCRIPTION)
                self.subscribed.clear()
                # Everything sent before the unsubscription was acknowledged has arrived by now;
                # what the broker held back (too many unacknowledged) follows the acks.
                while True:
                    try:
                        async with asyncio.timeout(LEAVE_QUIET_S):
                            message = await anext(client.messages)
                    except TimeoutError:
                        return
                    await self.taken(client, message)
        log.warning("MQTT: left before every batch sent here was taken in", client_id=self.identifier)

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
