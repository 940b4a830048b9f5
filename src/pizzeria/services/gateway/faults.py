"""`/api/v1/ops/faults` (administrators): the fault lab's switches, one implementation for the
fault lab page and `pizzeria demo`.

- the simulated payment provider: down, slow, declining, and what it charged and refunded. Only the
  simulator has these switches (`PAYMENT_PROVIDER_URL`, as payments reads it, else the simulator
  on this host); a real provider answers them with an error, shown as such;
- every service's own switches (chassis/faults.py): the broker paused (on every service at
  once), a consumer group failing (on the service that owns it), a service crashed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from pizzeria.kit.auth import Principal, Role
from pizzeria.kit.errors import NotFound, ProblemError
from pizzeria.services.gateway.ops import ask_every, relay
from pizzeria.services.gateway.routes import ADMIN
from pizzeria.services.gateway.upstream import Forwarded, Upstream

Admit = Callable[[Request, frozenset[Role] | None], Awaitable[Principal | None]]
SWITCHES = "/api/v1/ops/faults"


def charged_twice(charges: list[dict[str, Any]]) -> int:
    """Orders with more than one successful charge among the provider's charges."""
    succeeded = Counter(c.get("order_id") for c in charges if c.get("status") == "succeeded")
    return sum(1 for order, n in succeeded.items() if order and n > 1)


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
    charges_in_flight: int | None = Field(None, description="charges the provider is answering now")
    orders_charged_twice: int | None = Field(None, description="orders with more than one successful charge")


class ProviderCharge(BaseModel):
    id: str
    amount: int = Field(description="in the currency's minor unit")
    currency: str
    status: str = Field(description="succeeded or declined")
    order_id: str | None
    created_at: str
    refunded: int = Field(0, description="how much of it was refunded")


class ProviderCharges(BaseModel):
    items: list[ProviderCharge] = Field(description="every charge (of the order asked for), oldest first")


class ProviderRefund(BaseModel):
    id: str
    charge: str = Field(description="the charge refunded")
    amount: int
    status: str


class ProviderRefunds(BaseModel):
    items: list[ProviderRefund] = Field(description="every refund, oldest first")


class ServiceSwitches(BaseModel):
    name: str
    reachable: bool = Field(description="whether the service answered")
    pid: int | None = Field(None, description="its process (a new one after a crash)")
    broker_paused: bool | None = None
    consumers_failing: dict[str, bool] | None = Field(None, description="each consumer group: failing or not")


class FaultLab(BaseModel):
    provider: ProviderState
    services: list[ServiceSwitches]


class BrokerSwitch(BaseModel):
    paused: bool = Field(description="true: no message is published or delivered; false: they flow again")


class ConsumerSwitch(BaseModel):
    failing: bool = Field(description="true: the group's handling raises on every message")


def switches(name: str, answer: Forwarded | None) -> ServiceSwitches:
    if answer is None or answer.status != 200:
        return ServiceSwitches(name=name, reachable=False)
    found = orjson.loads(answer.body)
    return ServiceSwitches(
        name=name,
        reachable=True,
        pid=found.get("pid"),
        broker_paused=found.get("broker_paused"),
        consumers_failing=found.get("consumers_failing"),
    )


def build_router(
    provider: Upstream,
    upstreams: dict[str, Upstream],
    admit: Admit,
    headers: Callable[[Request], dict[str, str]],
) -> APIRouter:
    """`admit(request, roles)` checks the caller; `headers(request)` is what goes upstream."""

    async def administrators_only(request: Request) -> None:
        # A dependency: the caller is checked before the body is (a stranger learns nothing).
        await admit(request, ADMIN)

    router = APIRouter(prefix=SWITCHES, tags=["ops"], dependencies=[Depends(administrators_only)])

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
        return ProviderState(
            reachable=True,
            down=found.get("down"),
            failure_rate=found.get("failure_rate"),
            latency_ms=found.get("latency_ms"),
            charges=len(made) if made is not None else None,
            charges_in_flight=found.get("charges_in_flight"),
            orders_charged_twice=charged_twice(made) if made is not None else None,
        )

    @router.get("/payment-provider", response_model=ProviderState, summary="How the payment provider is set")
    async def get_provider() -> ProviderState:
        return await state()

    @router.put(
        "/payment-provider",
        response_model=ProviderState,
        summary="Take the payment provider down, slow it, or make it decline",
    )
    async def set_provider(body: ProviderFaults) -> ProviderState:
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

    @router.get(
        "/payment-provider/charges",
        response_model=ProviderCharges,
        summary="Every charge the simulated payment provider made (all of them; or one order's)",
        responses={503: {"description": "the provider did not answer"}},
    )
    async def provider_charges(
        order_id: Annotated[str | None, Query(max_length=64, description="only this order's charges")] = None,
    ) -> Response:
        # What the history checker (`pizzeria check`, the fault lab's checked load) reads back
        # through the gateway: nobody charged twice, every cancelled charge refunded.
        return relay(await provider.send("GET", "/v1/charges", params=[("order_id", order_id)] if order_id else None))

    @router.get(
        "/payment-provider/refunds",
        response_model=ProviderRefunds,
        summary="Every refund the simulated payment provider made",
        responses={503: {"description": "the provider did not answer"}},
    )
    async def provider_refunds() -> Response:
        return relay(await provider.send("GET", "/v1/refunds"))

    async def services(request: Request, method: str = "GET", json: Any = None) -> list[ServiceSwitches]:
        answers = await ask_every(upstreams, method, SWITCHES, headers(request), json=json)
        return [switches(name, answer) for name, answer in answers.items()]

    @router.get("", response_model=FaultLab, summary="Every fault switch: the payment provider's and each service's")
    async def lab(request: Request) -> FaultLab:
        found, now = await asyncio.gather(services(request), state())
        return FaultLab(provider=now, services=found)

    @router.put(
        "/broker",
        response_model=list[ServiceSwitches],
        summary="Pause the broker on every service (nothing is published or delivered), or resume it",
    )
    async def pause_broker(request: Request, body: BrokerSwitch) -> list[ServiceSwitches]:
        return await services(request, "PUT", {"broker_paused": body.paused})

    @router.put(
        "/consumers/{group}",
        response_model=ServiceSwitches,
        summary="Make a consumer group fail on every message (retried, then dead-lettered), or recover",
        responses={404: {"description": "no service that answered has this consumer group"}},
    )
    async def fail_consumer(request: Request, group: str, body: ConsumerSwitch) -> ServiceSwitches | Response:
        found = await services(request)
        owner = next((s for s in found if group in (s.consumers_failing or {})), None)
        if owner is None:
            silent = sorted(s.name for s in found if not s.reachable)
            suffix = f" (no answer from {', '.join(silent)})" if silent else ""
            raise NotFound(f"no service has a consumer group {group!r}{suffix}")
        sent = {**headers(request), "content-type": "application/json"}
        answer = await upstreams[owner.name].send(
            "PUT", SWITCHES, headers=sent, body=orjson.dumps({"consumers_failing": {group: body.failing}})
        )
        if answer.status != 200:
            return relay(answer)
        return switches(owner.name, answer)

    @router.post(
        "/services/{service}/crash",
        status_code=202,
        summary="Crash a service's process at once (no cleanup); `pizzeria up` or Kubernetes starts it again",
        responses={404: {"description": "no such service"}},
    )
    async def crash(request: Request, service: str) -> Response:
        if service not in upstreams:
            raise NotFound(f"no service {service!r}; the services are {', '.join(sorted(upstreams))}")
        return relay(await upstreams[service].send("POST", f"{SWITCHES}/crash", headers=headers(request)))

    return router
