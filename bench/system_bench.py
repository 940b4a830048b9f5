"""Whole-system benchmark, the system started with `pizzeria up` as a user would, the whole
order saga included (reserve → charge → kitchen → delivery) with the kitchen and delivery
autopilots at zero delay, and stock enough for every order:

1. steady: orders offered at a fixed rate; the POST's latency as the client saw it, and place →
   delivered latency (from each order's own timestamps), so the figure is the pipeline's;
2. flood: orders from N clients as fast as the API takes them; orders accepted per second and
   orders delivered per second (first placed → last delivered) say what the machine can do.

Every request goes through the gateway, as a user's would (its rate limits raised out of the
way); CPU per order is summed over every process of the system during the flood. With
`replicas` above 1, every service that may run several runs that many (the gateway spreads the
requests over them): the production stack only, the embedded one refuses replicas.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from tests.e2e.scenario import order_body, stock_up, wait_for_menu_sync
from tests.e2e.system import Shop, System
from tests.support.tokens import bearer

from bench.loadgen import Connection
from bench.stacks import BROKER_NOTE, InfraWatch, stack_env
from bench.stats import percentile, summary
from bench.stats import process_cpu_s as cpu_seconds
from pizzeria.chassis.addresses import replica_label
from pizzeria.registry import SERVICES

TERMINAL = {"delivered", "cancelled"}
IN_FLIGHT = ("pending", "paid", "preparing", "baking", "ready", "out_for_delivery")
AUTOPILOTS = {"KITCHEN_AUTOPILOT": "1", "DELIVERY_AUTOPILOT": "1", "KITCHEN_STAGE_MS": "0", "DELIVERY_STAGE_MS": "0"}
#: One load generator is one client address: the per-address and per-user limits would refuse it;
#: and a flood queues requests longer than the gateway's deadline: measure them, do not cut them.
#: What runs as several processes when the benchmark asks for replicas.
REPLICABLE = tuple(s.name for s in SERVICES if not s.single)
NO_RATE_LIMITS = {
    "RATE_LIMIT_PER_IP": "100000000",
    "RATE_LIMIT_PER_USER": "100000000",
    "ORDER_MAX_UNPAID": "100000000",  # a few simulated customers place every order
    "GATEWAY_UPSTREAM_TIMEOUT_S": "60",
}


async def run(
    stack: str,
    *,
    orders: int,
    concurrency: int,
    steady_rate: int,
    steady_seconds: int,
    replicas: int = 1,
    warmup_seconds: int = 0,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pzbench-") as tmp:
        workdir = Path(tmp)
        async with stack_env(stack, workdir, long_running=warmup_seconds > 0) as env:
            system = System(
                workdir,
                {**env, **AUTOPILOTS, **NO_RATE_LIMITS, "LOG_LEVEL": "WARNING", "PAYMENT_LATENCY_MS": "20"},
                replicas=dict.fromkeys(REPLICABLE, replicas),
            )
            await system.start()
            shop = Shop(system)
            try:
                menu = await ready_to_order(shop)
                bench = Bench(system.ports["gateway"], menu, system.env)
                if warmup_seconds:
                    # What a system that has been taking orders costs, not one just started: the
                    # broker's JVM compiled, the databases' caches and the pools filled. Untimed.
                    await bench.steady(steady_rate, warmup_seconds)
                steady = await bench.steady(steady_rate, steady_seconds)
                pids = {
                    replica_label(name, n): await system.pid(name, n)
                    for name in system.ports
                    for n in system.replica_numbers(name)
                }
                infra = InfraWatch(stack, workdir, env)
                idle = await idle_cost(pids, infra, IDLE_SECONDS)
                before = cpu_of(pids)
                counted = await counters(system)
                infra_before = await infra.snapshot()
                after: dict[str, Any] = {}

                async def measure() -> None:  # every order finished; before reading them back
                    after["seconds"] = time.monotonic()
                    after["cpu"] = cpu_of(pids)
                    after["infra"] = await infra.snapshot()
                    after["counted"] = await counters(system)

                bench.on_settled = measure
                began_flood = time.monotonic()
                flood = await bench.flood(orders, concurrency)
                bench.on_settled = None
                flood["cpu_ms_per_order"] = {
                    name: round((after["cpu"][name] - before[name]) / flood["orders"] * 1000, 2) for name in pids
                }
                flood["per_order"] = per_order(counted, after["counted"], flood["orders"])
                flood["cpu_ms_per_order_total"] = round(sum(flood["cpu_ms_per_order"].values()), 1)
                flood["infra_cpu_ms_per_order"] = infra.per_order(infra_before, after["infra"], flood["orders"])
                flood["cores"] = len(os.sched_getaffinity(0))
                flood["flood_seconds"] = after["seconds"] - began_flood
                flood["idle"] = idle
            finally:
                await shop.close()
                system.stop()
    return {
        "stack": stack,
        "broker": BROKER_NOTE[stack],
        "replicas": replicas,
        "trace_sample_ratio": env["TRACE_SAMPLE_RATIO"],
        **steady,
        **flood,
    }


#: How long the system is watched with nobody ordering, between the steady phase and the flood,
#: once the steady phase's last work (notifications, the audit) has had time to end.
IDLE_SETTLE_S = 5.0
IDLE_SECONDS = 10.0


async def idle_cost(pids: dict[str, int], infra: InfraWatch, seconds: float) -> dict[str, float]:
    """ms of CPU a second that every process spends with nobody ordering (its loops, its
    consumers' fetches, the broker's and the database's own work for them): the services'
    together (the payment provider's simulator among them, as in the CPU per order), then each
    part beside them. `python -m bench.idle` looks at each service for longer."""
    await asyncio.sleep(IDLE_SETTLE_S)  # the steady phase's last work ends: nothing to wait for
    before, infra_before = cpu_of(pids), await infra.snapshot()
    began = time.monotonic()
    await asyncio.sleep(seconds)  # the quiet being measured: nothing to wait for
    elapsed = time.monotonic() - began
    after, beside = cpu_of(pids), infra.used_s(infra_before, await infra.snapshot())
    used = {"services": sum(after[name] - before[name] for name in pids)} | beside
    del used["load generator"]  # this process, which sleeps
    return {name: round(cpu / elapsed * 1000, 1) for name, cpu in used.items()}


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    """Seconds of CPU each process has used so far."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


async def ready_to_order(shop: Shop) -> list[dict[str, Any]]:
    """The menu, once orders has its copy of it, with the kitchen stocked without end."""
    menu = await shop.menu()
    await wait_for_menu_sync(shop, menu)
    await stock_up(shop, 100_000_000)
    return menu


class Bench:
    """Places orders through the gateway and reads back how they ended."""

    def __init__(self, port: int, menu: list[dict[str, Any]], env: dict[str, str]) -> None:
        self.port = port
        self.menu = menu
        self.rng = random.Random(5)
        self.tokens: dict[str, dict[str, str]] = {}
        self.env = env
        self.admin = bearer("bench-admin", "admin", env=env)
        #: Called once every order has finished, before they are read back (the system's CPU
        #: is measured there: reading a thousand orders back is the bench's work, not theirs).
        self.on_settled: Callable[[], Awaitable[None]] | None = None

    def caller(self, customer: str) -> dict[str, str]:
        if customer not in self.tokens:
            self.tokens[customer] = bearer(customer, env=self.env)
        return self.tokens[customer]

    def body(self, i: int) -> dict[str, Any]:
        card = self.rng.choice(("tok_visa", "tok_visa", "tok_visa", "tok_declined"))
        return order_body(self.menu, card, f"b{i}@example.com", None, self.rng)

    async def place(self, conn: Connection, body: dict[str, Any], customer: str) -> str:
        reply = await conn.request(
            "POST", "/api/v1/orders", body, headers={"idempotency-key": str(uuid.uuid4()), **self.caller(customer)}
        )
        if reply.status != 202:
            raise RuntimeError(f"order refused: {reply.status} {reply.body[:300]!r}")
        return str(reply.json()["id"])  # type: ignore[index]

    async def steady(self, rate: int, seconds: int) -> dict[str, Any]:
        """Offer `rate` orders per second for `seconds`; latency of each from placed to final."""
        total = rate * seconds
        ids: list[str] = []
        latencies: list[float] = []
        conns = [Connection("127.0.0.1", self.port) for _ in range(16)]
        began = time.perf_counter()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            conn = conns[i % len(conns)]
            while getattr(conn, "busy", False):  # one request at a time per connection
                await asyncio.sleep(0.001)
            conn.busy = True  # type: ignore[attr-defined]
            try:
                started = time.perf_counter()
                ids.append(await self.place(conn, self.body(i), f"steady{i % 25}"))
                latencies.append(time.perf_counter() - started)
            finally:
                conn.busy = False  # type: ignore[attr-defined]

        await asyncio.gather(*(one(i) for i in range(total)))
        for conn in conns:
            conn.close()
        final = await self.settled(ids)
        to_delivered = [
            _seconds(o["created_at"], o["history"][-1]["at"]) for o in final.values() if o["status"] == "delivered"
        ]
        return {
            "steady_rate": rate,
            "steady_orders": total,
            "steady_delivered": len(to_delivered),
            "steady_place_latency": summary(latencies),
            "steady_to_delivered": summary(to_delivered),
        }

    async def flood(self, orders: int, concurrency: int) -> dict[str, Any]:
        """As fast as the API takes them, from `concurrency` clients."""
        latencies: list[float] = []
        ids: list[str] = []
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for i in range(orders):
            queue.put_nowait(self.body(i))

        async def client(n: int) -> None:
            conn = Connection("127.0.0.1", self.port)
            try:
                while not queue.empty():
                    body = queue.get_nowait()
                    started = time.perf_counter()
                    ids.append(await self.place(conn, body, f"flood{n}"))
                    latencies.append(time.perf_counter() - started)
            finally:
                conn.close()

        began = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(concurrency)))
        placing = time.perf_counter() - began
        final = await self.settled(ids)
        created = [datetime.fromisoformat(o["created_at"]) for o in final.values()]
        finished = [datetime.fromisoformat(o["history"][-1]["at"]) for o in final.values()]
        window = (max(finished) - min(created)).total_seconds()
        delivered = sum(1 for o in final.values() if o["status"] == "delivered")
        return {
            "orders": len(ids),
            "concurrency": concurrency,
            "accepted_per_s": len(ids) / placing,
            "place_latency": summary(latencies),
            "place_p99_ms": percentile(latencies, 99) * 1000,
            "completed_per_s": len(final) / window,
            "delivered_per_s": delivered / window,
        }

    async def _finished(self, watcher: Connection, wanted: set[str]) -> dict[str, dict[str, Any]]:
        """The orders of `wanted` that have ended, as the API shows them."""
        final: dict[str, dict[str, Any]] = {}
        cursor = ""
        while True:
            page: Any = (await watcher.request("GET", f"/api/v1/orders?limit=100{cursor}", headers=self.admin)).json()
            final.update({o["id"]: o for o in page["items"] if o["id"] in wanted and o["status"] in TERMINAL})
            if not page["next_cursor"]:
                return final
            cursor = f"&cursor={page['next_cursor']}"

    async def _ended(self, watcher: Connection, order_id: str) -> bool:
        reply = await watcher.request("GET", f"/api/v1/orders/{order_id}", headers=self.admin)
        return reply.status == 200 and reply.json()["status"] in TERMINAL  # type: ignore[index]

    async def _any_in_flight(self, watcher: Connection) -> bool:
        for status in IN_FLIGHT:
            reply = await watcher.request("GET", f"/api/v1/orders?status={status}&limit=1", headers=self.admin)
            if reply.json()["items"]:  # type: ignore[index]
                return True
        return False

    async def settled(self, ids: list[str], timeout: float = 900) -> dict[str, dict[str, Any]]:
        """Wait until no order is in flight (one cheap query a second while any is: watching
        costs the system next to nothing, and the figures come from the orders' own times),
        then read every order back."""
        watcher = Connection("127.0.0.1", self.port)
        deadline = time.monotonic() + timeout
        last = max(ids)  # ids are UUIDv7: the last placed sorts last
        while time.monotonic() < deadline:
            if not await self._any_in_flight(watcher) and await self._ended(watcher, last):
                break
            await asyncio.sleep(1.0)
        if self.on_settled is not None:
            await self.on_settled()
        # The read model may not know an order yet (its placement still on its way to it), so
        # "none in flight" can come before it: the last placed is waited for above (its CPU in
        # the measure), and every one is read until it is there.
        while len(final := await self._finished(watcher, set(ids))) < len(ids) and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
        watcher.close()
        if len(final) < len(ids):
            raise RuntimeError(f"{len(ids) - len(final)} orders did not finish")
        return final


#: What the services count that says what an order costs them: metric → what it is called here.
COUNTED = {
    "pizzeria_db_statements_total": "statements",
    "pizzeria_db_transactions_total": "transactions",
    "pizzeria_consumer_messages_total": "consumed",
    "pizzeria_consumer_runs_total": "runs consumed",
    "pizzeria_outbox_published_total": "published",
    "pizzeria_outbox_batches_total": "batches published",
}


async def counters(system: System) -> dict[str, dict[str, float]]:
    """service → COUNTED metric → its value now (summed over labels and replicas), from every
    `/metrics`."""
    found: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for name in system.ports:
            values = found[name] = dict.fromkeys(COUNTED, 0.0)
            for n in system.replica_numbers(name):
                text = (await client.get(f"{system.url(name, n)}/metrics")).text
                for line in text.splitlines():
                    metric = line.split("{", 1)[0].split(" ", 1)[0]
                    if metric in values and not line.startswith("#"):
                        values[metric] += float(line.rsplit(" ", 1)[1])
    return found


def per_order(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], orders: int
) -> dict[str, dict[str, float]]:
    """service → statements, transactions, messages consumed and published, per order."""
    return {
        name: {
            label: round((after[name][metric] - before[name][metric]) / orders, 2) for metric, label in COUNTED.items()
        }
        for name in after
        if any(after[name][m] - before[name][m] for m in COUNTED)
    }


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
