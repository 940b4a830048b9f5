"""Every event and command that crosses a service boundary, one module per bounded context.

Services import each other's contracts, never each other's code. Importing this package
registers every message type (the AsyncAPI document is generated from the registry).
"""

from pizzeria.contracts import (
    catalog,
    delivery,
    devices,
    identity,
    kitchen,
    notifications,
    ops,
    orders,
    payments,
    telemetry,
)

__all__ = [
    "catalog",
    "delivery",
    "devices",
    "identity",
    "kitchen",
    "notifications",
    "ops",
    "orders",
    "payments",
    "telemetry",
]
