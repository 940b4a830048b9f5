"""The devices service on SQLite and PostgreSQL, run with its real lifespan (migrations, relay,
watches) on the embedded broker: staff register ovens and trackers and set their desired
settings, devices report with their own key and the twin shows what differs, commands travel on
`devices.commands` and are acknowledged or expire at their deadline, a silent device goes
offline and one that reports again comes back online (each announced once), a courier sees only
their own tracker, and bad input is a clear 4xx problem that writes nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pizzeria.contracts.devices import (
    DeviceCommand,
    DeviceCommandAcknowledged,
    DeviceCommandExpired,
    DeviceConfigurationChanged,
    DeviceRegistered,
    DeviceWentOffline,
    DeviceWentOnline,
)
from pizzeria.contracts.telemetry import DeviceSeen
from pizzeria.kit.clock import utcnow
from pizzeria.messaging.broker import BrokerConsumer
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.message import Message
from pizzeria.messaging.topics import commands_topic
from tests.integration.services import running_on
from tests.integration.test_service_api import assert_problem
from tests.support.participant import decode
from tests.support.polling import eventually
from tests.support.tokens import bearer

STAFF = bearer("chef", "staff")
#: Short enough for a test to see a device go offline, long enough for a report to keep it online.
OFFLINE_AFTER_S = 1.5


@dataclass
class Bus:
    """What the service published on its topics, as the test has read it so far."""

    consumer: BrokerConsumer
    seen: list[Message] = field(default_factory=list)

    async def until(self, found: Callable[[list[Message]], bool], what: str, timeout: float = 20) -> list[Message]:
        deadline = time.monotonic() + timeout
        while not found(self.seen):
            assert time.monotonic() < deadline, f"never published: {what}; published: {self.seen}"
            for record in await self.consumer.fetch(100, timeout=0.1):
                self.seen.append(decode(Envelope.from_record(record)))
        return self.seen

    def of(self, kind: type[Message], **fields: Any) -> list[Any]:
        return [m for m in self.seen if isinstance(m, kind) and all(getattr(m, k) == v for k, v in fields.items())]


@dataclass
class Devices:
    app: FastAPI
    client: httpx.AsyncClient
    bus: Bus


@pytest.fixture(params=["sqlite", "postgres"])
async def devices(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Devices]:
    monkeypatch.setenv("DEVICE_OFFLINE_AFTER_S", str(OFFLINE_AFTER_S))
    on = running_on(request.param, "devices", tmp_path, monkeypatch, lambda topic: topic.startswith("devices."))
    async with on as (app, client, _, reader):
        yield Devices(app, client, Bus(reader))


async def register(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/devices", json=body, headers=STAFF)
    assert response.status_code == 201, response.text
    device: dict[str, Any] = response.json()
    return device


async def an_oven(client: httpx.AsyncClient, name: str = "Oven 1", station: str = "oven-1") -> dict[str, Any]:
    return await register(client, kind="oven", name=name, station=station)


def key(device: dict[str, Any]) -> dict[str, str]:
    return {"X-Device-Key": device["secret"]}


async def report(client: httpx.AsyncClient, device: dict[str, Any], state: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/api/v1/devices/{device['id']}/reports", json={"state": state}, headers=key(device))


async def view(client: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/devices/{device_id}", headers=STAFF)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


# -- the twin ------------------------------------------------------------------------------------


async def test_the_twin_shows_what_a_device_runs_with_otherwise_than_staff_want(devices: Devices) -> None:
    client = devices.client
    oven = await an_oven(client)
    device_id = uuid.UUID(oven["id"])
    assert (oven["kind"], oven["station"], oven["online"], oven["desired_version"]) == ("oven", "oven-1", False, 1)
    assert {d["setting"] for d in oven["difference"]} == {"temperature_c", "bake_profile"}, "nothing reported yet"
    assert "secret" not in await view(client, oven["id"]), "the key is shown once"

    answer = await report(client, oven, {"temperature_c": 430, "bake_profile": "roman", "door": "closed"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["difference"] == [{"setting": "bake_profile", "desired": "neapolitan", "reported": "roman"}]
    twin = await view(client, oven["id"])
    assert twin["online"]
    assert twin["last_seen_at"]
    assert not twin["in_sync"]
    assert twin["reported"] == {"temperature_c": 430, "bake_profile": "roman", "door": "closed"}

    changed = await client.put(
        f"/api/v1/devices/{oven['id']}/desired", json={"temperature_c": 300, "bake_profile": "roman"}, headers=STAFF
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["desired_version"] == 2
    assert changed.json()["difference"] == [{"setting": "temperature_c", "desired": 300, "reported": 430}]
    again = await client.put(
        f"/api/v1/devices/{oven['id']}/desired", json={"temperature_c": 300, "bake_profile": "roman"}, headers=STAFF
    )
    assert again.json()["desired_version"] == 2, "the same settings again are no new version"

    caught_up = await report(client, oven, {"temperature_c": 300, "door": None})
    assert caught_up.json() == {
        "desired": {"temperature_c": 300, "bake_profile": "roman"},
        "desired_version": 2,
        "difference": [],
        "commands": [],
    }
    twin = await view(client, oven["id"])
    assert twin["in_sync"]
    assert twin["reported"] == {"temperature_c": 300, "bake_profile": "roman"}

    bus = devices.bus
    await bus.until(lambda _: len(bus.of(DeviceConfigurationChanged, device_id=device_id)) == 2, "two versions")
    assert bus.of(DeviceRegistered, device_id=device_id)[0].station == "oven-1"
    assert [m.version for m in bus.of(DeviceConfigurationChanged, device_id=device_id)] == [1, 2]
    assert len(bus.of(DeviceWentOnline, device_id=device_id)) == 1, "online once, however many reports"


async def test_at_once_one_registration_of_a_name_wins_and_a_device_comes_online_once(devices: Devices) -> None:
    client, bus = devices.client, devices.bus
    body = {"kind": "tracker", "name": "Tracker 1", "courier_id": "rider-1"}
    answers = await asyncio.gather(*(client.post("/api/v1/devices", json=body, headers=STAFF) for _ in range(6)))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409, 409], [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert_problem(refused, 409, "conflict")
    tracker = next(a.json() for a in answers if a.status_code == 201)
    reports = await asyncio.gather(*(report(client, tracker, {"battery_pct": n}) for n in range(6)))
    assert [r.status_code for r in reports] == [200] * 6
    device_id = uuid.UUID(tracker["id"])
    # A later fact of the device, on the same partition: what the reports announced came before it.
    later = {"report_interval_s": 9}
    assert (await client.put(f"/api/v1/devices/{device_id}/desired", json=later, headers=STAFF)).status_code == 200
    await bus.until(lambda _: len(bus.of(DeviceConfigurationChanged, device_id=device_id)) == 2, "the later fact")
    assert len(bus.of(DeviceRegistered)) == 1
    assert len(bus.of(DeviceWentOnline, device_id=device_id)) == 1


async def test_a_device_reports_only_with_its_own_key(devices: Devices) -> None:
    client = devices.client
    oven, other = await an_oven(client), await an_oven(client, "Oven 2", "oven-2")
    path = f"/api/v1/devices/{oven['id']}/reports"
    body = {"state": {"temperature_c": 200}}
    for headers in ({}, {"X-Device-Key": ""}, {"X-Device-Key": "not-the-key"}, key(other), STAFF):
        problem = assert_problem(await client.post(path, json=body, headers=headers), 401, "invalid-device-key")
        assert "X-Device-Key" in problem["detail"] or "not this device" in problem["detail"]
    unknown = f"/api/v1/devices/{uuid.uuid4()}/reports"
    assert_problem(await client.post(unknown, json=body, headers=key(oven)), 401, "invalid-device-key")
    twin = await view(client, oven["id"])
    assert (twin["reported"], twin["online"]) == ({}, False), "a refused report changes nothing"
    # A device's key is no user's token either.
    assert_problem(await client.get("/api/v1/devices", headers=key(oven)), 401)


# -- commands ------------------------------------------------------------------------------------


async def send(client: httpx.AsyncClient, device: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = await client.post(f"/api/v1/devices/{device['id']}/commands", json=body, headers=STAFF)
    assert response.status_code == 202, response.text
    command: dict[str, Any] = response.json()
    return command


async def ack(client: httpx.AsyncClient, device: dict[str, Any], command_id: str, **body: Any) -> httpx.Response:
    path = f"/api/v1/devices/{device['id']}/commands/{command_id}/ack"
    return await client.post(path, json=body, headers=key(device))


async def test_a_command_goes_out_on_the_broker_and_is_acknowledged_once(devices: Devices) -> None:
    client, bus = devices.client, devices.bus
    oven = await an_oven(client)
    command = await send(client, oven, command="preheat", deadline_s=600)
    assert (command["status"], command["parameters"]) == ("pending", {"temperature_c": 430})
    sent = await bus.until(lambda seen: any(isinstance(m, DeviceCommand) for m in seen), "the command")
    on_the_wire = next(m for m in sent if isinstance(m, DeviceCommand))
    assert on_the_wire.topic() == commands_topic("devices")
    assert (str(on_the_wire.command_id), on_the_wire.command, on_the_wire.parameters) == (
        command["id"],
        "preheat",
        {"temperature_c": 430},
    )
    assert on_the_wire.deadline.isoformat().startswith(command["deadline"][:19])
    waiting = (await report(client, oven, {"door_open": False})).json()["commands"]
    assert [(c["id"], c["command"], c["parameters"]) for c in waiting] == [
        (command["id"], "preheat", {"temperature_c": 430})
    ], "a device learns its pending commands from the answer to its report"

    done = await ack(client, oven, command["id"], outcome="done", detail="at 430")
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["detail"]) == ("done", "at 430")
    repeat = await ack(client, oven, command["id"], outcome="done")
    assert repeat.status_code == 200, "an ack sent again is answered alike"
    assert repeat.json()["status"] == "done"
    assert_problem(await ack(client, oven, command["id"], outcome="rejected"), 409, "conflict")

    rejected = await send(client, oven, command="set_temperature", temperature_c=250)
    assert (await ack(client, oven, rejected["id"], outcome="rejected", detail="door open")).json()["status"] == (
        "rejected"
    )
    assert (await report(client, oven, {})).json()["commands"] == [], "nothing waits once acknowledged"
    listed = await client.get(f"/api/v1/devices/{oven['id']}/commands", headers=STAFF)
    assert [c["status"] for c in listed.json()["items"]] == ["rejected", "done"], "newest first"
    await bus.until(lambda _: len(bus.of(DeviceCommandAcknowledged)) == 2, "both acknowledgements")
    assert [m.outcome for m in bus.of(DeviceCommandAcknowledged)] == ["done", "rejected"]


async def test_a_command_not_acknowledged_by_its_deadline_expires_and_stays_expired(devices: Devices) -> None:
    client, bus = devices.client, devices.bus
    oven = await an_oven(client)  # never reports: offline
    command = await send(client, oven, command="reboot", deadline_s=1)
    path = f"/api/v1/devices/{oven['id']}/commands/{command['id']}"

    async def expired() -> bool:
        return bool((await client.get(path, headers=STAFF)).json()["status"] == "expired")

    await eventually(expired, "the command expires at its deadline", 20)
    settled = (await client.get(path, headers=STAFF)).json()
    assert settled["settled_at"] >= settled["deadline"]
    assert_problem(await ack(client, oven, command["id"], outcome="done"), 409, "command-expired")
    await bus.until(lambda _: bool(bus.of(DeviceCommandExpired)), "the expiry")
    assert [str(m.command_id) for m in bus.of(DeviceCommandExpired)] == [command["id"]], "expired once"


async def test_an_acknowledgement_past_the_deadline_expires_the_command_itself(devices: Devices) -> None:
    client, bus = devices.client, devices.bus
    expiry = next(loop for loop in devices.app.state.runtime.loops if loop.name == "command-expiry")
    expiry.stop()  # the watch would expire it first: here the late answer must
    tracker = await register(client, kind="tracker", name="Tracker 1", courier_id="rider-1")
    command = await send(client, tracker, command="reboot", deadline_s=1)
    deadline = datetime.fromisoformat(command["deadline"])

    async def passed() -> bool:
        return utcnow() > deadline

    await eventually(passed, "the deadline passes", 20)
    path = f"/api/v1/devices/{tracker['id']}/commands/{command['id']}"
    assert (await client.get(path, headers=STAFF)).json()["status"] == "pending", "no watch expired it"
    assert_problem(await ack(client, tracker, command["id"], outcome="done"), 409, "command-expired")
    assert (await client.get(path, headers=STAFF)).json()["status"] == "expired"
    await bus.until(lambda _: bool(bus.of(DeviceCommandExpired)), "the expiry")
    assert_problem(await ack(client, tracker, command["id"], outcome="done"), 409, "command-expired")


# -- presence ------------------------------------------------------------------------------------


async def test_a_silent_device_goes_offline_and_comes_back_when_it_reports(devices: Devices) -> None:
    client, bus = devices.client, devices.bus
    oven = await an_oven(client)
    device_id = uuid.UUID(oven["id"])
    assert (await report(client, oven, {"temperature_c": 430})).status_code == 200
    await bus.until(lambda _: bool(bus.of(DeviceWentOnline, device_id=device_id)), "online")

    async def offline() -> bool:
        return not (await view(client, oven["id"]))["online"]

    await eventually(offline, f"offline after {OFFLINE_AFTER_S} s of silence", 20)
    await bus.until(lambda _: bool(bus.of(DeviceWentOffline, device_id=device_id)), "offline")
    went = bus.of(DeviceWentOffline, device_id=device_id)[0]
    assert (went.at - went.last_seen_at).total_seconds() >= OFFLINE_AFTER_S

    assert (await report(client, oven, {"door": "open"})).status_code == 200
    assert (await view(client, oven["id"]))["online"]
    await bus.until(lambda _: len(bus.of(DeviceWentOnline, device_id=device_id)) == 2, "online again")
    assert len(bus.of(DeviceWentOffline, device_id=device_id)) == 1


async def test_a_device_heard_from_through_telemetry_is_online_until_it_falls_silent(devices: Devices) -> None:
    client, bus = devices.client, devices.bus
    tracker = await register(client, kind="tracker", name="Tracker 1", courier_id="courier-1")
    device_id = uuid.UUID(tracker["id"])
    assert (await view(client, tracker["id"]))["online"] is False
    seen_at = utcnow()
    runtime = devices.app.state.runtime

    async def telemetry_says(at: datetime) -> None:
        seen = DeviceSeen(device_id=device_id, at=at)
        await runtime.broker.publish([Envelope.wrap(seen, source="/pizzeria/telemetry").to_outgoing(seen.topic())])

    await telemetry_says(seen_at)
    await bus.until(lambda _: bool(bus.of(DeviceWentOnline, device_id=device_id)), "online from its readings")
    twin = await view(client, tracker["id"])
    assert twin["online"] is True
    assert twin["last_seen_at"] == seen_at.isoformat().replace("+00:00", "Z")
    await telemetry_says(seen_at - timedelta(seconds=5))  # late and older: changes nothing

    async def offline() -> bool:
        return not (await view(client, tracker["id"]))["online"]

    await eventually(offline, "offline once telemetry stopped hearing from it", 20)
    assert len(bus.of(DeviceWentOnline, device_id=device_id)) == 1
    await telemetry_says(utcnow())
    await bus.until(lambda _: len(bus.of(DeviceWentOnline, device_id=device_id)) == 2, "online again")


# -- who sees what -------------------------------------------------------------------------------


async def test_a_courier_sees_only_their_own_tracker(devices: Devices) -> None:
    client = devices.client
    mine = await register(client, kind="tracker", name="Tracker A", courier_id="rider-a")
    theirs = await register(client, kind="tracker", name="Tracker B", courier_id="rider-b")
    oven = await an_oven(client)
    courier = bearer("rider-a", "courier")
    listed = await client.get("/api/v1/devices", headers=courier)
    assert [d["id"] for d in listed.json()["items"]] == [mine["id"]]
    assert (await client.get("/api/v1/devices?kind=oven", headers=courier)).json()["items"] == []
    assert (await client.get(f"/api/v1/devices/{mine['id']}", headers=courier)).json()["courier_id"] == "rider-a"
    for other in (theirs, oven):
        assert_problem(await client.get(f"/api/v1/devices/{other['id']}", headers=courier), 404)
    assert_problem(await client.post("/api/v1/devices", json={"kind": "oven"}, headers=courier), 403)
    command = {"command": "reboot"}
    assert_problem(await client.post(f"/api/v1/devices/{mine['id']}/commands", json=command, headers=courier), 403)
    assert_problem(await client.get("/api/v1/devices", headers=bearer("ann", "customer")), 403)
    assert_problem(await client.get("/api/v1/devices"), 401)
    everything = await client.get("/api/v1/devices", headers=bearer("root", "admin"))
    assert {d["id"] for d in everything.json()["items"]} == {mine["id"], theirs["id"], oven["id"]}
    ovens = await client.get("/api/v1/devices?kind=oven&station=oven-1", headers=STAFF)
    assert [d["id"] for d in ovens.json()["items"]] == [oven["id"]]


# -- bad input -----------------------------------------------------------------------------------


async def test_bad_input_is_a_clear_problem_and_writes_nothing(devices: Devices) -> None:
    client = devices.client
    oven = await an_oven(client)
    await register(client, kind="tracker", name="Tracker 1", courier_id="rider-1")
    post = client.post
    bad_devices = [
        ({"kind": "toaster", "name": "T", "station": "s"}, 422),
        ({"kind": "oven", "name": "Oven 9"}, 422),
        ({"kind": "oven", "name": "Oven 9", "station": "Big Oven"}, 422),
        ({"kind": "oven", "name": "", "station": "oven-9"}, 422),
        ({"kind": "oven", "name": "Oven 9", "station": "oven-9", "courier_id": "rider-9"}, 422),
        ({"kind": "tracker", "name": "Tracker 9"}, 422),
        ({"kind": "oven", "name": "Oven 9", "station": "oven-9", "wattage": 9000}, 422),
        ({"kind": "oven", "name": "Oven 1", "station": "oven-9"}, 409),
        ({"kind": "tracker", "name": "Tracker 9", "courier_id": "rider-1"}, 409),
    ]
    for body, status in bad_devices:
        assert_problem(await post("/api/v1/devices", json=body, headers=STAFF), status)
    assert len((await client.get("/api/v1/devices", headers=STAFF)).json()["items"]) == 2, "no partial writes"

    desired = f"/api/v1/devices/{oven['id']}/desired"
    for body in (
        {"temperature_c": 430},
        {"temperature_c": 9000, "bake_profile": "pan"},
        {"temperature_c": "430", "bake_profile": "pan"},
        {"temperature_c": 430, "bake_profile": "pan", "report_interval_s": 5},
    ):
        assert_problem(await client.put(desired, json=body, headers=STAFF), 422)
    assert_problem(await client.put(f"/api/v1/devices/{uuid.uuid4()}/desired", json={}, headers=STAFF), 404)
    assert (await view(client, oven["id"]))["desired_version"] == 1

    commands = f"/api/v1/devices/{oven['id']}/commands"
    for body in (
        {"command": "explode"},
        {"command": "set_temperature"},
        {"command": "set_temperature", "temperature_c": 900},
        {"command": "reboot", "temperature_c": 200},
        {"command": "preheat", "deadline_s": 0},
        {"command": "preheat", "deadline_s": 7200},
    ):
        assert_problem(await post(commands, json=body, headers=STAFF), 422)
    assert_problem(
        await post(f"/api/v1/devices/{uuid.uuid4()}/commands", json={"command": "reboot"}, headers=STAFF), 404
    )
    assert (await client.get(commands, headers=STAFF)).json()["items"] == []
    assert_problem(await client.get(f"{commands}/{uuid.uuid4()}", headers=STAFF), 404)
    assert_problem(await ack(client, oven, str(uuid.uuid4()), outcome="done"), 404)
    assert_problem(await ack(client, oven, "not-a-uuid", outcome="done"), 422)

    for state in ({"temperature_c": 9000}, {"Door": "open"}, {"nested": {"a": 1}}, {"note": "x" * 201}):
        assert_problem(await report(client, oven, state), 422)
    assert_problem(await post(f"/api/v1/devices/{oven['id']}/reports", json={}, headers=key(oven)), 422)
    assert (await view(client, oven["id"]))["reported"] == {}, "a refused report changes nothing"
    assert_problem(await client.get("/api/v1/devices/not-a-uuid", headers=STAFF), 422)
    assert_problem(await client.get(f"/api/v1/devices/{uuid.uuid4()}", headers=STAFF), 404)
