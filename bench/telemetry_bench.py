"""Telemetry benchmark, the system started with `pizzeria up`:

1. ingest: batches of readings over HTTP straight to the telemetry service, from N keep-alive
   clients, each batch one tracker's (its own key, times that follow each other); readings
   stored per second, and each batch's latency;
2. the latest position of a courier (`GET /api/v1/telemetry/couriers/{id}/position`): its
   latency read by one client at a time (the aim: 10 ms at p99), and how many reads a second
   N clients get (latency then includes waiting behind each other);
3. beside the order saga: orders at a steady rate through the gateway for a while alone, then
   again with readings sent at the aim's rate (20,000/s embedded, 10,000/s on PostgreSQL) all
   along; the orders' figures of both runs side by side say whether ingest hurts the saga.

The trackers are registered with devices first, and telemetry learns of them from devices'
events before any batch is sent (as in production).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from tests.e2e.scenario import stock_up, wait_for_menu_sync
from tests.e2e.system import Shop, System
from tests.support.tokens import bearer

from bench.gateway_bench import UNLIMITED, hammer
from bench.loadgen import Connection
from bench.stacks import BROKER_NOTE, stack_env
from bench.stats import summary
from bench.system_bench import AUTOPILOTS, NO_RATE_LIMITS, Bench

#: Readings a second sent beside the saga: the ingest aim of each stack (PostgreSQL's, on either broker).
AIM = {"embedded": 20_000, "postgres+kafka": 10_000, "postgres+sqllog": 10_000}


async def _register(system: System, devices: int) -> list[dict[str, Any]]:
    staff = bearer("bench-staff", "staff", env=system.env)
    registered = []
    async with httpx.AsyncClient(base_url=system.url("devices"), headers=staff, timeout=30) as client:
        for n in range(devices):
            courier = f"bench-courier-{n}-{uuid.uuid4().hex[:6]}"
            body = {"kind": "tracker", "name": courier, "courier_id": courier}
            answer = await client.post("/api/v1/devices", json=body)
            answer.raise_for_status()
            registered.append(answer.json())
    async with httpx.AsyncClient(base_url=system.url("telemetry"), headers=staff, timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:  # telemetry knows them from devices' events
            known = (await client.get("/api/v1/telemetry/devices", params={"limit": 1000})).json()["items"]
            if len(known) >= devices:
                return registered
            if time.monotonic() > deadline:
                raise RuntimeError(f"telemetry knows {len(known)} of {devices} trackers after a minute")
            await asyncio.sleep(0.1)


def _batches(
    devices: list[dict[str, Any]], per_batch: int, count: int, *, skip: int = 0
) -> list[tuple[str, dict[str, str], Any]]:
    """`count` batches, dealt round the devices after the `skip` first; each device's readings
    10 ms apart, from an hour ago on (within the retention, not in the future)."""
    start = datetime.now(UTC) - timedelta(hours=1)
    made = []
    for n in range(skip, skip + count):
        device = devices[n % len(devices)]
        first = start + timedelta(milliseconds=10 * per_batch * (n // len(devices)))
        readings = [
            {
                "at": (first + timedelta(milliseconds=10 * i)).isoformat(),
                "lat": 40.85 + i * 1e-6,
                "lon": 14.26,
                "speed_mps": 5.0,
                "battery_pct": 80.0,
            }
            for i in range(per_batch)
        ]
        path = f"/api/v1/telemetry/devices/{device['id']}/readings"
        made.append((path, {"X-Device-Key": device["secret"]}, {"readings": readings}))
    return made


async def paced(port: int, work: list[tuple[str, dict[str, str], Any]], per_s: float, clients: int) -> dict[str, Any]:
    """Send the batches of `work` at `per_s` a second (each as soon as its time comes and a
    connection is free; `clients` connections); what was achieved (batches over the time from
    the first sent to the last answered: a little under `per_s` even when every batch kept its
    time), each batch's latency, and how late each went (the service keeps up with `per_s`
    while no batch waits long for a connection)."""
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(clients):
        free.put_nowait(Connection("127.0.0.1", port))
    latencies: list[float] = []
    late: list[float] = []  # how long after its time each batch went (no connection free)
    statuses: dict[int, int] = {}
    began = time.perf_counter()

    async def one(i: int) -> None:
        due = began + i / per_s
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        conn = await free.get()
        try:
            path, headers, body = work[i]
            started = time.perf_counter()
            late.append(max(0.0, started - due))
            reply = await conn.request("POST", path, body, headers=headers)
            latencies.append(time.perf_counter() - started)
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
        finally:
            free.put_nowait(conn)

    await asyncio.gather(*(one(i) for i in range(len(work))))
    took = time.perf_counter() - began
    while not free.empty():
        free.get_nowait().close()
    return {
        "batches_per_s": len(work) / took,
        "latency": summary(latencies),
        "late": summary(late),
        "statuses": statuses,
    }


async def beside_saga(
    system: System,
    trackers: list[dict[str, Any]],
    stack: str,
    *,
    sent: int,
    per_batch: int,
    clients: int,
    rate: int,
    seconds: int,
) -> dict[str, Any]:
    """Orders at `rate` a second for `seconds` alone, then again with readings at the stack's
    aim all along (batches after the `sent` ones before, so none is a duplicate); both runs'
    order figures and the ingest achieved."""
    shop = Shop(system)
    try:
        menu = await shop.menu()
        await wait_for_menu_sync(shop, menu)
        await stock_up(shop, 100_000_000)
    finally:
        await shop.close()
    bench = Bench(system.ports["gateway"], menu, system.env)
    alone = await bench.steady(rate, seconds)
    batches_per_s = AIM[stack] / per_batch
    count = int(batches_per_s * seconds)
    work = _batches(trackers, per_batch, count, skip=sent)
    port = int(system.url("telemetry").rsplit(":", 1)[1])
    ingest_task = asyncio.create_task(paced(port, work, batches_per_s, clients))
    together = await bench.steady(rate, seconds)
    ingest = await ingest_task
    return {
        "rate": rate,
        "seconds": seconds,
        "alone": alone,
        "together": together,
        "aim_readings_per_s": AIM[stack],
        "readings_per_s": ingest["batches_per_s"] * per_batch,
        "ingest": ingest,
    }


async def run(
    stack: str,
    *,
    clients: int,
    devices: int,
    per_batch: int,
    batches: int,
    reads: int,
    saga_rate: int = 10,
    saga_seconds: int = 20,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pzbench-tm-") as tmp:
        workdir = Path(tmp)
        async with stack_env(stack, workdir) as env:
            system = System(workdir, {**env, **UNLIMITED, **NO_RATE_LIMITS, **AUTOPILOTS, "PAYMENT_LATENCY_MS": "20"})
            await system.start()
            try:
                trackers = await _register(system, devices)
                port = int(system.url("telemetry").rsplit(":", 1)[1])
                warm = _batches(trackers, per_batch, len(trackers))
                await hammer(port, clients, len(warm), lambda i: ("POST", warm[i][0], warm[i][2], warm[i][1]))
                work = _batches(trackers, per_batch, batches + len(trackers))[len(trackers) :]
                ingest = await hammer(port, clients, batches, lambda i: ("POST", work[i][0], work[i][2], work[i][1]))
                staff = bearer("bench-staff", "staff", env=system.env)
                paths = [f"/api/v1/telemetry/couriers/{t['courier_id']}/position" for t in trackers]
                position = await hammer(port, 1, reads, lambda i: ("GET", paths[i % len(paths)], None, staff))
                flood = await hammer(port, clients, reads, lambda i: ("GET", paths[i % len(paths)], None, staff))
                saga = await beside_saga(
                    system,
                    trackers,
                    stack,
                    sent=batches + len(trackers),
                    per_batch=per_batch,
                    clients=clients,
                    rate=saga_rate,
                    seconds=saga_seconds,
                )
            finally:
                system.stop()
    return {
        "stack": stack,
        "broker": BROKER_NOTE[stack],
        "devices": devices,
        "per_batch": per_batch,
        "batches": batches,
        "readings_per_s": ingest["per_s"] * per_batch,
        "ingest": ingest,
        "position": position,
        "position_flood": flood,
        "beside_saga": saga,
    }
