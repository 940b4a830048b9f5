"""Who may write what on the bus, as the topology declares it: every topic has the one writer it
should, each service reads only what its groups consume, the Kafka ACLs say exactly that, and
each service logs in as its own user."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from pizzeria.cli import render_acls
from pizzeria.contracts import ops
from pizzeria.contracts.topology import (
    BUS_SERVICES,
    COMMAND_TOPICS,
    CONSUMER_GROUPS,
    EVENT_TOPICS,
    MONITOR,
    REBUILT_GROUPS,
    RUNS,
    all_topics,
    bus_grants,
    generation_group,
    groups_of,
    replayable,
)
from pizzeria.kit.settings import KafkaLogin, Settings
from pizzeria.messaging.kafka import security_config
from pizzeria.messaging.topics import dlq_topic, events_topic
from pizzeria.registry import SERVICES
from pizzeria.services.orders.projection import BASE_GROUP

ACLS = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "acls.txt"
OPS_EVENTS = events_topic(ops.CONTEXT)


def allowed(operation: str, resource: str = "TOPIC") -> dict[str, set[str]]:
    """name → the users allowed `operation` on it (literal names only)."""
    found: dict[str, set[str]] = defaultdict(set)
    for grant in bus_grants():
        if grant.operation == operation and grant.resource == resource and grant.pattern == "LITERAL":
            found[grant.name].add(grant.user)
    return found


def test_every_service_with_a_database_is_on_the_bus() -> None:
    assert set(BUS_SERVICES) == {s.name for s in SERVICES if s.has_database}
    assert set(RUNS) == set(BUS_SERVICES)


def test_every_consumer_group_is_run_by_one_service() -> None:
    owners: dict[str, list[str]] = defaultdict(list)
    for service in BUS_SERVICES:
        for group in groups_of(service):
            owners[group].append(service)
    assert set(owners) == set(CONSUMER_GROUPS)
    assert all(len(services) == 1 for services in owners.values()), owners


def test_each_fact_and_command_topic_has_exactly_one_writer() -> None:
    writers = allowed("WRITE")
    for topic in (*EVENT_TOPICS, *COMMAND_TOPICS):
        if topic == OPS_EVENTS:
            continue
        assert len(writers[topic]) == 1, f"{topic}: written by {writers[topic]}"
    assert writers["payments.events"] == {"payments"}
    assert writers["kitchen.events"] == {"kitchen"}
    assert writers["kitchen.commands"] == writers["payments.commands"] == writers["delivery.commands"] == {"orders"}


def test_operations_facts_come_from_every_service_and_dead_letters_from_their_group() -> None:
    writers = allowed("WRITE")
    assert writers[OPS_EVENTS] == set(BUS_SERVICES)
    for service in BUS_SERVICES:
        for group in groups_of(service):
            assert writers[dlq_topic(group)] == {service}


def test_a_service_reads_only_what_its_groups_consume_and_joins_only_its_groups() -> None:
    readers = allowed("READ")
    for topic in all_topics():
        consumers = {s for s in BUS_SERVICES for g in groups_of(s) if topic in CONSUMER_GROUPS[g]}
        assert readers.get(topic, set()) - {MONITOR} == consumers, topic
    members = allowed("READ", "GROUP")
    for group in CONSUMER_GROUPS:
        if group not in REBUILT_GROUPS:
            assert members[group] == {s for s in BUS_SERVICES if group in groups_of(s)}, group
    assert "payments" not in readers["orders.events"]
    assert "kitchen" not in readers["payments.events"]


def test_a_rebuilt_group_is_joined_by_generation() -> None:
    assert BASE_GROUP in REBUILT_GROUPS
    (prefix,) = [g for g in bus_grants() if g.resource == "GROUP" and g.pattern == "PREFIXED"]
    assert prefix.user == "orders"
    assert generation_group(BASE_GROUP, 7).startswith(prefix.name)
    assert not "orders-projectionist".startswith(prefix.name)


def test_the_monitor_sees_everything_and_writes_nothing() -> None:
    theirs = [g for g in bus_grants() if g.user == MONITOR]
    assert {g.operation for g in theirs} == {"READ", "DESCRIBE", "DESCRIBE_CONFIGS"}
    assert all(g.user != MONITOR for g in bus_grants() if g.operation == "WRITE")


def test_users_follow_the_username_template() -> None:
    grants = bus_grants(lambda service: f"pizzeria-{service}")
    assert {g.user for g in grants} == {f"pizzeria-{s}" for s in (*BUS_SERVICES, MONITOR)}


def test_the_committed_acl_list_is_current() -> None:
    # Regenerate with `pizzeria kafka-acls -o deploy/kafka/acls.txt` after changing the topology.
    assert ACLS.read_text() == render_acls(Settings(KAFKA_SASL_USERNAME="{service}"))  # type: ignore[call-arg]


def test_each_service_logs_in_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_KAFKA_SASL_PASSWORD", "orders-secret")
    settings = Settings(  # type: ignore[call-arg]
        KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_PASSWORD="shared", KAFKA_SSL_CA_LOCATION="/ca.pem"
    )
    orders = settings.kafka_login("orders")
    assert (orders.username, orders.password, orders.mechanism) == ("orders", "orders-secret", "SCRAM-SHA-512")
    assert settings.kafka_login("kitchen").password == "shared"
    assert "orders-secret" not in repr(orders)
    admin = settings.kafka_admin_login()
    assert (admin.username, admin.mechanism) == ("admin", "PLAIN")


def test_librdkafka_is_told_how_to_log_in() -> None:
    assert security_config(None) == {}
    assert security_config(KafkaLogin("PLAINTEXT", "SCRAM-SHA-512", "orders", "")) == {"security.protocol": "plaintext"}
    assert security_config(KafkaLogin("SASL_SSL", "SCRAM-SHA-512", "orders", "pw", "/ca.pem")) == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "orders",
        "sasl.password": "pw",
        "ssl.ca.location": "/ca.pem",
    }
    assert "ssl.ca.location" not in security_config(KafkaLogin("SASL_PLAINTEXT", "PLAIN", "admin", "pw", "/ca.pem"))


def test_production_refuses_a_broker_that_asks_nobody_who_they_are() -> None:
    base = {
        "PIZZERIA_MODE": "production",
        "DATABASE_URL": "postgresql+asyncpg://db/x",
        "BROKER_URL": "kafka://k:9092",
        "JWT_SECRET": "x" * 48,
    }
    open_broker = Settings(**base).production_problems("orders")  # type: ignore[arg-type]
    assert any("KAFKA_SECURITY_PROTOCOL" in p for p in open_broker)
    no_password = Settings(**base, KAFKA_SECURITY_PROTOCOL="SASL_SSL").production_problems("orders")  # type: ignore[arg-type]
    assert any("ORDERS_KAFKA_SASL_PASSWORD" in p for p in no_password)
    secured = Settings(**base, KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_PASSWORD="pw")  # type: ignore[arg-type]
    assert secured.production_problems("orders") == []
    assert secured.production_problems("gateway", messaging=False) == []


def test_a_dead_letter_is_replayed_only_into_a_group_its_service_runs() -> None:
    """The API and `pizzeria dlq replay` refuse a dead letter of a group its service does not
    run (an earlier release's, a rebuilt group's base name); any generation of a rebuilt group
    passes (which ones run is the service's state)."""
    assert replayable("audit", "audit")
    assert replayable("audit", "audit-access")
    assert not replayable("audit", "analytics")
    assert replayable("orders", generation_group("orders-projection", 7))
    assert not replayable("orders", "orders-projection")
    assert not replayable("kitchen", generation_group("orders-projection", 1))
