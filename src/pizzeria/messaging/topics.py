"""Topic names and specs. Facts go to `<context>.events`, saga commands to `<context>.commands`,
and every consumer group has its own dead-letter topic `<group>.dlq`."""

from __future__ import annotations

from collections.abc import Iterable

from pizzeria.messaging.broker import TopicSpec


def events_topic(context: str) -> str:
    """The topic of a bounded context's facts."""
    return f"{context}.events"


def commands_topic(context: str) -> str:
    """The topic of the commands a bounded context executes."""
    return f"{context}.commands"


def dlq_topic(group: str) -> str:
    """The dead-letter topic of a consumer group."""
    return f"{group}.dlq"


def topic_specs(
    names: Iterable[str], *, partitions: int, replication_factor: int = 1, min_insync_replicas: int = 1
) -> list[TopicSpec]:
    return [
        TopicSpec(
            name, partitions=partitions, replication_factor=replication_factor, min_insync_replicas=min_insync_replicas
        )
        for name in sorted(set(names))
    ]
