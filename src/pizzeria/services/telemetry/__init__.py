"""Telemetry: the ovens' and trackers' readings, kept as time series and turned into events.

Sending readings (a device, with the key devices issued it when it was registered)::

    POST /api/v1/telemetry/devices/{device_id}/readings
    X-Device-Key: <the device's key>
    {"readings": [
        {"at": "2026-11-29T12:00:00.250Z", "temperature_c": 431.5, "door_open": false},
        {"at": "2026-11-29T12:00:01.250Z", "temperature_c": 432.0}
    ]}
    → 200 {"stored": 2, "duplicates": 0}

- An oven sends `temperature_c` (°C, needed) and `door_open`; a tracker `lat` and `lon`
  (degrees, needed), `speed_mps` and `battery_pct`. Values of the other kind are refused.
- `at` is the device's own clock, RFC 3339 with its offset (or Unix seconds), kept to the
  millisecond. Readings may come in any order and late; they are stored and read in time
  order. A reading of a time already stored is a duplicate: ignored (so a batch whose answer
  was lost can simply be sent again).
- A batch is one device's, 1 to `TELEMETRY_MAX_BATCH` (1000) readings, and is taken whole or
  not at all: one bad reading (a wrong or missing value, a time in the future beyond
  `TELEMETRY_CLOCK_SKEW_S` or older than `TELEMETRY_RETENTION_S`) refuses the batch with a 422
  problem whose `errors` name each bad reading (`readings.3.lat`) and why.
- 401 without the key or with one that is not the device's (or for a device telemetry does
  not know yet: it learns of a registration from devices' events within moments; retry).
- Over MQTT (when `MQTT_URL` is set) the same batch, with the key in it, is published to
  `pizzeria/devices/{device_id}/telemetry` (see `mqtt.py`).

Reading them (people, with an access token; see `api.py`): the devices with their newest
values, a device's readings and per-minute rollups over a time span, a courier's newest
position, and the position and estimated arrival of the courier bringing an order.

Telemetry shares no table with anyone: it keeps its own copy of the devices (kind, place, key
digest, an oven's desired temperature) from devices' events and of the orders out for delivery
from delivery's, and announces what the readings mean on `telemetry.events`.
"""
