"""The simulated devices' models: an oven heats and cools by Newton's law (toward its setpoint
with the element on, toward the room with it off, faster with the door open) and follows its
commands; a courier's trip follows the street route from the pizzeria to the address in its
time and waits at the door. And the route itself: along a grid, from one point to the other."""

from __future__ import annotations

import itertools
import math

import pytest

from pizzeria.kit.geo import Route, distance_m, street_route
from pizzeria.simulators.models import HEAT_RATE, REBOOT_S, ROOM_C, WALL_RATE, Battery, OvenModel, Trip

PIZZERIA = (40.8518, 14.2681)
ADDRESS = (40.8700, 14.2900)


def test_an_oven_heats_toward_its_setpoint_as_newtons_law_says() -> None:
    oven = OvenModel(temperature_c=ROOM_C, setpoint_c=430)
    after = oven.step(60)
    expected = 430 + (ROOM_C - 430) * math.exp(-HEAT_RATE * 60)
    assert after == pytest.approx(expected)
    assert ROOM_C < after < 430
    for _ in range(100):
        oven.step(60)
    assert oven.temperature_c == pytest.approx(430, abs=0.01), "it settles at its setpoint"


def test_one_long_step_is_the_same_as_many_short_ones() -> None:
    once, often = OvenModel(temperature_c=100, setpoint_c=400), OvenModel(temperature_c=100, setpoint_c=400)
    once.door_open = often.door_open = True
    once.step(30)
    for _ in range(300):
        often.step(0.1)
    assert once.temperature_c == pytest.approx(often.temperature_c)


def test_with_the_element_off_an_oven_cools_toward_the_room_and_an_open_door_cools_it_faster() -> None:
    closed = OvenModel(temperature_c=430, element_on=False)
    opened = OvenModel(temperature_c=430, element_on=False, door_open=True)
    closed.step(10)
    opened.step(10)
    assert closed.temperature_c == pytest.approx(ROOM_C + (430 - ROOM_C) * math.exp(-WALL_RATE * 10))
    assert ROOM_C < opened.temperature_c < closed.temperature_c < 430


def test_an_open_door_holds_a_heating_oven_below_its_setpoint() -> None:
    oven = OvenModel(temperature_c=430, setpoint_c=430, door_open=True)
    for _ in range(60):
        oven.step(1)
    assert ROOM_C < oven.temperature_c < 430 - 20
    oven.door_open = False
    for _ in range(600):
        oven.step(1)
    assert oven.temperature_c == pytest.approx(430, abs=0.5), "closed again, it heats back up"


def test_an_oven_follows_its_commands() -> None:
    oven = OvenModel(temperature_c=300, setpoint_c=300, element_on=False)
    assert "450" in oven.preheat(450)
    assert (oven.setpoint_c, oven.element_on) == (450, True)
    oven.step(5)
    assert oven.temperature_c > 300
    assert "250" in oven.set_temperature(250)
    oven.step(600)
    assert oven.temperature_c == pytest.approx(250, abs=1)

    oven.reboot()
    assert oven.rebooting
    before = oven.temperature_c
    oven.step(REBOOT_S / 2)
    assert oven.temperature_c < before, "the element is off while it reboots"
    oven.step(REBOOT_S)
    assert not oven.rebooting
    assert oven.step(0) == oven.temperature_c, "no time, no change"


def test_a_street_route_runs_along_the_grid_from_start_to_end() -> None:
    corners = street_route(PIZZERIA, ADDRESS)
    assert (corners[0], corners[-1]) == (PIZZERIA, ADDRESS)
    for a, b in itertools.pairwise(corners):
        assert a[0] == b[0] or a[1] == b[1], "each leg runs north-south or east-west"
    assert street_route(PIZZERIA, ADDRESS) == corners, "the same points, the same route"
    assert street_route(PIZZERIA, PIZZERIA) == [PIZZERIA]
    with pytest.raises(ValueError, match="at least one block"):
        street_route(PIZZERIA, ADDRESS, blocks=0)


def test_a_route_is_longer_than_the_straight_line_and_tells_where_one_is_along_it() -> None:
    route = Route(street_route(PIZZERIA, ADDRESS))
    straight = distance_m(PIZZERIA, ADDRESS)
    assert straight < route.length_m < straight * 1.5
    assert route.at(-5) == PIZZERIA
    assert route.at(route.length_m + 5) == ADDRESS
    halfway = route.at(route.length_m / 2)
    assert distance_m(PIZZERIA, halfway) == pytest.approx(distance_m(halfway, ADDRESS), rel=0.2)
    along = [route.at(route.length_m * i / 20) for i in range(21)]
    steps = [distance_m(a, b) for a, b in itertools.pairwise(along)]
    assert max(steps) == pytest.approx(route.length_m / 20, rel=0.001), "an even pace along the legs"
    assert min(steps) > route.length_m / 20 / 2, "across a corner the straight line is shorter"
    assert all(distance_m(route.at(m), c) < 0.01 for m, c in zip(route.marks, route.corners, strict=True)), (
        "by each corner"
    )


def test_a_trip_reaches_the_address_in_its_time_and_waits_at_the_door() -> None:
    trip = Trip.between(PIZZERIA, ADDRESS, duration_s=60)
    assert trip.speed_mps == pytest.approx(trip.route.length_m / 60)
    seen = [trip.advance(3) for _ in range(19)]
    got_closer = [distance_m(p, ADDRESS) for p, _ in seen]
    assert got_closer == sorted(got_closer, reverse=True), "every second closer"
    assert all(speed == pytest.approx(trip.speed_mps) for _, speed in seen)
    assert not trip.arrived
    assert trip.advance(3) == (ADDRESS, 0.0)
    assert trip.arrived
    assert trip.advance(5) == (ADDRESS, 0.0)


def test_a_trip_too_long_for_its_time_goes_at_the_fastest_pace_and_takes_longer() -> None:
    far = (41.0, 14.5)
    trip = Trip.between(PIZZERIA, far, duration_s=10, max_speed_mps=50)
    assert trip.speed_mps == pytest.approx(50)
    assert trip.duration_s == pytest.approx(trip.route.length_m / 50)
    assert trip.duration_s > 10


def test_a_battery_runs_down_faster_on_the_road_and_is_swapped_when_low() -> None:
    moving, standing = Battery(), Battery()
    moving.drain(100, moving=True)
    standing.drain(100, moving=False)
    assert moving.pct < standing.pct < 100
    low = Battery(pct=10)
    low.drain(10_000, moving=True)
    assert low.pct == 0
    low.swap_if_low()
    assert low.pct == 100
