"""Places on a town's scale: distances, and a route along a street grid. No I/O.

A point is `(lat, lon)` in WGS 84 degrees. Within a town (a few kilometres) a degree of
longitude is `cos(lat)` times a degree of latitude, and the Earth is flat enough for a route's
legs to be straight lines between their corners.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

Point = tuple[float, float]

EARTH_RADIUS_M = 6_371_000.0
#: How many blocks (a north-south leg, then an east-west one) a street route has.
BLOCKS = 3


def distance_m(a: Point, b: Point) -> float:
    """The great-circle distance between two points (haversine), in metres."""
    lat1, lat2 = math.radians(a[0]), math.radians(b[0])
    dlat, dlon = lat2 - lat1, math.radians(b[1] - a[1])
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def street_route(start: Point, end: Point, blocks: int = BLOCKS) -> list[Point]:
    """The corners of a way from `start` to `end` along a grid of streets: `blocks` steps, each
    a north-south leg then an east-west one (the same two points, the same route, everywhere)."""
    if blocks < 1:
        raise ValueError("a route has at least one block")
    corners = [start]
    for step in range(1, blocks + 1):
        lat = start[0] + (end[0] - start[0]) * step / blocks
        corners.append((lat, start[1] + (end[1] - start[1]) * (step - 1) / blocks))
        corners.append((lat, start[1] + (end[1] - start[1]) * step / blocks))
    corners[-1] = end
    return [p for i, p in enumerate(corners) if i == 0 or p != corners[i - 1]]


@dataclass(frozen=True)
class Route:
    """A way through `corners`, and where along it one is after some metres."""

    corners: Sequence[Point]
    #: Metres from the start to each corner.
    marks: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.corners:
            raise ValueError("a route has at least one point")
        marks = [0.0]
        for a, b in itertools.pairwise(self.corners):
            marks.append(marks[-1] + distance_m(a, b))
        object.__setattr__(self, "marks", tuple(marks))

    @property
    def length_m(self) -> float:
        return self.marks[-1]

    def at(self, travelled_m: float) -> Point:
        """Where one is after `travelled_m` metres (the start before it, the end past it)."""
        if travelled_m <= 0 or len(self.corners) == 1:
            return self.corners[0]
        if travelled_m >= self.length_m:
            return self.corners[-1]
        leg = bisect.bisect_right(self.marks, travelled_m) - 1
        a, b = self.corners[leg], self.corners[leg + 1]
        span = self.marks[leg + 1] - self.marks[leg]
        share = 0.0 if span == 0 else (travelled_m - self.marks[leg]) / span
        return (a[0] + (b[0] - a[0]) * share, a[1] + (b[1] - a[1]) * share)
