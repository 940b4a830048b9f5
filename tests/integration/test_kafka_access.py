"""Who may write what on the bus: on Apache Kafka every service logs in as its own user (SASL
SCRAM), and the ACLs that `pizzeria topics create` derives from the topology let it write only
its own topics and read only what its groups consume. A service that tries to pass off another
service's event is refused by the broker; the service whose event it is gets through."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from pizzeria.contracts.payments import PaymentCompleted
from pizzeria.contracts.topology import bus_grants
from pizzeria.kit.settings import KafkaLogin, Settings
from pizzeria.messaging import acl
from pizzeria.messaging.broker import BrokerConsumer, BrokerError, OutgoingMessage
from pizzeria.messaging.envelope import Envelope
from pizzeria.messaging.kafka import KafkaBroker
from pizzeria.supervisor import bus_user, create_topics
from tests.support.kafka import KafkaCluster
from tests.support.polling import eventually

pytestmark = pytest.mark.kafka

PAYMENTS_EVENTS = "payments.events"


@pytest.fixture
def settings(kafka: KafkaCluster, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A deployment's settings on the test cluster: the administrator's, each service's password."""
    for name, value in kafka.environment().items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.fixture
async def secured(settings: Settings) -> Settings:
    """The topics, the users and the ACLs, made as the topic-init job makes them."""
    await create_topics(settings, wait=60)
    return settings


@pytest.fixture
async def clients() -> AsyncIterator[list[KafkaBroker | BrokerConsumer]]:
    opened: list[KafkaBroker | BrokerConsumer] = []
    yield opened
    for client in reversed(opened):
        await client.close()


async def started(kafka: KafkaCluster, login: KafkaLogin, clients: list[KafkaBroker | BrokerConsumer]) -> KafkaBroker:
    broker = kafka.broker(login)
    clients.append(broker)
    await broker.start()
    return broker


def payment_completed(order_id: uuid.UUID) -> OutgoingMessage:
    """A `PaymentCompleted`, as the payments service's outbox would publish it."""
    event = PaymentCompleted(
        payment_id=uuid.uuid4(),
        order_id=order_id,
        amount=2450,
        currency="EUR",
        provider_charge_id=f"ch_{order_id.hex[:12]}",
        at=datetime.now(UTC),
    )
    return Envelope.wrap(event, source="/pizzeria/payments").to_outgoing(PAYMENTS_EVENTS)


async def published(broker: KafkaBroker, message: OutgoingMessage, timeout: float = 30.0) -> None:
    """Publish, retrying while a grant just made reaches the broker's authorizer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await broker.publish([message])
            return
        except BrokerError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def refused(broker: KafkaBroker, timeout: float = 30.0) -> BrokerError:
    """Publish forged events until the broker refuses one (a grant just removed may take a moment)."""

    async def publish_forged() -> BrokerError | None:
        try:
            await broker.publish([payment_completed(uuid.uuid4())])
        except BrokerError as exc:
            return exc
        return None

    error: BrokerError = await eventually(
        publish_forged, "the broker never refused the forged event", timeout, every=0.2
    )
    return error


async def refusal(consumer: BrokerConsumer, timeout: float = 30.0) -> BrokerError:
    """Poll until the broker's refusal surfaces (the first fetch may come before the group joins)."""

    async def fetch() -> BrokerError | None:
        try:
            await consumer.fetch(10, 0.5)
        except BrokerError as exc:
            return exc
        return None

    error: BrokerError = await eventually(fetch, "the broker never refused the consumer", timeout, every=0)
    return error


async def test_a_forged_event_is_refused_and_the_owner_publishes_it(
    kafka: KafkaCluster, secured: Settings, clients: list[KafkaBroker | BrokerConsumer]
) -> None:
    order_id = uuid.uuid4()
    kitchen = await started(kafka, secured.kafka_login("kitchen"), clients)
    with pytest.raises(BrokerError, match="TOPIC_AUTHORIZATION_FAILED"):
        await kitchen.publish([payment_completed(order_id)])

    payments = await started(kafka, secured.kafka_login("payments"), clients)
    genuine = payment_completed(order_id)
    await published(payments, genuine)

    # Read as the order saga reads it: the orders service's user, in its own group. A key's
    # records stay in order, so a forged event that got through would come before the genuine.
    reader = (await started(kafka, secured.kafka_login("orders"), clients)).consumer("orders", [PAYMENTS_EVENTS])
    clients.append(reader)
    await reader.start()
    of_the_order: list[str] = []

    async def genuine_arrived() -> bool:
        records = await reader.fetch(500, 0.5)
        of_the_order.extend(r.headers["ce_id"] for r in records if r.key == str(order_id))
        return genuine.headers["ce_id"] in of_the_order

    await eventually(genuine_arrived, "the genuine event never arrived", 60, every=0)
    assert of_the_order == [genuine.headers["ce_id"]]


async def test_a_consumer_reads_only_what_its_groups_consume(
    kafka: KafkaCluster, secured: Settings, clients: list[KafkaBroker | BrokerConsumer]
) -> None:
    kitchen = await started(kafka, secured.kafka_login("kitchen"), clients)
    # kitchen reads catalog.events and its commands, never the payments' facts...
    snooping = kitchen.consumer("kitchen", [PAYMENTS_EVENTS])
    clients.append(snooping)
    await snooping.start()
    assert "TOPIC_AUTHORIZATION_FAILED" in str(await refusal(snooping))
    # ...and it joins its own groups only, even on a topic it may read.
    impostor = kitchen.consumer("notifications", ["catalog.events"])
    clients.append(impostor)
    await impostor.start()
    assert "GROUP_AUTHORIZATION_FAILED" in str(await refusal(impostor))


async def test_nobody_gets_in_without_a_user_of_the_cluster(
    kafka: KafkaCluster, secured: Settings, clients: list[KafkaBroker | BrokerConsumer]
) -> None:
    login = secured.kafka_login("payments")
    wrong = KafkaLogin(login.protocol, login.mechanism, login.username, "not-" + login.password)
    with pytest.raises(BrokerError):
        await kafka.broker(wrong).ping()
    anonymous = KafkaBroker(kafka.bootstrap, client_id="anonymous")  # PLAINTEXT: no login at all
    with pytest.raises(BrokerError):
        await anonymous.ping()
    await kafka.broker(login).ping()


async def test_a_started_client_is_pinged_over_its_own_connections_and_a_cut_cluster_fails_the_ping(
    kafka: KafkaCluster, secured: Settings, clients: list[KafkaBroker | BrokerConsumer]
) -> None:
    broker = await started(kafka, secured.kafka_login("orders"), clients)
    [proxy] = kafka.proxies.values()
    # The producer's own connections (bootstrap, the broker it learns of, its idempotence's
    # coordinator) are made while it starts: pinged until a ping has made none.
    deadline = time.monotonic() + 30
    while True:
        opened = proxy.connections
        await broker.ping()
        if proxy.connections == opened:
            break
        assert time.monotonic() < deadline, "the producer kept opening connections"
    for _ in range(10):
        await broker.ping()  # what a readiness probe asks every few seconds
    # A ping over a client of its own opens a connection (and logs in) each time: ten at least.
    # librdkafka may still open one of its own meanwhile (a retried idempotence handshake with
    # a broker just started, a connection it closed when idle): one or two are no ping's.
    assert proxy.connections - opened <= 2, "each ping opened a connection (and logged in) again"

    proxy.cut()
    try:
        with pytest.raises(BrokerError):
            await broker.ping()
    finally:
        proxy.mend()
    await broker.ping()


async def test_applying_the_acls_again_removes_what_the_topology_does_not_allow(
    kafka: KafkaCluster, secured: Settings, clients: list[KafkaBroker | BrokerConsumer]
) -> None:
    admin = await started(kafka, secured.kafka_admin_login(), clients)
    grants = bus_grants(bus_user(secured))
    unchanged = await admin.apply_access({}, grants)
    assert (unchanged.added, unchanged.removed) == ((), ())

    # A rule someone added by hand lets kitchen write the payments' facts...
    stray = acl.topic("kitchen", "WRITE", PAYMENTS_EVENTS)
    assert (await admin.apply_access({}, [*grants, stray])).added == (stray,)
    kitchen = await started(kafka, secured.kafka_login("kitchen"), clients)
    await published(kitchen, payment_completed(uuid.uuid4()))
    # ...until the init job runs again.
    assert (await admin.apply_access({}, grants)).removed == (stray,)
    assert "TOPIC_AUTHORIZATION_FAILED" in str(await refused(kitchen))
