"""The whole system on PostgreSQL and a three-broker Apache Kafka cluster (replication factor 3,
two replicas in sync for a write, acks=all), orders streaming in through the gateway while the
cluster is broken twice:

- the broker that leads most partitions of `orders.events` is killed with SIGKILL: leadership
  moves, the services' producers and consumers carry on, and the broker, started again, catches
  up until every partition has all three replicas in sync;
- two brokers are stopped, so no write can reach two replicas: publishing stalls, the orders
  accepted meanwhile wait in the outboxes and none moves on; the brokers come back and the
  outboxes drain.

Every accepted order reaches one final state as its card allows, nobody is charged or refunded
twice, no order gets two tickets or deliveries, every notification is sent once, and the stock
adds up. The time from each fault healing to orders finishing again is printed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.conftest import production_env
from tests.e2e.scenario import (
    AUTOPILOT,
    MANY_ORDERS,
    TERMINAL,
    Placed,
    check_invariants,
    check_one_ticket_and_delivery_each,
    check_outcomes,
    place_orders,
    stock_up,
    wait_for_menu_sync,
    wait_until_settled,
)
from tests.e2e.system import Shop, System
from tests.support.kafka import KafkaCluster, running_kafka
from tests.support.postgres import drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

REPLICATED = {"TOPIC_REPLICATION_FACTOR": "3", "TOPIC_MIN_INSYNC_REPLICAS": "2"}
UNLIMITED = {"RATE_LIMIT_PER_IP": "1000000", "RATE_LIMIT_PER_USER": "1000000"}
#: No payment deadline passes while the brokers are down: every order is to end as its card says.
PATIENT_SAGA = {"SAGA_PAYMENT_TIMEOUT_S": "600"}
CARDS = ("tok_visa",) * 4 + ("tok_declined",)
#: Records the orders accepted while two brokers are down leave in the outboxes, at the least.
STALLED_BACKLOG = 10
#: Between one customer's order and the next, while they stream in.
PACE_S = 0.4


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[KafkaCluster, System, Shop]]:
    with running_kafka(tmp_path / "kafka", size=3) as cluster:
        env, databases = await production_env(cluster)
        system = System(tmp_path, {**AUTOPILOT, **MANY_ORDERS, **env, **REPLICATED, **UNLIMITED, **PATIENT_SAGA})
        shop = Shop(system, through_gateway=True)
        try:
            await system.start(timeout=240)
            await wait_for_menu_sync(shop, await shop.menu())
            await stock_up(shop)
            yield cluster, system, shop
        finally:
            await shop.close()
            system.stop()
            for url in databases:
                await drop_database(url)


def out_of_sync(cluster: KafkaCluster) -> dict[str, list[int]]:
    """The partitions whose in-sync replicas are not every broker, as `topic-partition: ISR`."""
    meta = cluster.admin().list_topics(timeout=10)
    every = sorted(cluster.nodes)
    return {
        f"{name}-{p}": sorted(int(r) for r in found.isrs)
        for name, topic in meta.topics.items()
        for p, found in topic.partitions.items()
        if sorted(int(r) for r in found.isrs) != every
    }


async def outbox_backlog(shop: Shop) -> int:
    """Events committed but not yet published, summed over every service (asked of the gateway)."""
    response = await shop.http.get(f"{shop.at('gateway')}/api/v1/ops/outbox")
    response.raise_for_status()
    found = response.json()
    assert not found["missing"], f"services that did not answer: {found['missing']}"
    return sum(int(s["backlog"]) for s in found["services"].values())


async def stream(shop: Shop, until: asyncio.Event, seed: int) -> list[Placed]:
    """Orders placed one after another, each with the next card, until `until` is set."""
    placed: list[Placed] = []
    while not until.is_set():
        card = CARDS[len(placed) % len(CARDS)]
        placed += await place_orders(shop, 1, cards=(card,), seed=seed + len(placed))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), PACE_S)
    return placed


async def finishes(shop: Shop, seed: int) -> tuple[float, list[Placed]]:
    """Place one order and wait until it has ended: the seconds that took, and the order."""
    began = time.monotonic()
    probe = await place_orders(shop, 1, cards=("tok_visa",), seed=seed)
    await wait_until_settled(shop, probe, timeout=120)
    return time.monotonic() - began, probe


async def test_brokers_killed_and_stopped_while_orders_stream_lose_and_duplicate_nothing(
    running: tuple[KafkaCluster, System, Shop],
) -> None:
    cluster, system, shop = running
    placed: list[Placed] = []
    assert await asyncio.to_thread(out_of_sync, cluster) == {}, "every partition starts with three replicas"

    # (a) The leader of most orders-event partitions dies while orders stream in.
    recovered = asyncio.Event()
    streaming = asyncio.create_task(stream(shop, recovered, seed=1000))

    async def some_charged() -> bool:
        response = await shop.http.get(f"{system.url('provider')}/v1/charges")
        return len(response.json()["items"]) >= 8

    await system.wait_until(some_charged, 120, "orders flowing before the fault")
    meta = await asyncio.to_thread(lambda: cluster.admin().list_topics("orders.events", timeout=10))
    leaders = Counter(int(p.leader) for p in meta.topics["orders.events"].partitions.values())
    victim = leaders.most_common(1)[0][0]
    await asyncio.to_thread(cluster.kill, victim)
    killed_at = time.monotonic()
    took, probe = await finishes(shop, seed=42)
    print(f"\nbroker {victim} killed: an order placed right after it finished in {took:.1f} s")
    recovered.set()
    placed += probe + await streaming
    assert not cluster.nodes[victim].running
    meta = await asyncio.to_thread(lambda: cluster.admin().list_topics("orders.events", timeout=10))
    assert victim not in {int(p.leader) for p in meta.topics["orders.events"].partitions.values()}

    await asyncio.to_thread(cluster.restart, victim)
    restarted = time.monotonic()
    unsynced: dict[str, list[int]] = {}

    async def caught_up() -> bool:
        nonlocal unsynced
        unsynced = await asyncio.to_thread(out_of_sync, cluster)
        return not unsynced

    try:
        await system.wait_until(caught_up, 90, "the restarted broker back in every partition's ISR")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still out of sync: {unsynced}") from None
    print(
        f"broker {victim} restarted {restarted - killed_at:.1f} s after the kill; "
        f"in sync everywhere {time.monotonic() - restarted:.1f} s later"
    )

    # (b) Two brokers stop: no write reaches two replicas, so nothing is published.
    # The broker left running is the one that just caught up: it must hold everything.
    stopped = [n for n in sorted(cluster.nodes) if n != victim]
    for n in stopped:
        cluster.nodes[n].terminate()
    for n in stopped:
        await asyncio.to_thread(cluster.nodes[n].wait_stopped)
    stalled = await place_orders(shop, 12, concurrency=4, seed=43, cards=CARDS)
    placed += stalled
    backlog = 0

    async def backed_up() -> bool:
        nonlocal backlog
        backlog = await outbox_backlog(shop)
        return backlog >= STALLED_BACKLOG

    await system.wait_until(backed_up, 60, f"the outboxes holding at least {STALLED_BACKLOG} records")
    moved = [o["status"] for o in [await shop.order(p.id) for p in stalled] if o["status"] in TERMINAL]
    assert not moved, f"orders ended although nothing could be published: {moved}"
    print(f"brokers {stopped} stopped: {len(stalled)} orders accepted, outbox backlog {backlog}")

    for n in stopped:
        cluster.nodes[n].start()
    await asyncio.to_thread(cluster.wait_serving, set(stopped))
    healed = time.monotonic()

    async def drained() -> bool:
        return await outbox_backlog(shop) == 0

    await system.wait_until(drained, 120, "the outboxes drained")
    drained_in = time.monotonic() - healed
    took, probe = await finishes(shop, seed=44)
    placed += probe
    print(f"brokers {stopped} back: outboxes drained in {drained_in:.1f} s, a new order finished in {took:.1f} s")

    final = await wait_until_settled(shop, placed, timeout=120)
    await check_outcomes(shop, placed, final)
    await check_invariants(shop)
    await check_one_ticket_and_delivery_each(shop, final)
    await system.wait_until(caught_up, 90, "every partition with three replicas in sync again")
