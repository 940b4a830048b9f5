"""Telemetry benchmark, the system started with `pizzeria up`:

1. ingest: batches of readings over HTTP straight to the telemetry service, from N keep-alive
   clients, each batch one tracker's (its own key, times that follow each other); readings
   stored per second, and each batch's latency;
2. the latest position of a courier (`GET /api/v1/telemetry/couriers/{id}/position`): its
   latency read by one client at a time (the aim: 10 ms at p99), and how many reads a second
   N clients get (latency then includes waiting behind each other).

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
from tests.e2e.system import System
from tests.support.tokens import bearer

from bench.gateway_bench import UNLIMITED, hammer
from bench.stacks import BROKER_NOTE, stack_env


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


def _batches(devices: list[dict[str, Any]], per_batch: int, count: int) -> list[tuple[str, dict[str, str], Any]]:
    """`count` batches, dealt round the devices; each device's readings 10 ms apart, ending a
    minute ago (within the retention, not in the future)."""
    start = datetime.now(UTC) - timedelta(hours=1)
    made = []
    for n in range(count):
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


async def run(stack: str, *, clients: int, devices: int, per_batch: int, batches: int, reads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pzbench-tm-") as tmp:
        workdir = Path(tmp)
        async with stack_env(stack, workdir) as env:
            system = System(workdir, {**env, **UNLIMITED})
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
    }
