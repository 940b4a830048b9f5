"""Business metrics of telemetry: readings taken in and refused, by where they came from."""

from prometheus_client import Counter, Gauge

readings_ingested = Counter(
    "pizzeria_telemetry_readings_total",
    "Readings taken in, by source (http, mqtt) and outcome (stored, duplicate: stored before).",
    ["source", "outcome"],
)
readings_rejected = Counter(
    "pizzeria_telemetry_readings_rejected_total",
    "Readings refused, by source (http, mqtt) and reason (invalid: a bad reading in the batch; "
    "unauthorized: not the device's key; malformed: not a batch at all).",
    ["source", "reason"],
)
mqtt_subscribed = Gauge(
    "pizzeria_telemetry_mqtt_subscribed",
    "1 while this replica takes the devices' readings over MQTT (on PostgreSQL one replica at a time).",
)
