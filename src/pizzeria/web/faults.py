"""The fault lab (administrators): switches that break what the system is built to survive — the
payment provider down, slow or declining; the broker paused; a consumer group failing; a service
killed — next to the invariants that must hold whatever is broken: every accepted order
finishes, nobody is charged twice, stock is conserved. The switches and the invariants are the
gateway's (`/api/v1/ops/faults`, `/api/v1/ops/invariants`), the same ones `pizzeria demo` uses;
the page polls them every 3 s. Beside them, a checked load (web/checked.py): orders placed at a
steady rate while the switches are turned, then checked by the history checker."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from pizzeria.web.api import Answer
from pizzeria.web.checked import RATES, as_rate
from pizzeria.web.render import Alert, redirect
from pizzeria.web.session import Visit
from pizzeria.web.site import Web, form

LATENCIES = ((20, "normal (20 ms)"), (1000, "slow (1 s)"), (3000, "very slow (3 s)"), (10000, "stalling (10 s)"))
DECLINE_RATES = ((0.0, "never"), (0.25, "a quarter of cards"), (0.5, "half of the cards"), (1.0, "every card"))
SWITCHES = "/api/v1/ops/faults"
#: What a service or consumer group name looks like (nothing else reaches an API path).
NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
PROVIDER = f"{SWITCHES}/payment-provider"
#: Where each switch's pattern is explained (docs/patterns.md, served at /patterns).
PATTERNS = {
    "provider": "/patterns#circuit-breaker",
    "broker": "/patterns#outbox",
    "consumer": "/patterns#retry-and-dead-letters",
    "kill": "/patterns#outbox",
    "invariants": "/patterns#saga-and-compensation",
}


def switches_view(lab: Answer, services: Answer) -> dict[str, Any]:
    """The switches as the page shows them, each part None when nobody could answer it."""
    found = lab.json() if lab.ok else None
    health = {s["name"]: s for s in services.json()["services"]} if services.ok else {}
    rows = []
    for service in (found or {}).get("services", []):
        probed = health.get(service["name"], {})
        rows.append({**service, "health": probed.get("state"), "breakers": probed.get("breakers") or {}})
    reachable = [r for r in rows if r["reachable"]]
    paused = [r["name"] for r in reachable if r["broker_paused"]]
    failing = sorted(g for r in reachable for g, on in (r["consumers_failing"] or {}).items() if on)
    broker = None
    if reachable:
        broker = "flowing" if not paused else "paused" if len(paused) == len(reachable) else "partly paused"
    return {
        "provider": found["provider"] if found else None,
        "services": rows if found else None,
        "broker": broker,
        "paused": paused,
        "groups": sorted(g for r in reachable for g in r["consumers_failing"] or {}),
        "failing": failing,
        "error": None if lab.ok else lab.problem(),
    }


def invariants_view(found: Answer, outbox: Answer) -> dict[str, Any]:
    backlog = None
    if outbox.ok:
        backlog = sum(int(s.get("backlog", 0)) for s in outbox.json()["services"].values())
    return {"invariants": found.json() if found.ok else None, "backlog": backlog}


async def lab_state(web: Web, request: Request, visit: Visit) -> dict[str, Any]:
    web.checked.seen(visit.access)
    lab, services, invariants, outbox = await asyncio.gather(
        web.call(request, visit, "GET", SWITCHES),
        web.call(request, visit, "GET", "/api/v1/ops/services"),
        web.call(request, visit, "GET", "/api/v1/ops/invariants"),
        web.call(request, visit, "GET", "/api/v1/ops/outbox"),
    )
    return {
        "lab": switches_view(lab, services),
        **invariants_view(invariants, outbox),
        "latencies": LATENCIES,
        "decline_rates": DECLINE_RATES,
        "patterns": PATTERNS,
        **checked_state(web, visit),
    }


def checked_state(web: Web, visit: Visit) -> dict[str, Any]:
    """The checked load's panel: the run (if any) and what may be done."""
    web.checked.seen(visit.access)
    return {"checked": web.checked.view(), "checked_busy": web.checked.busy, "rates": RATES}


def provider_change(fields: dict[str, str]) -> dict[str, Any]:
    """The provider switches a form asks for (nothing when it asks for nothing sensible)."""
    change: dict[str, Any] = {}
    if fields.get("down") in ("1", "0"):
        change["down"] = fields["down"] == "1"
    if fields.get("latency_ms", "").isdigit():
        change["latency_ms"] = int(fields["latency_ms"])
    try:
        if "failure_rate" in fields:
            change["failure_rate"] = float(fields["failure_rate"])
    except ValueError:
        return {}
    return change


def provider_said(change: dict[str, Any]) -> str:
    said = {
        "down": "The provider is down." if change.get("down") else "The provider is back.",
        "latency_ms": f"The provider now answers in about {change.get('latency_ms')} ms.",
        "failure_rate": f"The provider now declines {change.get('failure_rate', 0):.0%} of ordinary cards.",
    }
    return " ".join(text for key, text in said.items() if key in change)


async def checked_load(web: Web, visit: Visit, fields: dict[str, str]) -> str:
    """Start or stop the checked load as the form asks; what to tell the operator."""
    web.checked.seen(visit.access)
    if fields.get("action") == "start":
        rate = as_rate(fields.get("rate"))
        if rate is None:
            return Alert(f"The rate must be a whole number of orders a second from {RATES[0]} to {RATES[-1]}.")
        return await web.checked.start(rate)
    if fields.get("action") == "stop":
        return await web.checked.stop()
    return Alert("Nothing to change.")


async def switch(web: Web, request: Request, visit: Visit, fields: dict[str, str]) -> str:
    """Turn the switch the form names (and tell the checked load, if one runs); what to tell
    the operator."""
    what = fields.get("switch", "provider")
    if what == "checked":
        return await checked_load(web, visit, fields)
    if what == "broker" and fields.get("paused") in ("1", "0"):
        paused = fields["paused"] == "1"
        answer = await web.call(request, visit, "PUT", f"{SWITCHES}/broker", json={"paused": paused})
        if not answer.ok:
            return Alert(f"The broker could not be switched: {answer.problem()}")
        web.checked.fault("broker", paused)
        silent = [s["name"] for s in answer.json() if not s["reachable"]]
        done = "The broker is paused: outboxes keep what is committed." if paused else "The broker is back."
        return Alert(f"{done} No answer from {', '.join(silent)}.") if silent else done
    if what == "consumer" and NAME.match(fields.get("group", "")) and fields.get("failing") in ("1", "0"):
        failing = fields["failing"] == "1"
        group = fields["group"]
        answer = await web.call(request, visit, "PUT", f"{SWITCHES}/consumers/{group}", json={"failing": failing})
        if not answer.ok:
            return Alert(f"The consumer group could not be switched: {answer.problem()}")
        web.checked.fault(f"consumer:{group}", failing)
        return f"{group} now fails on every message." if failing else f"{group} handles messages again."
    if what == "kill" and NAME.match(fields.get("service", "")):
        service = fields["service"]
        answer = await web.call(request, visit, "POST", f"{SWITCHES}/services/{service}/crash")
        if not answer.ok:
            return Alert(f"{service} could not be killed: {answer.problem()}")
        web.checked.fault(f"kill:{service}", True)
        return f"{service} (process {answer.json()['pid']}) was killed; it is started again in a moment."
    change = provider_change(fields) if what == "provider" else {}
    if not change:
        return Alert("Nothing to change: the form named no switch this lab has, or no value it takes.")
    answer = await web.call(request, visit, "PUT", PROVIDER, json=change)
    if not answer.ok:
        return Alert(f"The provider could not be switched: {answer.problem()}")
    web.checked.provider_switched(answer.json())
    return provider_said(change)


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

    @routes.get("/ops/faults/checked")
    async def checked(request: Request) -> Response:
        visit = await web.visit(request, "admin")
        return web.render.partial(request, visit, "_checked_load.html", **checked_state(web, visit))

    @routes.post("/ops/faults")
    async def change(request: Request) -> Response:
        visit = await web.visit(request, "admin")
        flash = await switch(web, request, visit, await form(request))
        return redirect(request, visit, "/ops/faults", flash=flash)

    return routes
