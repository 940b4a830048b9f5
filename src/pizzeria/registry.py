"""Every process of the system, in the order `pizzeria up` reports them, and where its app and migrations live.

Entries are dotted paths so that naming a service does not import it (and its dependencies).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pizzeria.kit.migrations import MigrationSet


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    #: Has `create_app(settings)`; when the service owns a database, the `tables` module beside it
    #: has its `MIGRATIONS` (applying them imports the tables, not the whole service).
    module: str
    summary: str
    has_database: bool = True
    #: Why only one of it may run (empty: it may run as several replicas).
    single: str = ""
    #: A client of the running system: `pizzeria up` starts it once every service is ready.
    client: bool = False

    def load(self) -> Any:
        return importlib.import_module(self.module)

    def migrations(self) -> MigrationSet:
        tables = importlib.import_module(f"{self.module.rpartition('.')[0]}.tables")
        migrations: MigrationSet = tables.MIGRATIONS
        return migrations


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry(
        "provider",
        "pizzeria.simulators.payment_provider",
        "simulated payment provider (external)",
        has_database=False,
        single="the payment provider simulator keeps its ledger in memory",
    ),
    ServiceEntry("identity", "pizzeria.services.identity.app", "accounts, sign-in, access tokens"),
    ServiceEntry("catalog", "pizzeria.services.catalog.app", "menu"),
    ServiceEntry("kitchen", "pizzeria.services.kitchen.app", "stock, reservations, kitchen tickets"),
    ServiceEntry("payments", "pizzeria.services.payments.app", "charges and refunds through the provider"),
    ServiceEntry("delivery", "pizzeria.services.delivery.app", "couriers and deliveries"),
    ServiceEntry("devices", "pizzeria.services.devices.app", "ovens and trackers: twins, commands, presence"),
    ServiceEntry("telemetry", "pizzeria.services.telemetry.app", "devices' readings: time series, alarms, arrivals"),
    ServiceEntry("orders", "pizzeria.services.orders.app", "orders and the order saga"),
    ServiceEntry("notifications", "pizzeria.services.notifications.app", "email / SMS / push to customers"),
    ServiceEntry("audit", "pizzeria.services.audit.app", "the append-only audit log of every message"),
    ServiceEntry(
        "gateway",
        "pizzeria.services.gateway.app",
        "the public API: auth, roles, rate limits, breakers",
        has_database=False,
        single="`pizzeria up` runs one gateway, the one address clients use; "
        "run more behind a load balancer of your own",
    ),
)

#: Processes that play devices of the outside world, started by `pizzeria up` only when asked
#: (`DEVICE_SIMULATORS=1`): they are no part of the system, and no deployment runs them.
SIMULATORS: tuple[ServiceEntry, ...] = (
    ServiceEntry(
        "devicesim",
        "pizzeria.simulators.devices",
        "simulated ovens and couriers' trackers (clients of the API)",
        has_database=False,
        single="the simulated devices keep their state in memory",
        client=True,
    ),
)

BY_NAME = {s.name: s for s in (*SERVICES, *SIMULATORS)}

#: The service the clients call (`pizzeria up` stops it before the services behind it), and the
#: one that plays the outside world the services call (stopped after them).
EDGE = "gateway"
OUTSIDE = "provider"


def entry(name: str) -> ServiceEntry:
    try:
        return BY_NAME[name]
    except KeyError:
        raise SystemExit(f"unknown service {name!r}; known: {', '.join(BY_NAME)}") from None
