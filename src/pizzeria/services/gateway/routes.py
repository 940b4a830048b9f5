"""The public API as the gateway sees it: which upstream serves each path and who may call it.

The services check the same rules again (they do not trust the network); the gateway checks
first so a refused call never costs an upstream anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pizzeria.kit.auth import Role

#: Anyone, signed in or not.
PUBLIC: frozenset[Role] | None = None
#: Any signed-in caller.
SIGNED_IN: frozenset[Role] = frozenset({"customer", "staff", "courier", "admin"})


def roles(*names: Role) -> frozenset[Role]:
    return frozenset(names)


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # e.g. /api/v1/orders/{id}
    upstream: str
    allowed: frozenset[Role] | None  # None: public
    stream: bool = False  # a long-lived answer (server-sent events), relayed as it comes
    #: Called by devices with their own key (`X-Device-Key`), not a user's token: the gateway
    #: lets no call without a key through, the upstream checks the key.
    device: bool = False
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\{[^/]+\}", "[^/]+", re.escape(self.template).replace(r"\{", "{").replace(r"\}", "}"))
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))


STAFF = roles("staff", "admin")
ADMIN = roles("admin")
CUSTOMER_OR_ADMIN = roles("customer", "admin")
CUSTOMER_OR_STAFF = roles("customer", "staff", "admin")
COURIER = roles("courier", "staff", "admin")

ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/auth/register", "identity", PUBLIC),
    Route("POST", "/api/v1/auth/login", "identity", PUBLIC),
    Route("POST", "/api/v1/auth/refresh", "identity", PUBLIC),
    Route("POST", "/api/v1/auth/logout", "identity", PUBLIC),
    Route("GET", "/api/v1/users/me", "identity", SIGNED_IN),
    Route("GET", "/api/v1/users", "identity", ADMIN),
    Route("GET", "/api/v1/users/{id}", "identity", ADMIN),
    Route("PUT", "/api/v1/users/{id}", "identity", ADMIN),
    Route("DELETE", "/api/v1/users/{id}", "identity", ADMIN),
    Route("GET", "/api/v1/menu", "catalog", PUBLIC),
    Route("GET", "/api/v1/menu/{id}", "catalog", PUBLIC),
    Route("POST", "/api/v1/menu", "catalog", STAFF),
    Route("PUT", "/api/v1/menu/{id}", "catalog", STAFF),
    Route("DELETE", "/api/v1/menu/{id}", "catalog", STAFF),
    Route("POST", "/api/v1/orders", "orders", roles("customer")),
    Route("GET", "/api/v1/orders", "orders", CUSTOMER_OR_STAFF),
    Route("GET", "/api/v1/orders/{id}", "orders", CUSTOMER_OR_STAFF),
    Route("POST", "/api/v1/orders/{id}/cancel", "orders", CUSTOMER_OR_ADMIN),
    Route("GET", "/api/v1/orders/{id}/stream", "orders", CUSTOMER_OR_STAFF, stream=True),
    Route("GET", "/api/v1/payments", "payments", CUSTOMER_OR_ADMIN),
    Route("GET", "/api/v1/payments/{id}", "payments", CUSTOMER_OR_ADMIN),
    Route("POST", "/api/v1/payments/{id}/refund", "payments", ADMIN),
    Route("GET", "/api/v1/notifications", "notifications", CUSTOMER_OR_ADMIN),
    Route("GET", "/api/v1/kitchen/tickets", "kitchen", STAFF),
    Route("POST", "/api/v1/kitchen/tickets/{id}/advance", "kitchen", STAFF),
    Route("GET", "/api/v1/inventory", "kitchen", STAFF),
    Route("PUT", "/api/v1/inventory/{ingredient}", "kitchen", STAFF),
    Route("GET", "/api/v1/deliveries", "delivery", COURIER),
    Route("POST", "/api/v1/deliveries/{id}/advance", "delivery", COURIER),
    Route("GET", "/api/v1/couriers", "delivery", COURIER),
    # Devices: staff and admins manage them, a courier sees their own tracker; the devices
    # report and acknowledge commands with their own key.
    Route("GET", "/api/v1/devices", "devices", COURIER),
    Route("POST", "/api/v1/devices", "devices", STAFF),
    Route("GET", "/api/v1/devices/{id}", "devices", COURIER),
    Route("PUT", "/api/v1/devices/{id}/desired", "devices", STAFF),
    Route("POST", "/api/v1/devices/{id}/commands", "devices", STAFF),
    Route("GET", "/api/v1/devices/{id}/commands", "devices", STAFF),
    Route("GET", "/api/v1/devices/{id}/commands/{command_id}", "devices", STAFF),
    Route("POST", "/api/v1/devices/{id}/reports", "devices", PUBLIC, device=True),
    Route("POST", "/api/v1/devices/{id}/commands/{command_id}/ack", "devices", PUBLIC, device=True),
    # Telemetry: devices send their readings with their own key; staff and admins read every
    # device's, a courier their own tracker's, anyone signed in the courier of an order they
    # may see (the service narrows it: a customer's own order, while out for delivery).
    Route("POST", "/api/v1/telemetry/devices/{id}/readings", "telemetry", PUBLIC, device=True),
    Route("GET", "/api/v1/telemetry/devices", "telemetry", COURIER),
    Route("GET", "/api/v1/telemetry/ingest", "telemetry", STAFF),
    Route("GET", "/api/v1/telemetry/devices/{id}/readings", "telemetry", COURIER),
    Route("GET", "/api/v1/telemetry/devices/{id}/rollups", "telemetry", COURIER),
    Route("GET", "/api/v1/telemetry/couriers/{id}/position", "telemetry", COURIER),
    Route("GET", "/api/v1/telemetry/orders/{id}/courier", "telemetry", SIGNED_IN),
    Route("GET", "/api/v1/ops/sagas", "orders", ADMIN),
    Route("GET", "/api/v1/ops/sagas/{id}", "orders", ADMIN),
    Route("GET", "/api/v1/ops/audit", "audit", ADMIN),
    Route("GET", "/api/v1/ops/analytics", "audit", ADMIN),
)

UPSTREAMS: tuple[str, ...] = tuple(dict.fromkeys(r.upstream for r in ROUTES))

#: Operations routes every service has (its own dead letters and outbox); the gateway asks all
#: of them and merges the answers (`services/gateway/ops.py`).
EVERY_SERVICE = "*"
FANNED_OUT: tuple[Route, ...] = (
    Route("GET", "/api/v1/ops/dlq", EVERY_SERVICE, ADMIN),
    Route("GET", "/api/v1/ops/dlq/{id}", EVERY_SERVICE, ADMIN),
    Route("POST", "/api/v1/ops/dlq/{id}/replay", EVERY_SERVICE, ADMIN),
    Route("POST", "/api/v1/ops/dlq/{id}/discard", EVERY_SERVICE, ADMIN),
    Route("GET", "/api/v1/ops/outbox", EVERY_SERVICE, ADMIN),
    # The fault lab's switches (services/gateway/faults.py); the gateway's own answer merges them.
    Route("GET", "/api/v1/ops/faults", EVERY_SERVICE, ADMIN),
)


@dataclass(frozen=True)
class Match:
    route: Route | None
    methods: frozenset[str]  # every method the path has (for 405's Allow header)


def match(method: str, path: str) -> Match:
    """The route for `method path`; when the path exists under other methods only, `route` is
    None and `methods` names them."""
    found = [r for r in ROUTES if r.pattern.match(path)]
    # A literal segment wins over a parameter (/users/me before /users/{id}).
    found.sort(key=lambda r: r.template.count("{"))
    methods = frozenset(r.method for r in found)
    route = next((r for r in found if r.method == method), None)
    return Match(route, methods)
