"""One place for the Kafka server settings: deploy/kafka/broker.properties, which the test
cluster reads as a file and the Compose brokers as KAFKA_* variables.

Why variables and not the file mounted into the apache/kafka image: the image's start script
fills every one of a list of settings left unset in the environment with single-broker values
(offsets and transaction topics with one copy, among others) and appends them after a mounted
file, so they would silently win over it. Every line of the file is therefore a variable of each
broker, and these tests keep the two equal."""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree

from tests.deploy.tools import DEPLOY, ROOT
from tests.support.kafka import ADMIN

PROPERTIES = DEPLOY / "kafka" / "broker.properties"
#: The administrator's login: it names the deployment's secret, so it is set where the brokers
#: start (tests/support/kafka.py admin_login), never in the shared file.
ADMIN_LOGIN = frozenset(
    {"KAFKA_LISTENER_NAME_BROKER_PLAIN_SASL_JAAS_CONFIG", "KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG"}
)
#: Set per node (or per cluster) by whoever starts it, never in the shared file.
NODE_VARIABLES = frozenset(
    {
        "CLUSTER_ID",
        "KAFKA_NODE_ID",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LOG_DIRS",
        "KAFKA_HEAP_OPTS",
        *ADMIN_LOGIN,
    }
)
#: What the apache/kafka image sets when the environment leaves them unset (its configureDefaults).
IMAGE_DEFAULTS = frozenset(
    {
        "CLUSTER_ID",
        "KAFKA_NODE_ID",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_LOG_DIRS",
    }
)
#: A single development broker can hold one copy only.
SINGLE_BROKER = {
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
}


def broker_properties() -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in PROPERTIES.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        assert not line.endswith("\\"), "keep one property per line"
        key, separator, value = line.partition("=")
        assert separator, line
        assert key.strip() not in found, f"{key} twice"
        found[key.strip()] = value.strip()
    return found


def variable(key: str) -> str:
    """The apache/kafka image's name for a property: `.` → `_`, `_` → `__`, `-` → `___`."""
    return "KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def brokers(project: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {name: s["environment"] for name, s in project["services"].items() if s["image"].startswith("apache/kafka:")}


def test_the_shared_settings_are_the_ones_the_platform_needs() -> None:
    shared = broker_properties()
    assert shared["auto.create.topics.enable"] == "false"
    assert shared["num.partitions"] == "3"
    assert int(shared["default.replication.factor"]) == int(shared["offsets.topic.replication.factor"]) == 3
    assert int(shared["min.insync.replicas"]) == int(shared["transaction.state.log.min.isr"]) == 2
    assert not {variable(k) for k in shared} & NODE_VARIABLES, "node settings do not belong in the shared file"


def test_every_client_logs_in_and_is_allowed_only_what_its_acls_say() -> None:
    shared = broker_properties()
    listeners = dict(pair.split(":") for pair in shared["listener.security.protocol.map"].split(","))
    assert set(listeners.values()) == {"SASL_PLAINTEXT"}, "a listener that asks nobody who they are"
    assert shared["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert shared["allow.everyone.if.no.acl.found"] == "false"
    assert shared["super.users"] == f"User:{ADMIN}"
    assert "SCRAM-SHA-512" in shared["sasl.enabled.mechanisms"].split(",")


def test_the_brokers_know_the_administrator_from_their_own_login(project: dict[str, Any]) -> None:
    for name, env in brokers(project).items():
        (listener,) = [v.split("://")[0] for v in env["KAFKA_ADVERTISED_LISTENERS"].split(",")]
        assert listener == broker_properties()["inter.broker.listener.name"], name
        logins = {env[v] for v in ADMIN_LOGIN}
        assert len(logins) == 1, f"{name}: the brokers and the quorum log in differently"
        (login,) = logins
        assert f'username="{ADMIN}"' in login
        password = re.search(r'password="([^"]+)"', login)
        assert password, name
        assert f'user_{ADMIN}="{password.group(1)}"' in login, name
        topics = project["services"]["topics"]["environment"]
        assert topics["KAFKA_ADMIN_PASSWORD"] == password.group(1), "the topics job logs in as another admin"


def test_the_variable_names_follow_the_image() -> None:
    assert variable("offsets.topic.replication.factor") == "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"
    assert variable("listener.name.internal.ssl.key_password") == "KAFKA_LISTENER_NAME_INTERNAL_SSL_KEY__PASSWORD"
    assert variable("a-b.c") == "KAFKA_A___B_C"


def test_every_broker_runs_with_the_shared_settings(project: dict[str, Any]) -> None:
    shared = broker_properties()
    cluster = brokers(project)
    assert cluster, "no Kafka broker"
    assert project["x-kafka-common"] == {variable(k): v for k, v in shared.items()}
    for name, env in cluster.items():
        expected = {variable(k): (SINGLE_BROKER.get(k, v) if len(cluster) == 1 else v) for k, v in shared.items()}
        assert {k: env.get(k) for k in expected} == expected, name
        extra = {k for k in env if k.startswith("KAFKA_")} - set(expected) - NODE_VARIABLES
        assert not extra, f"{name}: {extra} belong in deploy/kafka/broker.properties"
        assert not IMAGE_DEFAULTS - set(env), f"{name}: the image would fill {IMAGE_DEFAULTS - set(env)}"


def test_production_runs_three_brokers_in_one_quorum(compose_projects: dict[str, dict[str, Any]]) -> None:
    cluster = brokers(compose_projects["prod"])
    assert len(cluster) == 3
    assert sorted(env["KAFKA_NODE_ID"] for env in cluster.values()) == ["1", "2", "3"]
    voters = {f"{env['KAFKA_NODE_ID']}@{name}:9093" for name, env in cluster.items()}
    for env in cluster.values():
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert len({env["CLUSTER_ID"] for env in cluster.values()}) == 1


def test_compose_runs_the_kafka_the_tests_run(project: dict[str, Any]) -> None:
    """One Kafka version: the one tests/support/kafka/pom.xml fetches for the test cluster."""
    pom = ElementTree.parse(ROOT / "tests" / "support" / "kafka" / "pom.xml").getroot()
    (version,) = [e.text for e in pom.iter() if e.tag.endswith("}kafka.version") or e.tag == "kafka.version"]
    for name, service in project["services"].items():
        if name in brokers(project):
            assert service["image"] == f"apache/kafka:{version}", name


def test_topics_are_created_to_match_the_brokers(project: dict[str, Any]) -> None:
    """`pizzeria topics create` asks for what the cluster can give: no more copies than brokers,
    and in production one broker may be lost without refusing writes."""
    cluster = brokers(project)
    env = project["services"]["topics"]["environment"]
    replication = int(env["TOPIC_REPLICATION_FACTOR"])
    in_sync = int(env["TOPIC_MIN_INSYNC_REPLICAS"])
    broker_env = next(iter(cluster.values()))
    assert replication == int(broker_env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) <= len(cluster)
    assert in_sync == int(broker_env["KAFKA_MIN_INSYNC_REPLICAS"])
    assert env["TOPIC_PARTITIONS"] == broker_env["KAFKA_NUM_PARTITIONS"]
    if len(cluster) > 1:
        assert in_sync == replication - 1
