"""Readings and what they mean. No I/O.

A reading is what one device measured at one moment of its own clock: an oven its temperature
and whether its door is open, a tracker its position, speed and battery. Each kind reports its
own values and no other's. Times are kept as whole milliseconds since the epoch (UTC): one
reading per device and millisecond, so a reading sent twice is the same reading.

From the readings, in the order of the devices' clocks:
- an oven's temperature against its range (its desired temperature ± a tolerance): once it has
  reached the range, leaving it is an excursion, announced once until it is back inside (by a
  margin, so a reading hovering on the edge is one excursion, not many);
- a courier's distance to the address of the order they carry and the arrival it makes likely:
  arriving once they are near, and the estimate again each time it moves by a threshold;
- that a device is alive, told at most once per device every so often.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple, NotRequired

from pydantic import AwareDatetime, ConfigDict, Field, Strict, TypeAdapter, with_config
from typing_extensions import TypedDict

from pizzeria.kit.errors import ValidationFailed

MINUTE_MS = 60_000


class DeviceKind(enum.StrEnum):
    OVEN = "oven"
    TRACKER = "tracker"


# -- a reading ------------------------------------------------------------------------------------

# Strict: a JSON string is not a number, nor 1 a boolean (a whole number is a number).
Celsius = Annotated[float, Strict(), Field(ge=-50, le=1000, allow_inf_nan=False, description="°C")]
Latitude = Annotated[float, Strict(), Field(ge=-90, le=90, allow_inf_nan=False, description="degrees (WGS 84)")]
Longitude = Annotated[float, Strict(), Field(ge=-180, le=180, allow_inf_nan=False, description="degrees (WGS 84)")]
Speed = Annotated[float, Strict(), Field(ge=0, le=100, allow_inf_nan=False, description="metres a second")]
Percent = Annotated[float, Strict(), Field(ge=0, le=100, allow_inf_nan=False, description="per cent")]
Flag = Annotated[bool, Strict()]


@with_config(ConfigDict(extra="forbid"))
class Reading(TypedDict):
    """One measurement of one device. An oven sends `temperature_c` (and `door_open` if it
    knows); a tracker `lat` and `lon` (and `speed_mps`, `battery_pct` if it knows).

    A typed dict, not a model: a batch carries hundreds of readings, and pydantic checks a
    reading into a plain dict for a third of what building a model costs."""

    at: Annotated[
        AwareDatetime, Field(description="when the device measured it: RFC 3339 with its UTC offset (or Unix seconds)")
    ]
    temperature_c: NotRequired[Celsius | None]
    door_open: NotRequired[Flag | None]
    lat: NotRequired[Latitude | None]
    lon: NotRequired[Longitude | None]
    speed_mps: NotRequired[Speed | None]
    battery_pct: NotRequired[Percent | None]


#: Checks one reading (what the batches' models do for each of theirs).
READING = TypeAdapter(Reading)


#: What each kind must send, and what it may.
REQUIRED: dict[DeviceKind, tuple[str, ...]] = {
    DeviceKind.OVEN: ("temperature_c",),
    DeviceKind.TRACKER: ("lat", "lon"),
}
OPTIONAL: dict[DeviceKind, tuple[str, ...]] = {
    DeviceKind.OVEN: ("door_open",),
    DeviceKind.TRACKER: ("speed_mps", "battery_pct"),
}
VALUES = ("temperature_c", "door_open", "lat", "lon", "speed_mps", "battery_pct")
BLANK: dict[str, Any] = dict.fromkeys(VALUES)
#: The values kept per minute (min, max, sum, count): a door's share of the minute open.
ROLLED_UP: dict[DeviceKind, tuple[str, ...]] = {
    DeviceKind.OVEN: ("temperature_c", "door_open"),
    DeviceKind.TRACKER: ("speed_mps", "battery_pct"),
}


def to_ms(at: datetime) -> int:
    """Milliseconds since the epoch (a reading's time, as it is kept)."""
    return round(at.timestamp() * 1000)


def from_ms(at_ms: int) -> datetime:
    return datetime.fromtimestamp(at_ms / 1000, UTC)


def minute_of(at_ms: int) -> int:
    """The start of the minute `at_ms` falls in (ms)."""
    return at_ms - at_ms % MINUTE_MS


def checked_rows(
    kind: DeviceKind, readings: Sequence[Reading], *, earliest_ms: int, latest_ms: int
) -> list[dict[str, Any]]:
    """The batch as rows to store, in time order, one per millisecond (of readings at the same
    time the first counts, the others are the same reading sent again). A batch with any bad
    reading is refused whole (422), naming each bad reading and why; nothing of it is kept."""
    required = REQUIRED[kind]
    foreign = tuple(name for name in VALUES if name not in required and name not in OPTIONAL[kind])
    problems: list[dict[str, str]] = []
    rows: dict[int, dict[str, Any]] = {}
    for index, reading in enumerate(readings):
        row = {**BLANK, **reading}  # every value, None where the reading has none
        at_ms = to_ms(row.pop("at"))
        for name in required:
            if row[name] is None:
                problems.append({"field": f"readings.{index}.{name}", "message": f"{kind_one(kind)} reports it"})
        for name in foreign:
            if row[name] is not None:
                problems.append(
                    {"field": f"readings.{index}.{name}", "message": f"{kind_one(kind)} does not report it"}
                )
        if at_ms > latest_ms:
            problems.append({"field": f"readings.{index}.at", "message": "is in the future (check the device's clock)"})
        elif at_ms < earliest_ms:
            problems.append(
                {"field": f"readings.{index}.at", "message": "is older than the readings kept (the retention)"}
            )
        if at_ms not in rows:
            row["at_ms"] = at_ms
            rows[at_ms] = row
    if problems:
        shown = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValidationFailed(f"the batch was not stored: {shown}{more}", errors=problems)
    return [rows[at_ms] for at_ms in sorted(rows)]


def kind_one(kind: DeviceKind) -> str:
    return "an oven" if kind is DeviceKind.OVEN else "a tracker"


# -- per-minute rollups ---------------------------------------------------------------------------


@dataclass
class Aggregate:
    """Of one value in one minute: the lowest, the highest, their sum and how many."""

    low: float
    high: float
    total: float
    count: int

    def add(self, value: float) -> None:
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        self.total += value
        self.count += 1


def rollups(kind: DeviceKind, rows: Iterable[dict[str, Any]]) -> dict[tuple[str, int], Aggregate]:
    """(value's name, minute) → its aggregate over `rows` (those newly stored: a reading sent
    again must not count twice). Merging two aggregates of a minute gives the aggregate of both,
    so late readings fold into their minute whenever they come."""
    found: dict[tuple[str, int], Aggregate] = {}
    names = ROLLED_UP[kind]
    for row in rows:
        minute = minute_of(row["at_ms"])
        for name in names:
            value = row[name]
            if value is None:
                continue
            value = float(value)
            aggregate = found.get((name, minute))
            if aggregate is None:
                found[(name, minute)] = Aggregate(value, value, value, 1)
            else:
                aggregate.add(value)
    return found


# -- an oven's range ------------------------------------------------------------------------------

#: The desired temperature when devices never said (theirs by default).
DEFAULT_TARGET_C = 430.0
#: Back in range means this far inside it: a reading hovering on the edge is one excursion.
MARGIN_C = 5.0


class OvenState(enum.StrEnum):
    SETTLING = "settling"  # not in its range since it was set (heating up, cooling down)
    IN_RANGE = "in_range"
    HIGH = "high"  # an excursion above the range, announced
    LOW = "low"  # an excursion below the range, announced


class Band(NamedTuple):
    low_c: float
    high_c: float

    @classmethod
    def around(cls, target_c: float, tolerance_c: float) -> Band:
        return cls(target_c - tolerance_c, target_c + tolerance_c)

    def holds(self, temperature_c: float, margin: float = 0.0) -> bool:
        return self.low_c + margin <= temperature_c <= self.high_c - margin


@dataclass(frozen=True)
class Excursion:
    """An oven left its range (`direction`) or, with direction None, came back into it."""

    direction: str | None
    temperature_c: float
    at_ms: int


def watch_oven(
    state: OvenState, band: Band, temperatures: Iterable[tuple[int, float]]
) -> tuple[OvenState, list[Excursion]]:
    """The oven's state after `temperatures` ((ms, °C), in time order) and what changed: an
    oven settling after a new setting raises nothing until it first reaches its range; after
    that, leaving the range is one excursion (announced once) until it is back inside."""
    changes: list[Excursion] = []
    for at_ms, temperature in temperatures:
        if state is OvenState.SETTLING:
            if band.holds(temperature):
                state = OvenState.IN_RANGE
            continue
        direction = "high" if temperature > band.high_c else "low" if temperature < band.low_c else None
        if direction is not None and direction != state.value:
            state = OvenState(direction)
            changes.append(Excursion(direction, temperature, at_ms))
        elif state in (OvenState.HIGH, OvenState.LOW) and band.holds(temperature, MARGIN_C):
            state = OvenState.IN_RANGE
            changes.append(Excursion(None, temperature, at_ms))
    return state, changes


# -- a courier on the way -------------------------------------------------------------------------

EARTH_RADIUS_M = 6_371_000.0
#: Slower than this a courier is standing (at a light, at the door): the usual speed counts.
MOVING_MPS = 1.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance between two points (haversine), in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def eta_s(distance: float, speed_mps: float | None, usual_mps: float) -> int:
    """Seconds to cover `distance` at the courier's speed (the usual speed while standing)."""
    speed = speed_mps if speed_mps is not None and speed_mps >= MOVING_MPS else usual_mps
    return math.ceil(distance / speed)


@dataclass(frozen=True)
class ArrivalRules:
    arriving_m: float
    eta_change_s: int
    usual_mps: float


@dataclass(frozen=True)
class Progress:
    """Where a delivery stands after a courier's position: what to announce, what to keep."""

    distance_m: float
    eta_s: int
    arriving: bool  # announce CourierArriving now (once per delivery)
    eta_changed: bool  # announce DeliveryEtaChanged now


def follow(
    rules: ArrivalRules,
    *,
    position: tuple[float, float],
    speed_mps: float | None,
    destination: tuple[float, float],
    arrived_before: bool,
    eta_announced: int | None,
) -> Progress:
    """A courier's newest position against the address they carry an order to."""
    distance = distance_m(*position, *destination)
    eta = eta_s(distance, speed_mps, rules.usual_mps)
    return Progress(
        distance_m=round(distance, 1),
        eta_s=eta,
        arriving=not arrived_before and distance <= rules.arriving_m,
        eta_changed=eta_announced is None or abs(eta - eta_announced) >= rules.eta_change_s,
    )


# -- presence -------------------------------------------------------------------------------------


def due_to_announce(announced_at: datetime | None, now: datetime, every_s: float) -> bool:
    """Tell devices the device was heard from: the first time, then at most once every `every_s`."""
    return announced_at is None or (now - announced_at).total_seconds() >= every_s
