"""`/api/v1/ops/faults/payment-provider` (administrators): the simulated payment provider's
fault switches — down, slow, declining — and what it charged, for the fault lab.

Only the simulator has these switches (`PAYMENT_PROVIDER_URL`, as payments reads it, else the
simulator on this host); a real provider answers them with an error, shown as such.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from pizzeria.kit.auth import Principal, Role
from pizzeria.kit.errors import ProblemError
from pizzeria.services.gateway.routes import ADMIN
from pizzeria.services.gateway.upstream import Upstream

Admit = Callable[[Request, frozenset[Role] | None], Awaitable[Principal | None]]


class ProviderFaults(BaseModel):
    """The switches to change; those left out stay as they are."""

    down: bool | None = Field(None, description="the provider answers every charge and refund with 503")
    failure_rate: float | None = Field(None, ge=0, le=1, description="share of ordinary cards declined")
    latency_ms: int | None = Field(None, ge=0, le=60_000, description="typical time of an answer")


class ProviderState(BaseModel):
    reachable: bool
    down: bool | None = None
    failure_rate: float | None = None
    latency_ms: int | None = None
    charges: int | None = Field(None, description="charges the provider made")
    orders_charged_twice: int | None = Field(None, description="orders with more than one successful charge")


def build_router(provider: Upstream, admit: Admit) -> APIRouter:
    router = APIRouter(prefix="/api/v1/ops/faults", tags=["ops"])

    async def state() -> ProviderState:
        try:
            now, charges = await asyncio.gather(
                provider.send("GET", "/v1/admin/state"), provider.send("GET", "/v1/charges")
            )
        except ProblemError:
            return ProviderState(reachable=False)
        if now.status != 200:
            return ProviderState(reachable=False)
        found = orjson.loads(now.body)
        made = orjson.loads(charges.body).get("items", []) if charges.status == 200 else None
        twice = None
        if made is not None:
            succeeded = Counter(c.get("order_id") for c in made if c.get("status") == "succeeded")
            twice = sum(1 for order, n in succeeded.items() if order and n > 1)
        return ProviderState(
            reachable=True,
            down=found.get("down"),
            failure_rate=found.get("failure_rate"),
            latency_ms=found.get("latency_ms"),
            charges=len(made) if made is not None else None,
            orders_charged_twice=twice,
        )

    @router.get("/payment-provider", response_model=ProviderState, summary="How the payment provider is set")
    async def get_provider(request: Request) -> ProviderState:
        await admit(request, ADMIN)
        return await state()

    @router.put(
        "/payment-provider",
        response_model=ProviderState,
        summary="Take the payment provider down, slow it, or make it decline",
    )
    async def set_provider(request: Request, body: ProviderFaults) -> ProviderState:
        await admit(request, ADMIN)
        changes: list[tuple[str, dict[str, object]]] = []
        if body.down is not None:
            changes.append(("/v1/admin/outage", {"down": body.down}))
        if body.failure_rate is not None:
            changes.append(("/v1/admin/failure-rate", {"rate": body.failure_rate}))
        if body.latency_ms is not None:
            changes.append(("/v1/admin/latency", {"ms": body.latency_ms}))
        for path, sent in changes:
            await provider.send("PUT", path, headers={"content-type": "application/json"}, body=orjson.dumps(sent))
        return await state()

    return router
