"""The map of an order on its way, drawn by the page itself as SVG: the pizzeria, the address, the
street route between them and the courier on it. No map tiles: the town is a plain frame, north
up, a degree of longitude `cos(lat)` times as wide as one of latitude so that distances look
right."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pizzeria.contracts.delivery import PIZZERIA
from pizzeria.kit.geo import Point, street_route

WIDTH, HEIGHT, MARGIN = 320, 220, 22
HOME: Point = (PIZZERIA.lat, PIZZERIA.lon)


@dataclass(frozen=True)
class Plotted:
    x: float
    y: float


@dataclass(frozen=True)
class CourierMap:
    """What the map template draws, in the SVG's own units."""

    width: int
    height: int
    route: str  # the polyline's points
    pizzeria: Plotted
    address: Plotted
    courier: Plotted | None


def frame(points: Sequence[Point]) -> Any:
    """A function placing points of `points`' neighbourhood in the SVG, all of them inside it."""
    mid_lat = math.radians(sum(p[0] for p in points) / len(points))
    xs = [p[1] * math.cos(mid_lat) for p in points]
    ys = [p[0] for p in points]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-6)
    scale = min((WIDTH - 2 * MARGIN) / span, (HEIGHT - 2 * MARGIN) / span)
    left = (WIDTH - (max(xs) - min(xs)) * scale) / 2
    top = (HEIGHT - (max(ys) - min(ys)) * scale) / 2

    def place(p: Point) -> Plotted:
        x = left + (p[1] * math.cos(mid_lat) - min(xs)) * scale
        y = top + (max(ys) - p[0]) * scale  # north is up
        return Plotted(round(x, 1), round(y, 1))

    return place


def courier_map(destination: Point, position: Point | None) -> CourierMap:
    """The map of a courier at `position` (None: not heard from yet) bringing an order from the
    pizzeria to `destination`."""
    route = street_route(HOME, destination)
    place = frame([*route, *([position] if position else [])])
    return CourierMap(
        width=WIDTH,
        height=HEIGHT,
        route=" ".join(f"{c.x},{c.y}" for c in map(place, route)),
        pizzeria=place(HOME),
        address=place(destination),
        courier=place(position) if position else None,
    )


def eta_words(seconds: int | None) -> str:
    """An estimated arrival in words."""
    if seconds is None:
        return "Estimating arrival…"
    if seconds < 45:
        return "Arriving now"
    if seconds < 90:
        return "About a minute away"
    return f"About {round(seconds / 60)} minutes away"
