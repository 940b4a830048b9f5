"""Prometheus metrics shared by every service; one process is one service, so the default
registry is the service's registry. Names follow Prometheus conventions (unit suffixes,
`_total` counters)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)

http_request_duration = Histogram(
    "pizzeria_http_request_duration_seconds",
    "HTTP request duration by route template, method and status code.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
db_pool_connections = Gauge(
    "pizzeria_db_pool_connections",
    "Database pool connections by state.",
    ["state"],
)
db_statements = Counter(
    "pizzeria_db_statements_total",
    "SQL statements sent to the database (an executemany of many rows counts once).",
)
db_transactions = Counter("pizzeria_db_transactions_total", "Database transactions committed.")
group_commit_set_size = Histogram(
    "pizzeria_group_commit_set_size",
    "Items written per set (one transaction) by a group commit, by what it writes.",
    ["set"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


def observe_many(series: Any, value: float, count: int) -> None:
    """`count` observations of the same `value` in one histogram series (a child, labels
    chosen): the same count and buckets as `count` calls of `observe(value)`, and their sum (as
    one product, so it may differ from a running sum in the last bits), for two
    updates instead of two a call (a consumer's run of messages shares its handling time).
    Falls back to one call each if the client's histogram is not laid out as expected."""
    try:
        bounds, buckets, total = series._upper_bounds, series._buckets, series._sum
    except AttributeError:
        for _ in range(count):
            series.observe(value)
        return
    if count <= 0:
        return
    total.inc(value * count)
    for i, bound in enumerate(bounds):
        if value <= bound:
            buckets[i].inc(count)
            break
