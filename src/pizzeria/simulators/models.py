"""How the simulated devices behave, as plain models stepped through time. No I/O.

An oven follows Newton's law of heating and cooling: its temperature moves toward where it
would settle, at a rate that grows with the gap. With the element on it settles at its
setpoint; off, at room temperature; an open door pulls it toward the room as well, faster than
the walls do. Several pulls at once settle where their rates balance, so one step of any length
is exact: `T + (T_settle - T) · (1 - e^(-k·dt))`, `k` the sum of the rates.

A courier's trip follows the street route from the pizzeria to the address at an even pace,
then waits at the door; the tracker's battery runs down as it goes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pizzeria.kit.geo import Point, Route, street_route

ROOM_C = 22.0
#: Rates (per second): the element pulling toward the setpoint, the walls losing heat with the
#: element off, an open door letting it out. An oven takes about a minute to get most of the
#: way to its setpoint; a door open a few seconds costs it some tens of degrees.
HEAT_RATE = 1 / 60
WALL_RATE = 1 / 600
DOOR_RATE = 1 / 80
#: How long an oven is off while it reboots.
REBOOT_S = 3.0


@dataclass
class OvenModel:
    """One oven: its temperature, setpoint, element and door."""

    temperature_c: float = ROOM_C
    setpoint_c: float = 430.0
    element_on: bool = True
    door_open: bool = False
    bake_profile: str = "neapolitan"
    rebooting_s: float = 0.0

    def step(self, dt: float) -> float:
        """Move `dt` seconds on; the temperature then."""
        if dt <= 0:
            return self.temperature_c
        heating = self.element_on and self.rebooting_s <= 0
        pulls = [(HEAT_RATE, self.setpoint_c) if heating else (WALL_RATE, ROOM_C)]
        if self.door_open:
            pulls.append((DOOR_RATE, ROOM_C))
        rate = sum(r for r, _ in pulls)
        settle = sum(r * t for r, t in pulls) / rate
        self.temperature_c = settle + (self.temperature_c - settle) * math.exp(-rate * dt)
        self.rebooting_s = max(0.0, self.rebooting_s - dt)
        return self.temperature_c

    def preheat(self, setpoint_c: float) -> str:
        self.setpoint_c, self.element_on = setpoint_c, True
        return f"heating to {setpoint_c:g} °C"

    def set_temperature(self, setpoint_c: float) -> str:
        self.setpoint_c = setpoint_c
        return f"set to {setpoint_c:g} °C"

    def reboot(self) -> str:
        self.rebooting_s = REBOOT_S
        return f"rebooting ({REBOOT_S:g} s off)"

    @property
    def rebooting(self) -> bool:
        return self.rebooting_s > 0


#: A tracker's battery: what it loses per second on the road and standing.
DRAIN_MOVING_PCT_S = 0.02
DRAIN_IDLE_PCT_S = 0.002
#: Below this the courier swaps the battery at the pizzeria.
SWAP_BELOW_PCT = 15.0


#: The fastest pace a trip goes at (telemetry takes speeds up to 100 m/s). A demo's trips are
#: short in time, so their pace is far above a real courier's; the time they take is honest.
MAX_SPEED_MPS = 90.0


@dataclass
class Trip:
    """A courier's way to an address, taking `duration_s` from start to door."""

    route: Route
    duration_s: float
    elapsed_s: float = 0.0

    @classmethod
    def between(cls, start: Point, end: Point, duration_s: float, max_speed_mps: float = MAX_SPEED_MPS) -> Trip:
        """The trip from `start` to `end` in `duration_s`, or longer where that would take a pace
        above `max_speed_mps`."""
        route = Route(street_route(start, end))
        return cls(route, max(duration_s, route.length_m / max_speed_mps, 0.001))

    @property
    def speed_mps(self) -> float:
        """The even pace that covers the route in the trip's time."""
        return self.route.length_m / self.duration_s

    @property
    def arrived(self) -> bool:
        return self.elapsed_s >= self.duration_s

    def advance(self, dt: float) -> tuple[Point, float]:
        """Move `dt` seconds on: where the courier is, and how fast they go (0 at the door)."""
        self.elapsed_s += max(dt, 0.0)
        if self.arrived:
            return self.route.corners[-1], 0.0
        return self.route.at(self.speed_mps * self.elapsed_s), self.speed_mps


@dataclass
class Battery:
    pct: float = 100.0

    def drain(self, dt: float, *, moving: bool) -> float:
        self.pct = max(0.0, self.pct - dt * (DRAIN_MOVING_PCT_S if moving else DRAIN_IDLE_PCT_S))
        return self.pct

    def swap_if_low(self) -> None:
        if self.pct < SWAP_BELOW_PCT:
            self.pct = 100.0
