"""Who publishes and who consumes what: the topics to create and every consumer group.

The single source for topic creation (`pizzeria up`, `pizzeria topics create`), for the
services' subscriptions and for the AsyncAPI document. Topic names follow from the contexts
(`messaging.topics`); the topics to create follow from the message types declared here.
"""

from __future__ import annotations

from pizzeria.contracts import catalog, delivery, identity, kitchen, notifications, ops, orders, payments
from pizzeria.messaging.message import REGISTRY
from pizzeria.messaging.topics import commands_topic, dlq_topic, events_topic

#: Every contract module, so that every message type is registered before the topics are read.
CONTEXTS = (identity, catalog, orders, kitchen, payments, delivery, notifications, ops)

#: Fact topics, one per bounded context that emits events.
EVENT_TOPICS = tuple(sorted({m.topic() for m in REGISTRY.values() if m.message_kind == "event"}))
#: Command topics, one per context that executes saga commands.
COMMAND_TOPICS = tuple(sorted({m.topic() for m in REGISTRY.values() if m.message_kind == "command"}))

#: consumer group → the topics it reads. A group is named after the service that owns it.
CONSUMER_GROUPS: dict[str, tuple[str, ...]] = {
    # the order saga's replies, and the menu copy
    "orders": tuple(events_topic(c.CONTEXT) for c in (catalog, kitchen, payments, delivery)),
    # the order read model (CQRS), fed by every context's facts
    "orders-projection": tuple(events_topic(c.CONTEXT) for c in (orders, payments, delivery)),
    "kitchen": (events_topic(catalog.CONTEXT), commands_topic(kitchen.CONTEXT)),
    "payments": (commands_topic(payments.CONTEXT),),
    "delivery": (commands_topic(delivery.CONTEXT),),
    "notifications": (events_topic(orders.CONTEXT), events_topic(payments.CONTEXT)),
    # the append-only audit log: everything
    "audit": (*EVENT_TOPICS, *COMMAND_TOPICS),
    # business analytics (a read model in the audit service): orders and payments
    "analytics": (events_topic(orders.CONTEXT), events_topic(payments.CONTEXT)),
}

#: Services that check access tokens against the token epochs identity announces; each has a
#: group `<service>-access` on identity's events (chassis/access.py).
TOKEN_CHECKERS = ("identity", "catalog", "orders", "kitchen", "payments", "delivery", "notifications", "audit")


def access_group(service: str) -> str:
    return f"{service}-access"


CONSUMER_GROUPS.update({access_group(s): (events_topic(identity.CONTEXT),) for s in TOKEN_CHECKERS})


def all_topics() -> list[str]:
    """Every topic the system needs, dead-letter topics included."""
    return sorted({*EVENT_TOPICS, *COMMAND_TOPICS, *(dlq_topic(g) for g in CONSUMER_GROUPS)})
