"""Who publishes and who consumes what: the topics to create, every consumer group, and who may
write and read which topic on Kafka.

The single source for topic creation (`pizzeria up`, `pizzeria topics create`), for the
services' subscriptions, for the AsyncAPI document and for the brokers' ACLs (`pizzeria
kafka-acls`). Topic names follow from the contexts (`messaging.topics`); the topics to create
follow from the message types declared here.
"""

from __future__ import annotations

from collections.abc import Callable

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
from pizzeria.messaging import acl
from pizzeria.messaging.acl import Grant
from pizzeria.messaging.message import REGISTRY
from pizzeria.messaging.topics import commands_topic, dlq_topic, events_topic

#: Every contract module, so that every message type is registered before the topics are read.
CONTEXTS = (identity, catalog, orders, kitchen, payments, delivery, devices, telemetry, notifications, ops)

#: Fact topics, one per bounded context that emits events.
EVENT_TOPICS = tuple(sorted({m.topic() for m in REGISTRY.values() if m.message_kind == "event"}))
#: Command topics, one per context that executes commands (the saga's, and the devices').
COMMAND_TOPICS = tuple(sorted({m.topic() for m in REGISTRY.values() if m.message_kind == "command"}))

#: consumer group → the topics it reads. A group is named after the service that owns it.
CONSUMER_GROUPS: dict[str, tuple[str, ...]] = {
    # the order saga's replies, and the menu copy
    "orders": tuple(events_topic(c.CONTEXT) for c in (catalog, kitchen, payments, delivery)),
    # the order read model (CQRS), fed by every context's facts
    "orders-projection": tuple(events_topic(c.CONTEXT) for c in (orders, payments, delivery)),
    # the saga's commands to the kitchen
    "kitchen": (commands_topic(kitchen.CONTEXT),),
    # the kitchen's copy of the recipes, read apart from the commands: a reservation that comes
    # before its recipe waits for it (`NotYet`) without holding up the event that brings it
    "kitchen-menu": (events_topic(catalog.CONTEXT),),
    "payments": (commands_topic(payments.CONTEXT),),
    "delivery": (commands_topic(delivery.CONTEXT),),
    # devices learns that a device was heard from through telemetry's word (DeviceSeen)
    "devices": (events_topic(telemetry.CONTEXT),),
    # telemetry's copy of the devices (and their keys' digests) and of the deliveries under way
    "telemetry": (events_topic(devices.CONTEXT), events_topic(delivery.CONTEXT)),
    # every order's story, and a courier arriving (telemetry)
    "notifications": (events_topic(orders.CONTEXT), events_topic(payments.CONTEXT), events_topic(telemetry.CONTEXT)),
    # the append-only audit log: everything; and from the same runs, the business analytics (a
    # read model beside the log, made of the facts of orders and payments)
    "audit": (*EVENT_TOPICS, *COMMAND_TOPICS),
}

#: Services that check access tokens against the token epochs identity announces; each has a
#: group `<service>-access` on identity's events (chassis/access.py).
TOKEN_CHECKERS = (
    "identity",
    "catalog",
    "orders",
    "kitchen",
    "payments",
    "delivery",
    "devices",
    "telemetry",
    "notifications",
    "audit",
)


def access_group(service: str) -> str:
    return f"{service}-access"


CONSUMER_GROUPS.update({access_group(s): (events_topic(identity.CONTEXT),) for s in TOKEN_CHECKERS})

#: Groups a service starts anew under another name to rebuild what they feed (a read model):
#: `<group>-g<generation>`. Their failures still go to `<group>.dlq`.
REBUILT_GROUPS = ("orders-projection",)


def generations_of(group: str) -> str:
    """What the name of every generation of a rebuilt group begins with."""
    return f"{group}-g"


def generation_group(group: str, generation: int) -> str:
    """The consumer group of one generation of a rebuilt group."""
    return f"{generations_of(group)}{generation}"


#: service → the topics its outbox writes, besides what every service on the bus writes: the
#: dead-letter topics of its own groups and the operations facts (dead letters replayed or
#: discarded through its API). The order saga sends every command.
PUBLISHES: dict[str, tuple[str, ...]] = {
    "identity": (events_topic(identity.CONTEXT),),
    "catalog": (events_topic(catalog.CONTEXT),),
    "orders": (events_topic(orders.CONTEXT), *(commands_topic(c.CONTEXT) for c in (kitchen, payments, delivery))),
    "kitchen": (events_topic(kitchen.CONTEXT),),
    "payments": (events_topic(payments.CONTEXT),),
    "delivery": (events_topic(delivery.CONTEXT),),
    # its facts, and the commands to the devices themselves
    "devices": (events_topic(devices.CONTEXT), commands_topic(devices.CONTEXT)),
    "telemetry": (events_topic(telemetry.CONTEXT),),
    "notifications": (events_topic(notifications.CONTEXT),),
    "audit": (),
}

#: service → the consumer groups it runs besides its `<service>-access` group.
RUNS: dict[str, tuple[str, ...]] = {
    "identity": (),
    "catalog": (),
    "orders": ("orders", "orders-projection"),
    "kitchen": ("kitchen", "kitchen-menu"),
    "payments": ("payments",),
    "delivery": ("delivery",),
    "devices": ("devices",),
    "telemetry": ("telemetry",),
    "notifications": ("notifications",),
    "audit": ("audit",),
}

#: The services on the bus: each logs in to Kafka as its own user.
BUS_SERVICES = tuple(PUBLISHES)

#: A read-only user for operators' tools (the Kafka UI): sees every topic, group and setting,
#: writes nothing.
MONITOR = "monitor"


def groups_of(service: str) -> tuple[str, ...]:
    """Every consumer group `service` runs."""
    access = access_group(service)
    return (*RUNS[service], *((access,) if access in CONSUMER_GROUPS else ()))


def replayable(service: str, group: str) -> bool:
    """Whether a dead letter of `group` can be replayed in `service`: a group it runs, or any
    generation of a rebuilt group it runs (which generations run is the service's own state,
    and a rebuild's starts within a second), but not a group it no longer runs, such as an
    earlier release's, nor a rebuilt group's base name (only its generations run). A service
    the topology does not know (a test's) is taken at its word."""
    if service not in RUNS:
        return True
    runs = groups_of(service)
    rebuilt = [generations_of(g) for g in REBUILT_GROUPS if g in runs]
    return any(group.startswith(prefix) for prefix in rebuilt) or (group in runs and group not in REBUILT_GROUPS)


def bus_grants(user_of: Callable[[str], str] = str) -> list[Grant]:
    """Every ACL of the cluster: each service (as the user `user_of(service)`) may write its own
    topics and its groups' dead letters, read the topics its groups consume, and join those
    groups; the monitor may look at everything. Nothing else is allowed anyone but the
    administrator (a super user)."""
    grants: set[Grant] = set()
    for service in BUS_SERVICES:
        user = user_of(service)
        groups = groups_of(service)
        writes = {*PUBLISHES[service], events_topic(ops.CONTEXT), *(dlq_topic(g) for g in groups)}
        reads = {topic for g in groups for topic in CONSUMER_GROUPS[g]}
        grants.update(acl.topic(user, "WRITE", t) for t in writes)
        grants.update(acl.topic(user, "READ", t) for t in reads)
        grants.update(
            acl.group(user, generations_of(g), prefixed=True) if g in REBUILT_GROUPS else acl.group(user, g)
            for g in groups
        )
    monitor = user_of(MONITOR)
    grants.update(acl.topic(monitor, operation, acl.EVERY) for operation in ("READ", "DESCRIBE_CONFIGS"))
    grants.add(Grant(monitor, "GROUP", "LITERAL", acl.EVERY, "DESCRIBE"))
    grants.update(Grant(monitor, "CLUSTER", "LITERAL", acl.CLUSTER_NAME, op) for op in ("DESCRIBE", "DESCRIBE_CONFIGS"))
    return sorted(grants)


def all_topics() -> list[str]:
    """Every topic the system needs, dead-letter topics included."""
    return sorted({*EVENT_TOPICS, *COMMAND_TOPICS, *(dlq_topic(g) for g in CONSUMER_GROUPS)})
