"""How far the order page's map is behind the courier's tracker, the system started with
`pizzeria up` (the aim: 1 s at p99).

A customer's order is cooked (kitchen autopilot) and handed to a courier; the bench takes it
out for delivery as the courier would and gives the courier a tracker. The customer's order page
is followed as a browser follows it: its server-sent events (`/orders/{id}/courier/live`, with
the customer's session cookie). Then, again and again, the tracker sends one reading through the
gateway, as a tracker does; the figure is the time from just before the reading is sent until
the page's event that shows it (the map's `data-at` is the reading's time) has arrived. Readings
go at uneven intervals, so they fall anywhere in the page's polling of the API.
"""

from __future__ import annotations

import asyncio
import random
import re
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tests.e2e.conftest import wait_for_menu_sync
from tests.e2e.scenario import holds_within, order_body
from tests.e2e.system import Shop, System
from tests.support.tokens import bearer

from bench.gateway_bench import UNLIMITED
from bench.stacks import BROKER_NOTE, stack_env
from bench.stats import summary

AT = re.compile(r'data-at="([^"]+)"')
#: The page's session cookie (the web UI's access token).
ACCESS_COOKIE = "pz_access"


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def _out_for_delivery(shop: Shop, system: System, customer: str) -> tuple[str, str]:
    """An order of `customer` out for delivery: its id, and its courier's."""
    menu = await shop.menu()
    await wait_for_menu_sync(shop, menu)
    order = await shop.place(order_body(menu, "tok_visa", None, None, random.Random(7)), customer=customer)
    admin = bearer("bench-admin", "admin", env=system.env)
    api = system.url("gateway") + "/api/v1"
    found: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30, headers=admin) as http:

        async def assigned() -> None:
            listed = (await http.get(f"{api}/deliveries", params={"status": "assigned"})).json()["items"]
            mine = [d for d in listed if d["order_id"] == order["id"]]
            now = (await http.get(f"{api}/orders/{order['id']}")).json().get("status")
            assert mine, f"the order has no courier yet (it is {now})"
            found.update(mine[0])

        await holds_within(assigned, timeout=120, interval=0.2)
        (await http.post(f"{api}/deliveries/{found['id']}/advance")).raise_for_status()
    return order["id"], str(found["courier_id"])


async def _tracker(system: System, courier_id: str, order_id: str, customer: dict[str, str]) -> dict[str, Any]:
    staff = bearer("bench-staff", "staff", env=system.env)
    api = system.url("gateway") + "/api/v1"
    async with httpx.AsyncClient(timeout=30) as http:
        body = {"kind": "tracker", "name": f"bench tracker {uuid.uuid4().hex[:6]}", "courier_id": courier_id}
        answer = await http.post(f"{api}/devices", json=body, headers=staff)
        answer.raise_for_status()
        tracker: dict[str, Any] = answer.json()

        async def known() -> None:  # telemetry knows the tracker and the order out
            first = {"at": datetime.now(UTC).isoformat(), "lat": 40.8518, "lon": 14.2681, "speed_mps": 5.0}
            sent = await http.post(
                f"{api}/telemetry/devices/{tracker['id']}/readings",
                json={"readings": [first]},
                headers={"X-Device-Key": tracker["secret"]},
            )
            assert sent.status_code == 200, sent.text
            seen = await http.get(f"{api}/telemetry/orders/{order_id}/courier", headers=customer)
            assert seen.status_code == 200, seen.text

        await holds_within(known, timeout=60, interval=0.2)
    return tracker


async def _follow(system: System, order_id: str, token: str, shown: dict[int, float], opened: asyncio.Event) -> None:
    """Read the page's event stream; note when each reading's time first shows."""
    cookies = {ACCESS_COOKIE: token}
    async with (
        httpx.AsyncClient(base_url=system.url("gateway"), cookies=cookies, timeout=None) as http,
        http.stream("GET", f"/orders/{order_id}/courier/live", headers={"Accept": "text/event-stream"}) as stream,
    ):
        if stream.status_code != 200:
            raise RuntimeError(f"the order page's stream answered {stream.status_code}")
        opened.set()
        async for line in stream.aiter_lines():
            found = AT.search(line)
            if found and found.group(1):
                shown.setdefault(_ms(found.group(1)), time.perf_counter())


async def run(stack: str, *, samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pzbench-courier-") as tmp:
        workdir = Path(tmp)
        async with stack_env(stack, workdir) as env:
            system = System(
                workdir,
                {**env, **UNLIMITED, "KITCHEN_AUTOPILOT": "1", "KITCHEN_STAGE_MS": "200", "DELIVERY_AUTOPILOT": "0"},
            )
            await system.start()
            shop = Shop(system, through_gateway=True)
            follower: asyncio.Task[None] | None = None
            try:
                customer = f"bench-customer-{uuid.uuid4().hex[:8]}"
                order_id, courier_id = await _out_for_delivery(shop, system, customer)
                headers = shop.as_customer(customer)
                tracker = await _tracker(system, courier_id, order_id, headers)
                shown: dict[int, float] = {}
                opened = asyncio.Event()
                token = headers["Authorization"].removeprefix("Bearer ")
                follower = asyncio.create_task(_follow(system, order_id, token, shown, opened))
                await asyncio.wait_for(opened.wait(), 30)
                lags = await _measure(system, tracker, shown, samples)
            finally:
                if follower is not None:
                    follower.cancel()
                await shop.close()
                system.stop()
    return {"stack": stack, "broker": BROKER_NOTE[stack], "samples": len(lags), "lag": summary(lags), "lags": lags}


async def _measure(system: System, tracker: dict[str, Any], shown: dict[int, float], samples: int) -> list[float]:
    rng = random.Random(11)
    lags: list[float] = []
    path = f"/api/v1/telemetry/devices/{tracker['id']}/readings"
    async with httpx.AsyncClient(base_url=system.url("gateway"), timeout=30) as http:
        for n in range(samples):
            at = datetime.now(UTC)
            reading = {"at": at.isoformat(), "lat": 40.8518 + n * 1e-5, "lon": 14.2681, "speed_mps": 6.0}
            started = time.perf_counter()
            answer = await http.post(path, json={"readings": [reading]}, headers={"X-Device-Key": tracker["secret"]})
            answer.raise_for_status()
            key, deadline = round(at.timestamp() * 1000), started + 10
            while key not in shown:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the order page never showed reading {n} ({at.isoformat()})")
                await asyncio.sleep(0.005)
            lags.append(shown[key] - started)
            await asyncio.sleep(rng.uniform(0.05, 0.45))  # the next reading falls anywhere in the page's poll
    return lags
