"""Gateway benchmark, the system started with `pizzeria up` and driven through port 8000 only:

1. `GET /api/v1/menu` from N keep-alive clients, with the menu cache warm, and cold (a cache
   that keeps nothing: `CACHE_TTL_S` of a millisecond, so every read goes to the database);
2. `POST /api/v1/orders` through the gateway (token and role checks, rate limits, forwarding)
   from N clients, each a signed-in customer; latency of each request.

Rate limits are raised far above the offered load: every client here is one loopback address.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.scenario import order_body, wait_for_menu_sync
from tests.e2e.system import Shop, System
from tests.support.tokens import bearer

from bench.loadgen import Connection
from bench.stacks import stack_env
from bench.stats import percentile, summary

UNLIMITED = {
    "RATE_LIMIT_PER_IP": "100000000",
    "RATE_LIMIT_PER_USER": "100000000",
    "ORDER_MAX_UNPAID": "100000000",  # a few simulated customers place every order
    "LOG_LEVEL": "WARNING",
    "PAYMENT_LATENCY_MS": "20",
    "KITCHEN_AUTOPILOT": "1",
    "DELIVERY_AUTOPILOT": "1",
    "KITCHEN_STAGE_MS": "0",
    "DELIVERY_STAGE_MS": "0",
}


async def hammer(port: int, clients: int, requests: int, make: Any) -> dict[str, Any]:
    """`requests` requests from `clients` connections; `make(i)` gives (method, path, body, headers)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(requests))

    async def client() -> None:
        conn = Connection("127.0.0.1", port)
        try:
            for i in counter:
                method, path, body, headers = make(i)
                started = time.perf_counter()
                reply = await conn.request(method, path, body, headers=headers)
                latencies.append(time.perf_counter() - started)
                statuses[reply.status] = statuses.get(reply.status, 0) + 1
        finally:
            conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    took = time.perf_counter() - began
    return {
        "requests": requests,
        "clients": clients,
        "per_s": requests / took,
        "latency": summary(latencies),
        "p99_ms": percentile(latencies, 99) * 1000,
        "statuses": statuses,
    }


MENU = ("GET", "/api/v1/menu", None, {})


async def _phase(stack: str, extra: dict[str, str], *, clients: int, menu_requests: int, orders: int) -> dict[str, Any]:
    """One system start: the menu read `menu_requests` times, then `orders` orders placed."""
    with tempfile.TemporaryDirectory(prefix="pzbench-gw-") as tmp:
        workdir = Path(tmp)
        async with stack_env(stack, workdir) as env:
            system = System(workdir, {**env, **UNLIMITED, **extra})
            await system.start()
            shop = Shop(system)
            try:
                port = system.ports["gateway"]
                await hammer(port, clients, 200, lambda _: MENU)  # connections and code paths warm
                found: dict[str, Any] = {"menu": await hammer(port, clients, menu_requests, lambda _: MENU)}
                if orders:
                    menu = await shop.menu()
                    await wait_for_menu_sync(shop, menu)
                    for item in await shop.inventory():
                        await shop.set_stock(item["ingredient"], 100_000_000)
                    tokens = [bearer(f"gw{n}", env=system.env) for n in range(clients)]
                    rng = random.Random(7)
                    bodies = [order_body(menu, "tok_visa", f"g{i}@example.com", None, rng) for i in range(orders)]

                    def place(i: int) -> tuple[str, str, Any, dict[str, str]]:
                        return (
                            "POST",
                            "/api/v1/orders",
                            bodies[i],
                            {**tokens[i % clients], "idempotency-key": str(uuid.uuid4())},
                        )

                    found["orders"] = await hammer(port, clients, orders, place)
                return found
            finally:
                await shop.close()
                system.stop()


async def run(stack: str, *, clients: int, menu_requests: int, orders: int) -> dict[str, Any]:
    cold = await _phase(stack, {"CACHE_TTL_S": "0.001"}, clients=clients, menu_requests=menu_requests, orders=0)
    warm = await _phase(stack, {}, clients=clients, menu_requests=menu_requests, orders=orders)
    return {"stack": stack, "menu_cold": cold["menu"], "menu_warm": warm["menu"], "orders": warm["orders"]}
