"""The fault lab (administrators): switches that make the payment provider go down, slow down or
decline cards, next to the invariants that must hold whatever it does — every accepted order
finishes, nobody is charged twice, stock is conserved. The invariants are polled every 3 s."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from pizzeria.web.api import Answer
from pizzeria.web.render import redirect
from pizzeria.web.session import Visit
from pizzeria.web.site import Web, form

LATENCIES = ((20, "normal (20 ms)"), (1000, "slow (1 s)"), (3000, "very slow (3 s)"), (10000, "stalling (10 s)"))
DECLINE_RATES = ((0.0, "never"), (0.25, "a quarter of cards"), (0.5, "half of the cards"), (1.0, "every card"))
PROVIDER = "/api/v1/ops/faults/payment-provider"


def invariants(sagas: Answer, stock: Answer, provider: Answer) -> dict[str, Any]:
    """What the lab shows beside the switches, each part None when its service did not answer."""
    counts = sagas.json()["counts"] if sagas.ok else None
    orders = None
    if counts is not None:
        finished = counts.get("completed", 0) + counts.get("compensated", 0)
        under_way = counts.get("running", 0) + counts.get("compensating", 0)
        orders = {"accepted": finished + under_way, "finished": finished, "under_way": under_way}
    unbalanced = None
    reserved = None
    if stock.ok:
        items = stock.json()["items"]
        unbalanced = [i["ingredient"] for i in items if i["on_hand"] + i["reserved"] + i["consumed"] != i["received"]]
        reserved = sum(i["reserved"] for i in items)
    return {
        "orders": orders,
        "unbalanced": unbalanced,
        "reserved": reserved,
        "provider": provider.json() if provider.ok else None,
    }


async def lab_state(web: Web, request: Request, visit: Visit) -> dict[str, Any]:
    sagas, stock, provider = await asyncio.gather(
        web.call(request, visit, "GET", "/api/v1/ops/sagas", params={"limit": "1"}),
        web.call(request, visit, "GET", "/api/v1/inventory"),
        web.call(request, visit, "GET", PROVIDER),
    )
    return {"lab": invariants(sagas, stock, provider), "latencies": LATENCIES, "decline_rates": DECLINE_RATES}


def router(web: Web) -> APIRouter:
    routes = APIRouter()

    @routes.get("/ops/faults")
    async def lab(request: Request) -> Response:
        visit = await web.visit(request, "admin")
        return web.render.page(request, visit, "faults.html", title="Fault lab", **await lab_state(web, request, visit))

    @routes.get("/ops/faults/state")
    async def state(request: Request) -> Response:
        visit = await web.visit(request, "admin")
        return web.render.partial(request, visit, "_faults_state.html", **await lab_state(web, request, visit))

    @routes.post("/ops/faults")
    async def switch(request: Request) -> Response:
        visit = await web.visit(request, "admin")
        fields = await form(request)
        change: dict[str, Any] = {}
        if fields.get("down") in ("1", "0"):
            change["down"] = fields["down"] == "1"
        if fields.get("latency_ms", "").isdigit():
            change["latency_ms"] = int(fields["latency_ms"])
        try:
            if "failure_rate" in fields:
                change["failure_rate"] = float(fields["failure_rate"])
        except ValueError:
            change = {}
        if not change:
            return redirect(request, visit, "/ops/faults", flash="Nothing to change.")
        answer = await web.call(request, visit, "PUT", PROVIDER, json=change)
        if answer.ok:
            said = {
                "down": "The provider is down." if change.get("down") else "The provider is back.",
                "latency_ms": f"The provider now answers in about {change.get('latency_ms')} ms.",
                "failure_rate": f"The provider now declines {change.get('failure_rate', 0):.0%} of ordinary cards.",
            }
            flash = " ".join(text for key, text in said.items() if key in change)
        else:
            flash = f"The provider could not be switched: {answer.problem()}"
        return redirect(request, visit, "/ops/faults", flash=flash)

    return routes
