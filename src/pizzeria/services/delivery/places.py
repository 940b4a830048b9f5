"""Where an address is. No I/O.

The embedded system has no geocoder and reaches no map service, so addresses lie in a demo
town around the pizzeria: each at a point 0.5 to 4 km away, in a direction and at a distance
that follow from its text (the same address, the same place, in every process). A deployment
with a real geocoder puts it behind `locate`.
"""

from __future__ import annotations

import hashlib
import math

from pizzeria.contracts.delivery import PIZZERIA, GeoPoint

NEAREST_M = 500.0
FARTHEST_M = 4000.0
EARTH_RADIUS_M = 6_371_000.0


def locate(address: str) -> GeoPoint:
    """The place of `address` in the demo town (letter case and spacing do not matter)."""
    digest = hashlib.sha256(" ".join(address.lower().split()).encode()).digest()
    bearing = int.from_bytes(digest[:4], "big") / 2**32 * 2 * math.pi
    distance = NEAREST_M + int.from_bytes(digest[4:8], "big") / 2**32 * (FARTHEST_M - NEAREST_M)
    return destination(PIZZERIA, bearing, distance)


def destination(start: GeoPoint, bearing: float, distance_m: float) -> GeoPoint:
    """The point `distance_m` from `start` heading `bearing` (radians from north, clockwise)."""
    lat1, lon1 = math.radians(start.lat), math.radians(start.lon)
    angle = distance_m / EARTH_RADIUS_M
    lat2 = math.asin(math.sin(lat1) * math.cos(angle) + math.cos(lat1) * math.sin(angle) * math.cos(bearing))
    lon2 = lon1 + math.atan2(
        math.sin(bearing) * math.sin(angle) * math.cos(lat1), math.cos(angle) - math.sin(lat1) * math.sin(lat2)
    )
    return GeoPoint(lat=round(math.degrees(lat2), 6), lon=round(math.degrees(lon2), 6))
