"""Simulated ovens and couriers' trackers, run as their own process beside the payment provider
(`pizzeria up` starts it when `DEVICE_SIMULATORS=1`, as `make run` does).

They are clients of the public API, like real devices and a real courier's phone would be, and
see nothing of any service's tables:

- At start the fleet signs in as a staff member (`SIM_STAFF_EMAIL`, the demo chef by default;
  refused, it tries again on the schedule of `SIGN_IN_WAITS_S`) and registers the devices that
  are missing: ovens `Oven 1`… at stations `oven-1`… (`SIM_OVENS`),
  and a tracker for each courier delivery lists. A device's key is in the answer to its
  registration only, so the fleet keeps the keys it was given in a file only its user may read
  (`<PIZZERIA_VAR_DIR>/devicesim/device-keys.json`); a device registered before whose key is
  not there is left alone.
- An oven (see `models.OvenModel`) reports what it runs with every few seconds; the answer says
  what it should run with (a new desired temperature or bake profile is taken up once, when
  its version changes) and which commands wait for it: it carries each out (preheat, set
  temperature, reboot) and acknowledges it with its key. Its temperature and door go to
  telemetry in batches (`SIM_OVEN_BATCH` readings). A rebooting oven sends nothing.
- A tracker follows its courier: when delivery lists the courier's order as out for delivery,
  it asks telemetry where the order goes (as staff may) and rides the street route there in
  `SIM_TRIP_S` seconds (longer where that would go above 90 m/s), then back to the pizzeria
  once the order is delivered; it sends its position, speed and battery every tick while
  moving, and standing every `report_interval_s` its twin wants (it reports to devices every
  few ticks and takes up a new one from the answer; `SIM_IDLE_EVERY` seconds until told).

`GET /v1/devices` tells what each simulated device does now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI

from pizzeria.chassis.addresses import url_for
from pizzeria.contracts.delivery import PIZZERIA
from pizzeria.kit.clock import utcnow
from pizzeria.kit.geo import Point
from pizzeria.kit.http import http_app
from pizzeria.kit.logging import configure_logging, get_logger
from pizzeria.kit.loops import BackgroundLoop
from pizzeria.kit.settings import Settings, get_settings
from pizzeria.simulators.fleet import FleetSettings
from pizzeria.simulators.models import Battery, OvenModel, Trip

log = get_logger(__name__)

HOME: Point = (PIZZERIA.lat, PIZZERIA.lon)
#: After a refused sign-in (no such account yet, not staff) the fleet tries again after these
#: waits in turn, then starts over: three tries in its first minute, to pick up an account made
#: just after start, then a quiet quarter of an hour, after which the sign-in throttle has
#: forgotten them. It never reaches the throttle's five failures, so a fleet set up wrongly
#: never slows down anyone's sign-in (on one machine its address is the operator's too).
SIGN_IN_WAITS_S = (10.0, 30.0, 15 * 60.0)
#: How often an oven reports to devices (ticks); its door opens about once in this many ticks.
REPORT_EVERY = 2
#: How often (ticks) a tracker reports to devices.
TRACKER_REPORT_EVERY = 10
DOOR_ODDS = 40
DOOR_OPEN_TICKS = 3


class KeyStore:
    """Device id → key, in a JSON file only this user may read or write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, device_id: str) -> str | None:
        return self.keys.get(device_id)

    def put(self, device_id: str, key: str) -> None:
        self.keys[device_id] = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = self.path.with_suffix(".tmp")
        descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(self.keys, out)
        fresh.replace(self.path)


@dataclass
class Device:
    id: str
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Device-Key": self.key}


@dataclass
class SimOven:
    device: Device
    model: OvenModel = field(default_factory=OvenModel)
    readings: list[dict[str, Any]] = field(default_factory=list)
    desired_version: int = 0
    door_ticks: int = 0
    ticks: int = 0
    acknowledged: set[str] = field(default_factory=set)


@dataclass
class SimTracker:
    device: Device
    courier_id: str
    position: Point = HOME
    speed_mps: float = 0.0
    battery: Battery = field(default_factory=Battery)
    order_id: str | None = None
    trip: Trip | None = None
    quiet_ticks: int = 0
    ticks: int = 0
    #: How often (s) it sends a reading standing: its desired `report_interval_s`, once told.
    interval_s: int = 10
    desired_version: int = 0


class SignInPaused(RuntimeError):
    """The fleet's sign-in was refused; it is not tried again until `Fleet.sign_in_after`."""


class Fleet:
    """The simulated devices and their one step a tick."""

    def __init__(
        self,
        gateway: str,
        own: FleetSettings,
        keys: KeyStore,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.own = own
        self.keys = keys
        self.http = httpx.AsyncClient(base_url=gateway, timeout=10.0)
        self.token = ""
        self.clock = clock
        #: (clock) no sign-in is tried before then: the last one was refused
        self.sign_in_after = 0.0
        self.refusals = 0  # in a row, since the last wait of SIGN_IN_WAITS_S
        self.ovens: list[SimOven] = []
        self.trackers: list[SimTracker] = []
        self.ready = False
        self.rng = random.Random(seed)
        self.last_tick = time.monotonic()

    async def close(self) -> None:
        await self.http.aclose()

    # -- the API as staff ---------------------------------------------------------------------

    async def _sign_in(self) -> None:
        wait = self.sign_in_after - self.clock()
        if wait > 0:
            raise SignInPaused(f"the simulators try to sign in again in {wait:.0f} s")
        answer = await self.http.post(
            "/api/v1/auth/login", json={"email": self.own.staff_email, "password": self.own.staff_password}
        )
        if answer.status_code in (401, 403, 429):
            # Refused (or slowed down: then at least as long as the throttle says): not again
            # every tick.
            retry_after = answer.headers.get("Retry-After", "")
            pause = SIGN_IN_WAITS_S[self.refusals]
            if answer.status_code == 429 and retry_after.isdigit():
                pause = max(pause, float(retry_after))
            self.refusals = (self.refusals + 1) % len(SIGN_IN_WAITS_S)
            self.sign_in_after = self.clock() + pause
            self.token = ""
            log.error(
                "the simulators cannot sign in: make the account staff, or set SIM_STAFF_EMAIL and "
                "SIM_STAFF_PASSWORD to a staff account's; they try again later",
                email=self.own.staff_email,
                status=answer.status_code,
                next_try_in_s=pause,
            )
            raise SignInPaused(f"the simulators cannot sign in as {self.own.staff_email}: {answer.status_code}")
        if answer.status_code != 200:
            raise RuntimeError(f"the simulators cannot sign in as {self.own.staff_email}: {answer.status_code}")
        self.token = answer.json()["access_token"]
        self.refusals = 0

    async def staff(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call as the staff member, signing in (again) when the token is missing or stale."""
        if not self.token:
            await self._sign_in()
        answer = await self.http.request(method, path, headers={"Authorization": f"Bearer {self.token}"}, **kwargs)
        if answer.status_code == 401:
            await self._sign_in()
            answer = await self.http.request(method, path, headers={"Authorization": f"Bearer {self.token}"}, **kwargs)
        return answer

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = await self.staff(method, path, **kwargs)
        if answer.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
        return answer.json()

    # -- setting up ---------------------------------------------------------------------------

    async def _device(self, existing: dict[str, dict[str, Any]], body: dict[str, Any]) -> Device | None:
        """The device named `body["name"]`: the one registered before, when its key is kept, else
        a new registration (None: registered before, its key lost)."""
        found = existing.get(body["name"])
        if found is not None:
            key = self.keys.get(found["id"])
            if key is None:
                log.warning("a simulated device's key is lost; it is left alone", device=body["name"])
                return None
            return Device(found["id"], body["name"], key)
        created = await self._json("POST", "/api/v1/devices", json=body)
        self.keys.put(created["id"], created["secret"])
        log.info("simulated device registered", device=body["name"], id=created["id"])
        return Device(created["id"], body["name"], created["secret"])

    async def set_up(self) -> None:
        existing = {d["name"]: d for d in (await self._json("GET", "/api/v1/devices", params={"limit": 500}))["items"]}
        couriers = (await self._json("GET", "/api/v1/couriers"))["items"]
        for n in range(1, self.own.ovens + 1):
            oven = await self._device(existing, {"kind": "oven", "name": f"Oven {n}", "station": f"oven-{n}"})
            if oven is not None:
                self.ovens.append(SimOven(oven))
        for courier in couriers:
            body = {"kind": "tracker", "name": f"Tracker {courier['name']}", "courier_id": courier["id"]}
            tracker = await self._device(existing, body)
            if tracker is not None:
                self.trackers.append(SimTracker(tracker, courier_id=courier["id"], interval_s=self.own.idle_every))
        self.ready = True
        log.info("simulated devices running", ovens=len(self.ovens), trackers=len(self.trackers))

    # -- one tick -----------------------------------------------------------------------------

    async def step(self) -> None:
        if not self.token and self.clock() < self.sign_in_after:
            return  # waiting to sign in again, quietly (the refusal was logged)
        if not self.ready:
            await self.set_up()
        now = time.monotonic()
        dt, self.last_tick = now - self.last_tick, now
        out = await self._out_for_delivery()
        devices = [o.device for o in self.ovens] + [t.device for t in self.trackers]
        outcomes = await asyncio.gather(
            *(self._oven_tick(oven, dt) for oven in self.ovens),
            *(self._tracker_tick(tracker, dt, out) for tracker in self.trackers),
            return_exceptions=True,
        )
        for device, outcome in zip(devices, outcomes, strict=True):
            if isinstance(outcome, Exception):  # this device tries again next tick; the others went on
                log.warning("a simulated device's tick failed", device=device.name, error=str(outcome))

    async def send_readings(self, device: Device, readings: list[dict[str, Any]]) -> None:
        answer = await self.http.post(
            f"/api/v1/telemetry/devices/{device.id}/readings", json={"readings": readings}, headers=device.headers
        )
        if answer.status_code != 200:  # 401: telemetry has not heard of the device yet; sent again
            raise RuntimeError(f"readings of {device.name} refused: {answer.status_code} {answer.text[:200]}")

    async def _oven_tick(self, oven: SimOven, dt: float) -> None:
        model = oven.model
        if oven.door_ticks > 0:
            oven.door_ticks -= 1
        elif model.temperature_c > 200 and self.rng.randrange(DOOR_ODDS) == 0:
            oven.door_ticks = DOOR_OPEN_TICKS  # a pizza goes in
        model.door_open = oven.door_ticks > 0
        model.step(dt)
        if model.rebooting:
            return  # off: it neither reports nor measures
        oven.readings.append(
            {"at": utcnow().isoformat(), "temperature_c": round(model.temperature_c, 1), "door_open": model.door_open}
        )
        if len(oven.readings) >= self.own.oven_batch:
            batch, oven.readings = oven.readings, []
            try:
                await self.send_readings(oven.device, batch)
            except (RuntimeError, httpx.HTTPError):
                oven.readings = batch[-self.own.oven_batch * 10 :] + oven.readings  # kept to send again
                raise
        oven.ticks += 1
        if oven.ticks % REPORT_EVERY == 0:
            await self._report(oven)

    async def _report(self, oven: SimOven) -> None:
        model, device = oven.model, oven.device
        state = {"temperature_c": round(model.setpoint_c), "bake_profile": model.bake_profile}
        answer = await self.http.post(
            f"/api/v1/devices/{device.id}/reports", json={"state": state}, headers=device.headers
        )
        if answer.status_code != 200:
            raise RuntimeError(f"report of {device.name} refused: {answer.status_code} {answer.text[:200]}")
        told = answer.json()
        if told["desired_version"] != oven.desired_version:  # staff changed its settings: take them up
            oven.desired_version = told["desired_version"]
            desired = told["desired"]
            if isinstance(desired.get("temperature_c"), int | float):
                model.setpoint_c = float(desired["temperature_c"])
            if isinstance(desired.get("bake_profile"), str):
                model.bake_profile = desired["bake_profile"]
        waiting = told.get("commands", [])
        oven.acknowledged &= {c["id"] for c in waiting}  # ones no longer listed are settled: forget them
        for command in waiting:
            if command["id"] not in oven.acknowledged:
                await self._carry_out(oven, command)

    async def _carry_out(self, oven: SimOven, command: dict[str, Any]) -> None:
        model, name = oven.model, command["command"]
        temperature = command["parameters"].get("temperature_c")
        if name == "preheat" and temperature is not None:
            outcome, detail = "done", model.preheat(float(temperature))
        elif name == "set_temperature" and temperature is not None:
            outcome, detail = "done", model.set_temperature(float(temperature))
        elif name == "reboot":
            outcome, detail = "done", model.reboot()
        else:
            outcome, detail = "rejected", f"{name} is not something this oven does"
        answer = await self.http.post(
            f"/api/v1/devices/{oven.device.id}/commands/{command['id']}/ack",
            json={"outcome": outcome, "detail": detail},
            headers=oven.device.headers,
        )
        if answer.status_code in (200, 409):  # 409: its deadline passed meanwhile; nothing to do
            oven.acknowledged.add(command["id"])
            log.info(
                "simulated oven acknowledged a command",
                device=oven.device.name,
                command=name,
                status=answer.status_code,
            )

    async def _out_for_delivery(self) -> dict[str, str]:
        """Courier id → the order they are out with."""
        if not self.trackers:
            return {}
        page = await self._json("GET", "/api/v1/deliveries", params={"status": "out_for_delivery", "limit": 500})
        return {d["courier_id"]: d["order_id"] for d in page["items"] if d["courier_id"]}

    async def _destination(self, order_id: str) -> Point | None:
        answer = await self.staff("GET", f"/api/v1/telemetry/orders/{order_id}/courier")
        if answer.status_code != 200:
            return None  # telemetry has not heard the order left yet
        destination = answer.json()["destination"]
        return None if destination is None else (destination["lat"], destination["lon"])

    async def _tracker_tick(self, tracker: SimTracker, dt: float, out: dict[str, str]) -> None:
        order = out.get(tracker.courier_id)
        if order is not None and order != tracker.order_id:
            destination = await self._destination(order)
            if destination is not None:
                tracker.order_id = order
                tracker.trip = Trip.between(tracker.position, destination, self.own.trip_s)
        elif order is None and tracker.order_id is not None:  # delivered: back to the pizzeria
            tracker.order_id = None
            tracker.trip = Trip.between(tracker.position, HOME, self.own.trip_s)
        moving = tracker.trip is not None and not tracker.trip.arrived
        if tracker.trip is not None:
            tracker.position, tracker.speed_mps = tracker.trip.advance(dt)
            if tracker.trip.arrived and tracker.order_id is None:
                tracker.trip = None  # home
                tracker.battery.swap_if_low()
        battery = tracker.battery.drain(dt, moving=moving)
        if tracker.ticks % TRACKER_REPORT_EVERY == 0:
            await self._report_tracker(tracker)
        tracker.ticks += 1
        tracker.quiet_ticks += 1
        standing_for = tracker.quiet_ticks * self.own.tick_s
        if not moving and standing_for < tracker.interval_s and tracker.speed_mps == 0:
            return
        tracker.quiet_ticks = 0
        reading = {
            "at": utcnow().isoformat(),
            "lat": round(tracker.position[0], 6),
            "lon": round(tracker.position[1], 6),
            "speed_mps": round(tracker.speed_mps, 2),
            "battery_pct": round(battery, 1),
        }
        await self.send_readings(tracker.device, [reading])

    async def _report_tracker(self, tracker: SimTracker) -> None:
        """Tell devices the report interval it runs with; take up a new desired one."""
        device = tracker.device
        state = {"report_interval_s": tracker.interval_s}
        answer = await self.http.post(
            f"/api/v1/devices/{device.id}/reports", json={"state": state}, headers=device.headers
        )
        if answer.status_code != 200:
            raise RuntimeError(f"report of {device.name} refused: {answer.status_code} {answer.text[:200]}")
        told = answer.json()
        wanted = told["desired"].get("report_interval_s")
        if told["desired_version"] != tracker.desired_version and isinstance(wanted, int):
            tracker.desired_version, tracker.interval_s = told["desired_version"], wanted
            await self._report_tracker(tracker)  # running with it now

    def state(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "ovens": [
                {
                    "id": o.device.id,
                    "name": o.device.name,
                    "temperature_c": round(o.model.temperature_c, 1),
                    "setpoint_c": o.model.setpoint_c,
                    "door_open": o.model.door_open,
                    "rebooting": o.model.rebooting,
                    "acknowledged": sorted(o.acknowledged),
                }
                for o in self.ovens
            ],
            "trackers": [
                {
                    "id": t.device.id,
                    "name": t.device.name,
                    "courier_id": t.courier_id,
                    "order_id": t.order_id,
                    "lat": t.position[0],
                    "lon": t.position[1],
                    "speed_mps": t.speed_mps,
                    "battery_pct": round(t.battery.pct, 1),
                }
                for t in self.trackers
            ],
        }


def create_app(settings: Settings | None = None, own: FleetSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    own = own or FleetSettings()
    configure_logging("devicesim", settings.log_level, settings.log_format)
    fleet = Fleet(url_for(settings, "gateway"), own, KeyStore(settings.var_dir / "devicesim" / "device-keys.json"))
    loop = BackgroundLoop("device-simulators", fleet.step, interval=own.tick_s, max_backoff=5.0)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(loop.run())
        try:
            yield
        finally:
            loop.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await fleet.close()

    router = APIRouter(prefix="/v1", tags=["simulated devices"])

    @router.get("/devices", summary="What each simulated device does now")
    async def devices() -> dict[str, Any]:
        return fleet.state()

    app = http_app(
        service="devicesim",
        routers=[router],
        lifespan=lifespan,
        settings=settings,
        description="Simulated ovens and couriers' trackers (test doubles of real devices).",
    )
    app.state.fleet = fleet
    return app
