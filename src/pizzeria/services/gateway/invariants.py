"""`GET /api/v1/ops/invariants` (administrators): what must hold whatever fails, counted from what
the services already answer — every accepted order finishes (the order sagas in orders), nobody
is charged twice (the charges the payment provider made), stock is conserved (the kitchen's
stock ledger). The fault lab shows them beside its switches; `pizzeria demo` checks them.

An order is **lost** when its saga is unfinished and its deadline passed more than
`LOST_AFTER_S` ago: the saga engine acts on a deadline within a second (it compensates or sends
again), so a saga left that far past its deadline is one nothing moves any more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from pizzeria.kit.auth import InvalidToken, Principal, Role
from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.errors import ProblemError
from pizzeria.services.gateway.faults import charged_twice
from pizzeria.services.gateway.routes import ADMIN
from pizzeria.services.gateway.upstream import Forwarded, Upstream, refused_detail

Admit = Callable[[Request, frozenset[Role] | None], Awaitable[Principal | None]]

LOST_AFTER_S = 60.0
#: Unfinished sagas looked at, those left unchanged longest first.
UNFINISHED_LOOKED_AT = 500
FINISHED = ("completed", "compensated")
UNDER_WAY = ("running", "compensating")


class OrderCounts(BaseModel):
    accepted: int = Field(description="orders accepted (each has its saga)")
    finished: int = Field(description="delivered, or cancelled with everything undone")
    under_way: int
    lost: int = Field(description="under way, and past their saga's deadline by more than a minute")
    lost_orders: list[str] = Field(description="the lost orders' ids (the first 20)")


class StockBalance(BaseModel):
    conserved: bool = Field(description="for every ingredient: on hand + reserved + consumed = received")
    unbalanced: list[str]
    reserved: int = Field(description="units held for orders now")


class Invariants(BaseModel):
    orders: OrderCounts | None = Field(description="null when orders did not answer")
    charged_twice: int | None = Field(
        description="orders charged more than once; null when the provider did not answer"
    )
    stock: StockBalance | None = Field(description="null when kitchen did not answer")
    missing: list[str] = Field(description="what did not answer")
    checked_at: datetime


def order_counts(unfinished: list[dict[str, Any]], counts: dict[str, int], now: datetime) -> OrderCounts:
    cutoff = now - timedelta(seconds=LOST_AFTER_S)
    lost = [
        s["id"]
        for s in unfinished
        if s.get("deadline_at") and as_utc(datetime.fromisoformat(s["deadline_at"])) < cutoff
    ]
    finished = sum(counts.get(state, 0) for state in FINISHED)
    under_way = sum(counts.get(state, 0) for state in UNDER_WAY)
    return OrderCounts(
        accepted=finished + under_way, finished=finished, under_way=under_way, lost=len(lost), lost_orders=lost[:20]
    )


def stock_balance(items: list[dict[str, Any]]) -> StockBalance:
    unbalanced = [i["ingredient"] for i in items if i["on_hand"] + i["reserved"] + i["consumed"] != i["received"]]
    return StockBalance(
        conserved=not unbalanced, unbalanced=unbalanced, reserved=sum(int(i["reserved"]) for i in items)
    )


def build_router(
    upstreams: dict[str, Upstream], provider: Upstream, admit: Admit, headers: Callable[[Request], dict[str, str]]
) -> APIRouter:
    router = APIRouter(prefix="/api/v1/ops", tags=["ops"])

    async def ask(upstream: Upstream, path: str, sent: dict[str, str], **params: str) -> Any:
        """The JSON of a 200 answer, else None; 401 when the caller's token was refused."""
        try:
            answer: Forwarded = await upstream.send("GET", path, params=list(params.items()), headers=sent)
        except ProblemError:
            return None
        if answer.status == 401:
            raise InvalidToken(refused_detail(answer.body))
        return orjson.loads(answer.body) if answer.status == 200 else None

    @router.get(
        "/invariants",
        response_model=Invariants,
        summary="Orders accepted, finished and lost; orders charged twice; stock conserved",
    )
    async def invariants(request: Request) -> Invariants:
        await admit(request, ADMIN)
        sent = headers(request)
        sagas = "/api/v1/ops/sagas"
        limit = str(UNFINISHED_LOOKED_AT)
        running, compensating, stock, charges = await asyncio.gather(
            ask(upstreams["orders"], sagas, sent, state="running", limit=limit, oldest_first="true"),
            ask(upstreams["orders"], sagas, sent, state="compensating", limit=limit, oldest_first="true"),
            ask(upstreams["kitchen"], "/api/v1/inventory", sent),
            ask(provider, "/v1/charges", {}),
        )
        orders = None
        if running is not None and compensating is not None:
            orders = order_counts([*running["items"], *compensating["items"]], running["counts"], utcnow())
        missing = [
            name
            for name, found in (("orders", orders), ("payment provider", charges), ("kitchen", stock))
            if found is None
        ]
        return Invariants(
            orders=orders,
            charged_twice=charged_twice(charges["items"]) if charges is not None else None,
            stock=stock_balance(stock["items"]) if stock is not None else None,
            missing=missing,
            checked_at=utcnow(),
        )

    return router
