"""`GET /api/v1/ops/services` (administrators): every service's readiness, the state of its
circuit breaker at the gateway, its consumers' lag and its own breakers, asked of all services
at once, one entry per replica of a service.

The probes go straight to each service's `/ready` and `/metrics`, not through its breaker:
looking at a service must not open or close the breaker that guards the traffic to it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from pizzeria.kit.auth import Principal, Role
from pizzeria.kit.clock import utcnow
from pizzeria.services.gateway.routes import ADMIN
from pizzeria.services.gateway.upstream import Replica, Upstream
from pizzeria.services.gateway.wire import PoolBusy, TimedOut, WireError

PROBE_TIMEOUT_S = 1.5
LAG_FAMILY = "pizzeria_consumer_lag_messages"
BREAKER_FAMILY = "pizzeria_circuit_breaker_state"
BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Admit = Callable[[Request, frozenset[Role] | None], Awaitable[Principal | None]]


class ServiceStatus(BaseModel):
    name: str
    url: str = Field(description="the address of this replica of the service")
    breaker: str = Field(description="the gateway's circuit breaker to this replica: closed, open or half-open")
    state: Literal["ready", "not-ready", "down"]
    detail: str = Field(description="why it is not ready, or how it failed to answer")
    latency_ms: float | None = Field(description="how long `/ready` took to answer")
    lag: dict[str, float] | None = Field(
        description="consumer group → records between the ends of its partitions and its committed offsets; "
        "null when the service's metrics could not be read"
    )
    breakers: dict[str, str] | None = Field(
        None,
        description="the service's own circuit breakers (to the payment provider, say): name → closed, "
        "half-open or open; null when its metrics could not be read",
    )


class ServicesStatus(BaseModel):
    services: list[ServiceStatus]
    checked_at: datetime


def _samples(exposition: str, family: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of each sample of one family in a Prometheus exposition."""
    found = []
    for line in exposition.splitlines():
        if not line.startswith(family + "{"):
            continue
        labels, _, value = line.rpartition(" ")
        try:
            found.append((dict(_LABEL.findall(labels)), float(value)))
        except ValueError:
            continue
    return found


def consumer_lag(exposition: str) -> dict[str, float]:
    """Lag per consumer group, summed over topics and partitions, from a Prometheus exposition."""
    lag: dict[str, float] = {}
    for labels, value in _samples(exposition, LAG_FAMILY):
        group = labels.get("group", "?")
        lag[group] = lag.get(group, 0.0) + value
    return lag


def breaker_states(exposition: str) -> dict[str, str]:
    """Each circuit breaker's state by name, from a Prometheus exposition."""
    return {
        labels.get("name", "?"): BREAKER_STATES.get(int(value), "unknown")
        for labels, value in _samples(exposition, BREAKER_FAMILY)
    }


def _checks(body: bytes) -> dict[str, object]:
    """The checks a `/ready` answer names, or none when its body is not what ours send (a
    half-broken replica must not take the status of every other one down with it)."""
    try:
        checks = orjson.loads(body).get("checks", {})
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return checks if isinstance(checks, dict) else {}


async def probe(name: str, replica: Replica) -> ServiceStatus:
    started = time.perf_counter()
    latency: float | None = None
    try:
        ready = await replica.wire.send("GET", "/ready", [], b"", timeout=PROBE_TIMEOUT_S)
        latency = round((time.perf_counter() - started) * 1000, 1)
        if ready.status == 200:
            state, detail = "ready", "ready"
        else:
            state = "not-ready"
            checks = _checks(ready.body) if (ready.header("content-type") or "").endswith("json") else {}
            failing = [f"{check}: {outcome}" for check, outcome in checks.items() if outcome != "ok"]
            detail = "; ".join(failing) or f"/ready answered {ready.status}"
    except TimedOut:
        state, detail = "down", f"no answer within {PROBE_TIMEOUT_S} s"
    except PoolBusy:  # the gateway's own congestion: the replica may well be up
        state, detail = "down", "not asked: the gateway's connections to it are all in use"
    except WireError:
        state, detail = "down", "cannot be reached"
    lag: dict[str, float] | None = None
    breakers: dict[str, str] | None = None
    if state != "down":
        try:
            metrics = await replica.wire.send("GET", "/metrics", [], b"", timeout=PROBE_TIMEOUT_S)
            if metrics.status == 200:
                text = metrics.body.decode("utf-8", "replace")
                lag, breakers = consumer_lag(text), breaker_states(text)
        except WireError:
            pass
    return ServiceStatus(
        name=name,
        url=replica.url,
        breaker=replica.state(),
        state=state,
        detail=detail,
        latency_ms=latency,
        lag=lag,
        breakers=breakers,
    )


def build_router(upstreams: dict[str, Upstream], admit: Admit) -> APIRouter:
    router = APIRouter(prefix="/api/v1/ops", tags=["ops"])

    @router.get(
        "/services",
        response_model=ServicesStatus,
        summary="Every service's readiness, its circuit breaker at the gateway and its consumers' lag",
    )
    async def services(request: Request) -> ServicesStatus:
        await admit(request, ADMIN)
        found = await asyncio.gather(*(probe(u.name, r) for u in upstreams.values() for r in u.replicas))
        return ServicesStatus(services=list(found), checked_at=utcnow())

    return router
