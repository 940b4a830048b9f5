"""Devices end to end, the whole system running as processes, on both stacks, through the
gateway: staff register two ovens; one reports with its key and acknowledges a command that went
out on the broker (the audit log has it from `devices.commands`), the other never reports, so
the command sent to it expires; the oven that fell silent goes offline."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import start_system
from tests.e2e.scenario import holds_within
from tests.support.tokens import bearer

pytestmark = pytest.mark.e2e

OFFLINE_AFTER_S = 3


async def test_a_command_to_an_online_oven_is_acknowledged_and_one_to_an_offline_oven_expires(
    stack: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    _, env = stack
    system = await start_system(tmp_path, {**env, "DEVICE_OFFLINE_AFTER_S": str(OFFLINE_AFTER_S)})
    api = system.url("gateway") + "/api/v1"
    staff = bearer("e2e-chef", "staff", env=system.env)
    admin = bearer("e2e-admin", "admin", env=system.env)
    http = httpx.AsyncClient(timeout=30)
    try:

        async def register(name: str, station: str) -> dict[str, Any]:
            body = {"kind": "oven", "name": name, "station": station}
            response = await http.post(f"{api}/devices", json=body, headers=staff)
            assert response.status_code == 201, response.text
            device: dict[str, Any] = response.json()
            return device

        async def command(device: dict[str, Any], **body: Any) -> dict[str, Any]:
            response = await http.post(f"{api}/devices/{device['id']}/commands", json=body, headers=staff)
            assert response.status_code == 202, response.text
            sent: dict[str, Any] = response.json()
            return sent

        async def status(device: dict[str, Any], sent: dict[str, Any]) -> str:
            path = f"{api}/devices/{device['id']}/commands/{sent['id']}"
            return str((await http.get(path, headers=staff)).json()["status"])

        online, silent = await register("Oven 1", "oven-1"), await register("Oven 2", "oven-2")
        report = await http.post(
            f"{api}/devices/{online['id']}/reports",
            json={"state": {"temperature_c": 430, "bake_profile": "neapolitan"}},
            headers={"X-Device-Key": online["secret"]},
        )
        assert report.status_code == 200, report.text
        assert report.json()["difference"] == []

        preheat = await command(online, command="preheat", temperature_c=450, deadline_s=600)
        reboot = await command(silent, command="reboot", deadline_s=2)

        async def on_the_broker() -> None:
            page = await http.get(
                f"{api}/ops/audit", params={"type": "pizzeria.devices.DeviceCommand.v1"}, headers=admin
            )
            sent = {e["data"]["command_id"]: e["topic"] for e in page.json()["items"]}
            assert sent.get(preheat["id"]) == "devices.commands", sent
            assert sent.get(reboot["id"]) == "devices.commands", sent

        await holds_within(on_the_broker, timeout=60)
        ack = await http.post(
            f"{api}/devices/{online['id']}/commands/{preheat['id']}/ack",
            json={"outcome": "done", "detail": "at 450"},
            headers={"X-Device-Key": online["secret"]},
        )
        assert ack.status_code == 200, ack.text
        assert ack.json()["status"] == "done"

        async def expired() -> None:
            assert await status(silent, reboot) == "expired"

        await holds_within(expired, timeout=30, interval=0.2)
        late = await http.post(
            f"{api}/devices/{silent['id']}/commands/{reboot['id']}/ack",
            json={"outcome": "done"},
            headers={"X-Device-Key": silent["secret"]},
        )
        assert late.status_code == 409, late.text
        assert await status(online, preheat) == "done"

        async def offline() -> None:
            assert not (await http.get(f"{api}/devices/{online['id']}", headers=staff)).json()["online"]

        await holds_within(offline, timeout=30, interval=0.2)

        async def announced() -> None:
            page = await http.get(
                f"{api}/ops/audit", params={"type": "pizzeria.devices.DeviceWentOffline.v1"}, headers=admin
            )
            assert [e["data"]["device_id"] for e in page.json()["items"]] == [online["id"]]

        await holds_within(announced, timeout=60)
    finally:
        await http.aclose()
        system.stop()


async def _staff_account(http: httpx.AsyncClient, api: str, env: dict[str, str], email: str, password: str) -> None:
    """An account registered as anyone registers, then made staff by an administrator."""
    registered = await http.post(f"{api}/auth/register", json={"email": email, "password": password, "name": "Ovens"})
    assert registered.status_code == 201, registered.text
    admin = bearer(str(uuid.uuid4()), "admin", env=env)
    promoted = await http.put(
        f"{api}/users/{registered.json()['id']}", json={"name": "Ovens", "role": "staff"}, headers=admin
    )
    assert promoted.status_code == 200, promoted.text


async def test_the_simulated_oven_follows_its_command_and_settings_and_an_oven_without_one_lets_its_expire(
    stack: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """With the simulated devices running: the simulated oven learns a preheat from the answer
    to its report, carries it out and acknowledges it with its key; it takes up new desired
    settings (the twin comes in sync); a command to an oven that no simulator plays is never
    acknowledged and expires."""
    name, env = stack
    # Production seeds no demo chef: there the simulators sign in as an account of their own.
    account = None if name == "embedded" else ("ovens@pizzeria.example", "oven-simulators-1")
    simulators = {"DEVICE_SIMULATORS": "1", "SIM_OVENS": "1"}
    if account is not None:
        simulators |= {"SIM_STAFF_EMAIL": account[0], "SIM_STAFF_PASSWORD": account[1]}
    system = await start_system(tmp_path, {**env, **simulators})
    api = system.url("gateway") + "/api/v1"
    staff = bearer("e2e-chef", "staff", env=system.env)
    http = httpx.AsyncClient(timeout=30)
    try:
        if account is not None:
            await _staff_account(http, api, system.env, *account)
        found: dict[str, Any] = {}

        async def simulated() -> None:
            listed = await http.get(f"{api}/devices", params={"kind": "oven"}, headers=staff)
            ovens = [d for d in listed.json()["items"] if d["name"] == "Oven 1"]
            assert ovens, "the simulator has not registered its oven yet"
            assert ovens[0]["online"], ovens
            found.update(ovens[0])

        await holds_within(simulated, timeout=60, interval=0.2)
        oven = dict(found)
        sent = await http.post(
            f"{api}/devices/{oven['id']}/commands",
            json={"command": "preheat", "temperature_c": 455, "deadline_s": 60},
            headers=staff,
        )
        assert sent.status_code == 202, sent.text

        async def acknowledged() -> None:
            path = f"{api}/devices/{oven['id']}/commands/{sent.json()['id']}"
            command = (await http.get(path, headers=staff)).json()
            assert command["status"] == "done", command
            assert "455" in command["detail"], command

        await holds_within(acknowledged, timeout=30, interval=0.2)
        state = (await http.get(system.url("devicesim") + "/v1/devices")).json()
        assert [o["setpoint_c"] for o in state["ovens"]] == [455], "the simulator carried it out"

        changed = await http.put(
            f"{api}/devices/{oven['id']}/desired", json={"temperature_c": 300, "bake_profile": "roman"}, headers=staff
        )
        assert changed.status_code == 200, changed.text
        assert not changed.json()["in_sync"]

        async def in_sync() -> None:
            twin = (await http.get(f"{api}/devices/{oven['id']}", headers=staff)).json()
            assert twin["in_sync"], twin
            assert twin["reported"]["temperature_c"] == 300, twin

        await holds_within(in_sync, timeout=30, interval=0.2)

        lone = await http.post(
            f"{api}/devices", json={"kind": "oven", "name": "Oven 9", "station": "oven-9"}, headers=staff
        )
        assert lone.status_code == 201, lone.text
        reboot = await http.post(
            f"{api}/devices/{lone.json()['id']}/commands", json={"command": "reboot", "deadline_s": 2}, headers=staff
        )
        assert reboot.status_code == 202, reboot.text

        async def expired() -> None:
            path = f"{api}/devices/{lone.json()['id']}/commands/{reboot.json()['id']}"
            assert (await http.get(path, headers=staff)).json()["status"] == "expired"

        await holds_within(expired, timeout=30, interval=0.2)
        assert not (await http.get(f"{api}/devices/{lone.json()['id']}", headers=staff)).json()["online"]
    finally:
        await http.aclose()
        system.stop()
