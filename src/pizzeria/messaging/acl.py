"""Who may do what on the bus, as Kafka ACLs: one `Grant` is one ALLOW rule. Nothing is allowed
that no grant names (the brokers run with `allow.everyone.if.no.acl.found=false`).

contracts/topology.py derives the grants from who publishes and who consumes what; the Kafka
adapter makes a cluster's ACLs exactly these (KafkaBroker.apply_access)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Operation = Literal["READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"]
Resource = Literal["TOPIC", "GROUP", "CLUSTER"]
Pattern = Literal["LITERAL", "PREFIXED"]

#: The name Kafka gives the one cluster resource.
CLUSTER_NAME = "kafka-cluster"
#: A literal resource name that matches every resource of its type.
EVERY = "*"


@dataclass(frozen=True, order=True)
class Grant:
    """`User:<user>` may `operation` the `resource` named `name` (or every one whose name begins
    with it, when `pattern` is PREFIXED), from any host."""

    user: str
    resource: Resource
    pattern: Pattern
    name: str
    operation: Operation

    @property
    def principal(self) -> str:
        return f"User:{self.user}"

    def line(self) -> str:
        """One line of `pizzeria kafka-acls`: the rule as kafka-acls.sh --list would word it."""
        return f"{self.principal:<24} ALLOW {self.operation:<16} {self.resource:<7} {self.pattern:<8} {self.name}"


def topic(user: str, operation: Operation, name: str) -> Grant:
    return Grant(user, "TOPIC", "LITERAL", name, operation)


def group(user: str, name: str, *, prefixed: bool = False) -> Grant:
    """Membership of a consumer group: joining it and committing its offsets (READ)."""
    return Grant(user, "GROUP", "PREFIXED" if prefixed else "LITERAL", name, "READ")
