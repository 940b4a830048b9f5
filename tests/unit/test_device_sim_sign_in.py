"""The simulated devices' sign-in: refused (no such account yet, or not staff) or slowed down by
the throttle, the fleet does not try again every tick, which would soon have the sign-in
throttle slow down every sign-in from its address (the operator's own on one machine). It tries
three times in its first minute, to pick up an account made just after the system started,
then waits a quarter of an hour, by which time the throttle has forgotten those failures."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from pizzeria.simulators.devices import Fleet, KeyStore, SignInPaused
from pizzeria.simulators.fleet import FleetSettings


class Gateway:
    """Answers sign-ins as told (noting when they came), registers devices, and lists nothing."""

    def __init__(self, answer: httpx.Response, now: list[float]) -> None:
        self.answer = answer
        self.now = now
        self.sign_ins: list[float] = []
        self.registered = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/login":
            self.sign_ins.append(self.now[0])
            return self.answer
        if request.method == "POST" and request.url.path == "/api/v1/devices":
            self.registered += 1
            return httpx.Response(201, json={"id": f"d-{self.registered}", "secret": "key"})
        return httpx.Response(200, json={"items": []})


def fleet_behind(gateway: Gateway, keys: Path) -> Fleet:
    fleet = Fleet("http://gateway", FleetSettings(), KeyStore(keys / "keys.json"), clock=lambda: gateway.now[0])
    fleet.http = httpx.AsyncClient(base_url="http://gateway", transport=httpx.MockTransport(gateway))
    return fleet


async def tick_for(fleet: Fleet, now: list[float], seconds: int) -> None:
    """One step a second (as `SIM_TICK_S` = 1), a refused sign-in's error as the loop takes it."""
    for _ in range(seconds):
        with contextlib.suppress(SignInPaused):
            await fleet.step()
        now[0] += 1


@pytest.mark.parametrize("status", [401, 403])
async def test_three_tries_in_a_minute_then_a_quarter_of_an_hour_quiet(status: int, tmp_path: Path) -> None:
    now = [0.0]
    gateway = Gateway(httpx.Response(status, json={"title": "refused"}), now)
    fleet = fleet_behind(gateway, tmp_path)
    try:
        await tick_for(fleet, now, 40 * 60)
    finally:
        await fleet.close()
    assert gateway.sign_ins == [0, 10, 40, 940, 950, 980, 1880, 1890, 1920]
    # never more than three failures without a quiet quarter of an hour between (the throttle
    # slows sign-ins from five on)
    assert all(b - a >= 900 for a, b in zip(gateway.sign_ins, gateway.sign_ins[3:], strict=False))


async def test_a_throttled_sign_in_waits_at_least_as_long_as_it_is_told(tmp_path: Path) -> None:
    now = [0.0]
    gateway = Gateway(httpx.Response(429, headers={"Retry-After": "64"}, json={"title": "too many"}), now)
    fleet = fleet_behind(gateway, tmp_path)
    try:
        await tick_for(fleet, now, 100)
    finally:
        await fleet.close()
    assert gateway.sign_ins == [0, 64]


async def test_once_the_account_is_staff_the_fleet_signs_in_and_sets_up(tmp_path: Path) -> None:
    now = [0.0]
    gateway = Gateway(httpx.Response(401, json={"title": "wrong email or password"}), now)
    fleet = fleet_behind(gateway, tmp_path)
    try:
        await tick_for(fleet, now, 5)
        gateway.answer = httpx.Response(200, json={"access_token": "t"})  # an administrator made it staff
        await tick_for(fleet, now, 10)
        assert (gateway.sign_ins, fleet.token, fleet.ready, fleet.refusals) == ([0, 10], "t", True, 0)
        assert [oven.device.name for oven in fleet.ovens] == ["Oven 1", "Oven 2"]
    finally:
        await fleet.close()
