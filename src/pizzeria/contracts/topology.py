"""Who publishes and who consumes what: the topics to create and every consumer group.

The single source for topic creation (`pizzeria up`, `pizzeria topics create`), for the
services' subscriptions and for the AsyncAPI document.
"""

from __future__ import annotations

from pizzeria.messaging.topics import dlq_topic

#: Fact topics, one per bounded context that emits events.
EVENT_TOPICS = (
    "identity.events", "catalog.events", "orders.events", "kitchen.events", "payments.events", "delivery.events",
    "notifications.events", "ops.events",
)
#: Command topics, one per context that executes saga commands.
COMMAND_TOPICS = ("kitchen.commands", "payments.commands", "delivery.commands")

#: consumer group → the topics it reads. A group is named after the service that owns it.
CONSUMER_GROUPS: dict[str, tuple[str, ...]] = {
    # the order saga's replies, and the menu copy
    "orders": ("catalog.events", "kitchen.events", "payments.events", "delivery.events"),
    # the order read model (CQRS), fed by every context's facts
    "orders-projection": ("orders.events", "payments.events", "delivery.events"),
    "kitchen": ("catalog.events", "kitchen.commands"),
    "payments": ("payments.commands",),
    "delivery": ("delivery.commands",),
    "notifications": ("orders.events", "payments.events"),
    # the append-only audit log: everything
    "audit": (*EVENT_TOPICS, *COMMAND_TOPICS),
    # business analytics (a read model in the audit service): orders and payments
    "analytics": ("orders.events", "payments.events"),
}


def all_topics() -> list[str]:
    """Every topic the system needs, dead-letter topics included."""
    return sorted({*EVENT_TOPICS, *COMMAND_TOPICS, *(dlq_topic(g) for g in CONSUMER_GROUPS)})
