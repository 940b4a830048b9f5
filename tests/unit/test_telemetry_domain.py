"""Telemetry's domain, without I/O: which readings a batch may hold, how they fold into
minutes, when an oven's excursion is announced (once, and once more when it is over), when a
courier is arriving (once) and an estimate moved enough to tell, and how often devices hears
that a device is alive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from pizzeria.kit.errors import ValidationFailed
from pizzeria.services.delivery.places import FARTHEST_M, NEAREST_M, PIZZERIA, locate
from pizzeria.services.notifications.domain import minutes_away
from pizzeria.services.telemetry.domain import (
    MARGIN_C,
    MINUTE_MS,
    READING,
    Aggregate,
    ArrivalRules,
    Band,
    DeviceKind,
    Excursion,
    OvenState,
    Reading,
    checked_rows,
    distance_m,
    due_to_announce,
    eta_s,
    follow,
    from_ms,
    minute_of,
    rollups,
    to_ms,
    watch_oven,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
OVEN, TRACKER = DeviceKind.OVEN, DeviceKind.TRACKER
WINDOW = {"earliest_ms": to_ms(NOW - timedelta(days=7)), "latest_ms": to_ms(NOW + timedelta(minutes=5))}


def reading(seconds: float = 0, **values: Any) -> Reading:
    return Reading(at=NOW + timedelta(seconds=seconds), **values)


def fields(refused: pytest.ExceptionInfo[ValidationFailed]) -> set[str]:
    return {e["field"] for e in refused.value.errors or []}


# -- a batch --------------------------------------------------------------------------------------


def test_a_batch_is_kept_in_time_order_and_a_time_sent_twice_is_one_reading() -> None:
    batch = [
        reading(2, temperature_c=300),
        reading(0, temperature_c=100),
        reading(1, temperature_c=200, door_open=True),
        reading(0, temperature_c=999),  # the same moment again: the first one counts
    ]
    rows = checked_rows(OVEN, batch, **WINDOW)
    assert [r["at_ms"] for r in rows] == [to_ms(NOW), to_ms(NOW) + 1000, to_ms(NOW) + 2000]
    assert [r["temperature_c"] for r in rows] == [100, 200, 300]
    assert rows[1]["door_open"] is True
    assert rows[0]["door_open"] is None


def test_times_are_kept_to_the_millisecond_whatever_the_offset_they_are_given_in() -> None:
    paris = datetime(2026, 11, 29, 13, 0, 0, 250_400, tzinfo=timezone(timedelta(hours=1)))
    assert to_ms(paris) == to_ms(NOW) + 250
    assert from_ms(to_ms(NOW) + 250) == NOW + timedelta(milliseconds=250)
    assert minute_of(to_ms(NOW) + 59_999) == to_ms(NOW)


@pytest.mark.parametrize(
    ("kind", "values", "named"),
    [
        (OVEN, {}, {"readings.1.temperature_c"}),
        (OVEN, {"temperature_c": 400, "lat": 1.0}, {"readings.1.lat"}),
        (TRACKER, {"lat": 1.0}, {"readings.1.lon"}),
        (TRACKER, {"lat": 1.0, "lon": 2.0, "temperature_c": 20}, {"readings.1.temperature_c"}),
        (TRACKER, {"lat": 1.0, "lon": 2.0, "door_open": False}, {"readings.1.door_open"}),
    ],
)
def test_each_kind_sends_its_own_values_and_the_batch_is_refused_naming_each_bad_one(
    kind: DeviceKind, values: dict[str, Any], named: set[str]
) -> None:
    good = {"temperature_c": 400} if kind is OVEN else {"lat": 1.0, "lon": 2.0}
    with pytest.raises(ValidationFailed) as refused:
        checked_rows(kind, [reading(0, **good), reading(1, **values)], **WINDOW)
    assert fields(refused) == named
    assert "not stored" in refused.value.detail


def test_a_reading_from_the_future_or_older_than_the_retention_is_refused() -> None:
    batch = [
        reading(0, temperature_c=1),
        reading(6 * 60, temperature_c=1),
        reading(-8 * 86_400, temperature_c=1),
    ]
    with pytest.raises(ValidationFailed) as refused:
        checked_rows(OVEN, batch, **WINDOW)
    assert fields(refused) == {"readings.1.at", "readings.2.at"}
    messages = {e["message"] for e in refused.value.errors or []}
    assert any("future" in m for m in messages)
    assert any("retention" in m for m in messages)


def test_a_refusal_of_many_bad_readings_says_how_many_more_it_does_not_show() -> None:
    with pytest.raises(ValidationFailed) as refused:
        checked_rows(OVEN, [reading(n) for n in range(8)], **WINDOW)
    assert len(refused.value.errors or []) == 8
    assert "and 3 more" in refused.value.detail


@pytest.mark.parametrize(
    "values",
    [
        {"temperature_c": "400"},
        {"temperature_c": True},
        {"temperature_c": float("nan")},
        {"temperature_c": 2000},
        {"door_open": 1},
        {"lat": 91, "lon": 0},
        {"lat": 0, "lon": -181},
        {"speed_mps": -1},
        {"battery_pct": 101},
        {"colour": "red"},
    ],
)
def test_a_reading_holds_only_plain_values_within_their_ranges(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        READING.validate_python({"at": "2026-11-29T12:00:00Z", **values})


def test_a_reading_needs_a_time_with_its_offset() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        READING.validate_python({"at": "2026-11-29T12:00:00", "temperature_c": 1})
    assert READING.validate_python({"at": "2026-11-29T13:00:00+01:00", "temperature_c": 1})["at"] == NOW


# -- rollups --------------------------------------------------------------------------------------


def test_readings_fold_into_their_minutes_and_late_ones_fold_in_alike() -> None:
    rows = checked_rows(
        TRACKER,
        [
            reading(0, lat=1, lon=1, speed_mps=2, battery_pct=90),
            reading(30, lat=1, lon=1, speed_mps=6, battery_pct=89),
            reading(61, lat=1, lon=1, speed_mps=4),
        ],
        **WINDOW,
    )
    found = rollups(TRACKER, rows)
    minute = to_ms(NOW)
    assert found[("speed_mps", minute)] == Aggregate(2, 6, 8, 2)
    assert found[("battery_pct", minute)] == Aggregate(89, 90, 179, 2)
    assert found[("speed_mps", minute + MINUTE_MS)] == Aggregate(4, 4, 4, 1)
    assert ("battery_pct", minute + MINUTE_MS) not in found, "a value not reported is not rolled up"
    # The same readings in two batches, either order, give what one batch gives once merged.
    first, second = rollups(TRACKER, rows[1:]), rollups(TRACKER, rows[:1])
    merged = first[("speed_mps", minute)]
    merged.add(second[("speed_mps", minute)].low)
    assert merged == Aggregate(2, 6, 8, 2)


def test_an_ovens_door_rolls_up_as_its_share_of_the_minute_open() -> None:
    rows = checked_rows(
        OVEN,
        [reading(n, temperature_c=400, door_open=n == 0) for n in range(4)],
        **WINDOW,
    )
    door = rollups(OVEN, rows)[("door_open", to_ms(NOW))]
    assert door.total / door.count == 0.25


# -- an oven's range ------------------------------------------------------------------------------

BAND = Band.around(430, 40)  # 390..470


def temps(*values: float) -> list[tuple[int, float]]:
    return [(n * 1000, v) for n, v in enumerate(values)]


def test_a_heating_oven_raises_nothing_until_it_reaches_its_range() -> None:
    state, changes = watch_oven(OvenState.SETTLING, BAND, temps(20, 150, 300, 389))
    assert (state, changes) == (OvenState.SETTLING, [])
    state, changes = watch_oven(state, BAND, temps(395))
    assert (state, changes) == (OvenState.IN_RANGE, [])


def test_an_excursion_is_announced_once_however_many_readings_it_lasts_and_once_more_when_over() -> None:
    state, changes = watch_oven(OvenState.IN_RANGE, BAND, temps(430, 480, 490, 500, 471, 466, 440, 430))
    assert state is OvenState.IN_RANGE
    assert changes == [Excursion("high", 480, 1000), Excursion(None, 440, 6000)]


def test_hovering_on_the_edge_of_the_range_is_one_excursion() -> None:
    edge = BAND.low_c
    state, changes = watch_oven(OvenState.IN_RANGE, BAND, temps(edge - 1, edge + 1, edge - 1, edge + MARGIN_C - 1))
    assert state is OvenState.LOW
    assert changes == [Excursion("low", edge - 1, 0)]


def test_an_excursion_that_swings_to_the_other_side_is_announced_again() -> None:
    state, changes = watch_oven(OvenState.HIGH, BAND, temps(480, 380))
    assert state is OvenState.LOW
    assert changes == [Excursion("low", 380, 1000)]


# -- a courier on the way -------------------------------------------------------------------------

RULES = ArrivalRules(arriving_m=500, eta_change_s=60, usual_mps=5)
HOME = (40.8518, 14.2681)
#: About 1 km north of home (a thousandth of a degree of latitude is about 111 m).
FAR = (HOME[0] + 0.009, HOME[1])
NEAR = (HOME[0] + 0.003, HOME[1])


def test_the_distance_between_two_points_is_the_great_circle_one() -> None:
    assert distance_m(*HOME, *HOME) == 0
    assert distance_m(*HOME, *FAR) == pytest.approx(1000.8, abs=1)
    assert distance_m(0, 0, 0, 180) == pytest.approx(20_015_087, rel=1e-6)


def test_an_estimate_is_the_distance_at_the_couriers_speed_or_the_usual_one_while_standing() -> None:
    assert eta_s(1000, 10, 5) == 100
    assert eta_s(1000, 0.2, 5) == 200
    assert eta_s(1000, None, 5) == 200
    assert eta_s(0, 3, 5) == 0


def test_a_courier_is_arriving_once_near_the_address_and_never_again() -> None:
    far = follow(RULES, position=FAR, speed_mps=5, destination=HOME, arrived_before=False, eta_announced=None)
    assert not far.arriving
    assert far.eta_changed, "the first estimate is announced"
    near = follow(RULES, position=NEAR, speed_mps=5, destination=HOME, arrived_before=False, eta_announced=far.eta_s)
    assert near.arriving
    again = follow(RULES, position=HOME, speed_mps=5, destination=HOME, arrived_before=True, eta_announced=near.eta_s)
    assert not again.arriving


def test_an_estimate_is_announced_again_only_when_it_moved_enough() -> None:
    first = follow(RULES, position=FAR, speed_mps=5, destination=HOME, arrived_before=False, eta_announced=None)
    same = follow(RULES, position=FAR, speed_mps=5.5, destination=HOME, arrived_before=False, eta_announced=first.eta_s)
    assert abs(same.eta_s - first.eta_s) < 60
    assert not same.eta_changed
    slower = follow(RULES, position=FAR, speed_mps=2, destination=HOME, arrived_before=False, eta_announced=first.eta_s)
    assert slower.eta_changed
    assert slower.eta_s - first.eta_s >= 60


def test_a_customer_is_told_whole_minutes_at_least_one() -> None:
    told = [minutes_away(s) for s in (0, 20, 89, 91, 600)]
    assert told == ["1 minute", "1 minute", "1 minute", "2 minutes", "10 minutes"]


def test_an_address_lies_in_the_demo_town_at_the_same_place_every_time() -> None:
    place = locate("1 Via Roma")
    assert place == locate("  1  via ROMA ")
    assert place != locate("2 Via Roma")
    for address in ("1 Via Roma", "Piazza Dante 5", "x"):
        away = distance_m(PIZZERIA.lat, PIZZERIA.lon, *locate(address).model_dump().values())
        assert NEAREST_M - 1 <= away <= FARTHEST_M + 1


# -- presence -------------------------------------------------------------------------------------


def test_devices_hears_of_a_device_at_first_and_then_at_most_once_a_period() -> None:
    assert due_to_announce(None, NOW, 10)
    assert not due_to_announce(NOW, NOW + timedelta(seconds=9.9), 10)
    assert due_to_announce(NOW, NOW + timedelta(seconds=10), 10)
