"""Two replicas of every service that consumes, on PostgreSQL + Apache Kafka, orders streaming
in through the gateway; mid-run the orders replica whose relay publishes is killed with SIGKILL
and not brought back. The replicas of each group share its partitions; the survivor takes over
the dead one's partitions, the relay's role and its sagas' deadlines; the gateway sends
everything to the survivor. Every accepted order reaches one final state, nothing is charged,
refunded, reserved, cooked, delivered or notified twice, no saga deadline fires twice, and the
stock adds up."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import production_env
from tests.e2e.scenario import (
    AUTOPILOT,
    MANY_ORDERS,
    check_invariants,
    check_one_ticket_and_delivery_each,
    check_outcomes,
    place_orders,
    stock_up,
    wait_for_menu_sync,
    wait_until_settled,
)
from tests.e2e.system import Shop, System
from tests.support.kafka import KafkaCluster
from tests.support.postgres import drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

#: Every service with a consumer group of its own (each also has its `-access` group).
REPLICATED = ("orders", "kitchen", "payments", "delivery", "notifications", "audit")
#: A few simulated customers place every order: no rate limit, and many may wait for payment.
UNLIMITED = {"RATE_LIMIT_PER_IP": "1000000", "RATE_LIMIT_PER_USER": "1000000", **MANY_ORDERS}
#: `tok_timeout` orders reach their payment deadline within the test (as in test_saga.py).
FAST_SAGA = {"SAGA_PAYMENT_TIMEOUT_S": "20", "PAYMENT_TIMEOUT_MS": "500"}
CARDS = ("tok_visa",) * 6 + ("tok_declined",) * 2 + ("tok_timeout",)


async def metric(system: System, service: str, replica: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels, from one replica's `/metrics`."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{system.url(service, replica)}/metrics")).text
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match and all(w in (match.group(1) or "") for w in wanted):
            total += float(match.group(2))
    return total


async def leads(system: System, service: str, replica: int) -> bool:
    """Does this replica's outbox relay publish for the service's database?"""
    return await metric(system, service, replica, "pizzeria_outbox_relay_leading") == 1.0


async def test_two_replicas_of_every_consumer_one_killed_while_orders_stream_through_the_gateway(
    kafka_direct: KafkaCluster, tmp_path: Path
) -> None:
    env, databases = await production_env(kafka_direct)
    system = System(
        tmp_path,
        {**AUTOPILOT, **env, **UNLIMITED, **FAST_SAGA, "PAYMENT_LATENCY_MS": "30"},
        replicas=dict.fromkeys(REPLICATED, 2),
        args=["--no-restart"],  # the killed replica stays dead: the survivor must do it all
    )
    shop = Shop(system, through_gateway=True)
    try:
        await system.start(timeout=240)
        await wait_for_menu_sync(shop, await shop.menu())
        await stock_up(shop)
        leader: int | None = None

        async def one_relay_leads() -> bool:
            nonlocal leader
            leading = [n for n in system.replica_numbers("orders") if await leads(system, "orders", n)]
            leader = leading[0] if len(leading) == 1 else None
            return leader is not None

        await system.wait_until(one_relay_leads, 30, "one orders relay publishing")
        assert leader is not None
        survivor = 3 - leader

        streaming = asyncio.create_task(place_orders(shop, 100, concurrency=6, seed=31, cards=CARDS, cancel_share=0.2))
        placed_at = dict.fromkeys((1, 2), 0.0)

        async def both_take_orders() -> bool:
            for n in placed_at:
                placed_at[n] = await metric(
                    system, "orders", n, "pizzeria_http_request_duration_seconds_count", method="POST", status="202"
                )
            return all(placed_at.values()) and sum(placed_at.values()) >= 30

        await system.wait_until(both_take_orders, 120, "orders placed at both replicas through the gateway")
        killed = await system.kill("orders", leader)
        await system.wait_until(lambda: leads(system, "orders", survivor), 60, "the survivor's relay taking over")
        placed = await streaming
        final = await wait_until_settled(shop, placed, timeout=180)

        await check_outcomes(shop, placed, final)
        await check_invariants(shop)
        await check_one_ticket_and_delivery_each(shop, final)
        timed_out = [order_id for order_id, o in final.items() if o["cancel_reason"] == "timeout"]
        assert timed_out, "no saga deadline passed: the test did not test them"
        for order_id in timed_out:
            fired = [entry for entry in await shop.saga_log(order_id) if "timed out" in entry]
            assert len(fired) == 1, f"{order_id}: its deadline fired {len(fired)} times: {fired}"
        assert not Path(f"/proc/{killed}").exists() or "zombie" in Path(f"/proc/{killed}/status").read_text()
        for service in REPLICATED:
            if service == "orders":
                continue
            # The group's partitions were shared: each replica processed some of its messages.
            for n in system.replica_numbers(service):
                handled = await metric(system, service, n, "pizzeria_consumer_messages_total", group=service)
                assert handled > 0, f"{service} replica {n} never got a partition of its group"
        health = (await shop.http.get(f"{system.url('gateway')}/health")).json()["upstreams"]["orders"]
        assert health["breaker"] == "closed", "the service takes requests: its survivor does"
        assert [r["breaker"] == "closed" for r in health["replicas"]] == [n == survivor for n in (1, 2)], health
    finally:
        await shop.close()
        system.stop()
        for url in databases:
            await drop_database(url)
