"""Metrics of the messaging layer: outbox, relay, consumers, dead letters."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from pizzeria.kit.metrics import LATENCY_BUCKETS

outbox_backlog = Gauge("pizzeria_outbox_backlog_messages", "Outbox rows committed but not yet published.")
outbox_relay_leading = Gauge(
    "pizzeria_outbox_relay_leading", "1 while this process's outbox relay is the one that publishes for its database."
)
outbox_oldest_age = Gauge("pizzeria_outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished outbox row.")
outbox_published = Counter("pizzeria_outbox_published_total", "Outbox rows published.")
outbox_batches = Counter(
    "pizzeria_outbox_batches_total", "Relay batches published (rows published / batches: the mean batch)."
)
outbox_publish_latency = Histogram(
    "pizzeria_outbox_publish_latency_seconds",
    "From the outbox row's creation (its transaction) to the broker's acknowledgement.",
    buckets=LATENCY_BUCKETS,
)
outbox_publish_failures = Counter(
    "pizzeria_outbox_publish_failures_total", "Relay batches the broker did not acknowledge."
)
consumer_messages = Counter(
    "pizzeria_consumer_messages_total",
    "Messages consumed, by group and outcome (processed, duplicate, ignored, dead_lettered).",
    ["group", "outcome"],
)
consumer_runs = Counter(
    "pizzeria_consumer_runs_total",
    "Runs of records a consumer fetched and handled together (messages / runs: the mean run), by group.",
    ["group"],
)
consumer_handler_duration = Histogram(
    "pizzeria_consumer_handler_duration_seconds",
    "Handler time including its transaction, by group and message type.",
    ["group", "type"],
    buckets=LATENCY_BUCKETS,
)
consumer_retries = Counter(
    "pizzeria_consumer_retries_total", "Handler attempts that failed and were retried.", ["group"]
)
consumer_dead_letters = Counter(
    "pizzeria_consumer_dead_letters_total", "Messages sent to a dead-letter topic.", ["group"]
)
consumer_lag = Gauge(
    "pizzeria_consumer_lag_messages",
    "Records between a partition's end and the group's committed offset.",
    ["group", "topic", "partition"],
)
consumer_stuck = Gauge(
    "pizzeria_consumer_stuck",
    "1 while a consumer group has been held up on one record longer than CONSUMER_STUCK_AFTER_S.",
    ["group"],
)
