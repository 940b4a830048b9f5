"""Business metrics of orders: what was ordered and how long orders take to get paid and
delivered. Observed once the change has committed (a rolled-back change is not counted)."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import Counter, Histogram

from pizzeria.kit.metrics import FLOW_BUCKETS
from pizzeria.services.orders.domain import Status

orders_placed = Counter("pizzeria_orders_placed_total", "Orders placed (a replayed request is not counted again).")
status_changes = Counter(
    "pizzeria_order_status_changes_total",
    "Order status changes by the status reached and, for cancellations, the reason.",
    ["status", "reason"],
)
place_to_paid = Histogram(
    "pizzeria_order_place_to_paid_seconds", "From an order's placement to its payment.", buckets=FLOW_BUCKETS
)
place_to_delivered = Histogram(
    "pizzeria_order_place_to_delivered_seconds", "From an order's placement to its delivery.", buckets=FLOW_BUCKETS
)


def status_reached(status: Status, reason: str | None, since_placed: timedelta) -> None:
    status_changes.labels(status.value, reason or "").inc()
    if status is Status.PAID:
        place_to_paid.observe(since_placed.total_seconds())
    elif status is Status.DELIVERED:
        place_to_delivered.observe(since_placed.total_seconds())
