"""The operations console (administrators): every service's health and breaker, outbox backlog,
consumer lag, dead letters (replay, discard), sagas with the stuck ones first, the latest events
of the audit log, the devices online and offline with the rate their readings come in, charts of
the business figures, and the whole story of one order.

Each section is a fragment that htmx polls (events every 2 s, the rest every 5 s): the console
shows the state of services that may be down, and a poll that fails just shows that.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from pizzeria.web import charts
from pizzeria.web.api import Answer
from pizzeria.web.render import Alert, duration, parse_time, redirect, short
from pizzeria.web.session import Visit
from pizzeria.web.site import Web, as_uuid

ADMIN = ("admin",)
EVENTS_SHOWN = 40
#: A saga that has not moved for this long, or is past its deadline, is listed as stuck.
STUCK_AFTER_S = 60.0
SAGA_STATES = ("running", "compensating", "completed", "compensated")
#: The devices' ingest rate is the readings of this many seconds, per second.
INGEST_WINDOW_S = 30


def _json(answer: Answer) -> Any:
    return answer.json() if answer.ok else None


def sagas_view(running: Answer, compensating: Answer, recent: Answer) -> dict[str, Any]:
    """Unfinished sagas, stuck first then oldest first, and the latest ones of every state."""
    now = datetime.now(UTC)
    unfinished: list[dict[str, Any]] = []
    for answer in (running, compensating):
        if answer.ok:
            unfinished.extend(answer.json()["items"])
    for saga in unfinished:
        deadline, updated = parse_time(saga.get("deadline_at")), parse_time(saga.get("updated_at"))
        idle = (now - updated).total_seconds() if updated else 0.0
        saga["stuck"] = bool((deadline and deadline < now) or idle > STUCK_AFTER_S)
        saga["idle_s"] = idle
    unfinished.sort(key=lambda s: (not s["stuck"], -s["idle_s"]))
    counts = (recent.json() if recent.ok else {}).get("counts") or (running.json() if running.ok else {}).get("counts")
    return {
        "unfinished": unfinished,
        "recent": recent.json()["items"] if recent.ok else None,
        "counts": {state: (counts or {}).get(state, 0) for state in SAGA_STATES} if counts is not None else None,
        "error": None if running.ok and recent.ok else (recent if not recent.ok else running).problem(),
    }


def charts_view(report: dict[str, Any] | None) -> dict[str, Any]:
    """The last day's figures per hour as charts (hours without orders count as none)."""
    if report is None:
        return {"summary": None}
    until = parse_time(report["until"]) or datetime.now(UTC)
    start = until.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    by_hour = {
        (parse_time(b["start"]) or start).replace(minute=0, second=0, microsecond=0): b for b in report["buckets"]
    }
    hours = [start + timedelta(hours=i) for i in range(24)]
    labels = [h.strftime("%H:00") for h in hours]
    rows = [by_hour.get(h) for h in hours]
    per_minute = [(r["orders_per_minute"] or 0.0) if r else 0.0 for r in rows]
    success = [r["payment_success_rate"] if r else None for r in rows]
    average = [r["delivery_time_avg_s"] if r else None for r in rows]
    p95 = [r["delivery_time_p95_s"] if r else None for r in rows]
    return {
        "summary": report["summary"],
        "top_items": report.get("top_items", []),
        "orders": charts.bars("Orders per minute, by hour", labels, per_minute, lambda v: f"{v:.2f}"),
        "success": charts.lines(
            "Payment success rate, by hour",
            labels,
            [charts.Series("success rate", success, "s1")],
            lambda v: f"{v * 100:.0f}%",
            top=1.0,
        ),
        "latency": charts.lines(
            "Place to delivered, by hour",
            labels,
            [charts.Series("average", average, "s1"), charts.Series("95th percentile", p95, "s2")],
            duration,
        ),
    }


async def get(web: Web, request: Request, visit: Visit, path: str, **params: str) -> Answer:
    return await web.call(request, visit, "GET", path, params=params)


async def services(web: Web, request: Request, visit: Visit) -> dict[str, Any]:
    status, outbox = await asyncio.gather(
        get(web, request, visit, "/api/v1/ops/services"), get(web, request, visit, "/api/v1/ops/outbox")
    )
    found = status.json()["services"] if status.ok else None
    backlog = outbox.json()["services"] if outbox.ok else {}
    lag = []
    for service in found or []:
        service["outbox"] = backlog.get(service["name"])
        for group, behind in sorted((service.get("lag") or {}).items()):
            lag.append({"group": group, "service": service["name"], "lag": behind})
    return {
        "services": found,
        "lag": lag,
        "services_error": None if status.ok else status.problem(),
        "outbox_missing": outbox.json()["missing"] if outbox.ok else None,
    }


async def dead_letters(web: Web, request: Request, visit: Visit) -> dict[str, Any]:
    answer = await get(web, request, visit, "/api/v1/ops/dlq", status="dead", limit="50")
    found = answer.json() if answer.ok else None
    return {
        "letters": found["items"] if found else None,
        "letters_missing": found["missing"] if found else [],
        "letters_error": None if answer.ok else answer.problem(),
    }


async def sagas(web: Web, request: Request, visit: Visit) -> dict[str, Any]:
    running, compensating, recent = await asyncio.gather(
        get(web, request, visit, "/api/v1/ops/sagas", state="running", limit="50"),
        get(web, request, visit, "/api/v1/ops/sagas", state="compensating", limit="50"),
        get(web, request, visit, "/api/v1/ops/sagas", limit="10"),
    )
    return {"sagas": sagas_view(running, compensating, recent)}


async def events(web: Web, request: Request, visit: Visit) -> dict[str, Any]:
    answer = await get(web, request, visit, "/api/v1/ops/audit", newest_first="true", limit=str(EVENTS_SHOWN))
    return {
        "events": answer.json()["items"] if answer.ok else None,
        "events_error": None if answer.ok else answer.problem(),
    }


async def devices(web: Web, request: Request, visit: Visit) -> dict[str, Any]:
    found, rate = await asyncio.gather(
        get(web, request, visit, "/api/v1/devices", limit="500"),
        get(web, request, visit, "/api/v1/telemetry/ingest", window_s=str(INGEST_WINDOW_S)),
    )
    items = found.json()["items"] if found.ok else None
    return {
        "devices": items,
        "devices_online": sum(1 for d in items or [] if d["online"]),
        "devices_error": None if found.ok else found.problem(),
        "ingest": rate.json() if rate.ok else None,
        "ingest_error": None if rate.ok else rate.problem(),
    }


async def figures(web: Web, request: Request, visit: Visit) -> dict[str, Any]:
    answer = await get(web, request, visit, "/api/v1/ops/analytics", bucket="hour")
    return {"charts": charts_view(_json(answer)), "charts_error": None if answer.ok else answer.problem()}


def router(web: Web) -> APIRouter:
    routes = APIRouter()

    @routes.get("/ops")
    async def console(request: Request) -> Response:
        visit = await web.visit(request, *ADMIN)
        parts = await asyncio.gather(
            services(web, request, visit),
            dead_letters(web, request, visit),
            sagas(web, request, visit),
            events(web, request, visit),
            devices(web, request, visit),
            figures(web, request, visit),
        )
        context: dict[str, Any] = {}
        for part in parts:
            context.update(part)
        return web.render.page(request, visit, "console.html", title="Operations", **context)

    sections = {
        "services": (services, "_ops_services.html"),
        "dead-letters": (dead_letters, "_ops_dead_letters.html"),
        "sagas": (sagas, "_ops_sagas.html"),
        "events": (events, "_ops_events.html"),
        "devices": (devices, "_ops_devices.html"),
        "charts": (figures, "_ops_charts.html"),
    }

    @routes.get("/ops/section/{name}")
    async def section(request: Request, name: str) -> Response:
        visit = await web.visit(request, *ADMIN)
        if name not in sections:
            return Response("no such section", status_code=404)
        load, template = sections[name]
        return web.render.partial(request, visit, template, **await load(web, request, visit))

    @routes.post("/ops/dead-letters/{letter_id}/{action}")
    async def act(request: Request, letter_id: str, action: str) -> Response:
        visit = await web.visit(request, *ADMIN)
        found = as_uuid(letter_id)
        if found is None or action not in ("replay", "discard"):
            return web.error_page(request, visit, 404, "No such dead letter", "That dead letter does not exist.")
        answer = await web.call(request, visit, "POST", f"/api/v1/ops/dlq/{found}/{action}")
        if answer.ok:
            done = "sent back to its consumer" if action == "replay" else "discarded"
            notice = f"Dead letter {short(found)} {done}."
        else:
            notice = Alert(f"Could not {action} dead letter {short(found)}: {answer.problem()}")
        if request.headers.get("hx-request") == "true":
            return web.render.partial(
                request, visit, "_ops_dead_letters.html", notice=notice, **await dead_letters(web, request, visit)
            )
        return redirect(request, visit, "/ops#dead-letters", flash=notice)

    @routes.get("/ops/orders/{order_id}")
    async def story(request: Request, order_id: str) -> Response:
        """One order across every service: the order, its saga, payments, notifications and
        every message about it in the audit log."""
        visit = await web.visit(request, *ADMIN)
        found = as_uuid(order_id)
        if found is None:
            return web.error_page(request, visit, 404, "No such order", "That is not an order id.")
        order, saga, payments, notes, audit = await asyncio.gather(
            get(web, request, visit, f"/api/v1/orders/{found}"),
            get(web, request, visit, f"/api/v1/ops/sagas/{found}"),
            get(web, request, visit, "/api/v1/payments", order_id=found),
            get(web, request, visit, "/api/v1/notifications", order_id=found, limit="200"),
            get(web, request, visit, "/api/v1/ops/audit", order_id=found, limit="1000"),
        )
        return web.render.page(
            request,
            visit,
            "story.html",
            title=f"Order {short(found)}: the whole story",
            order_id=found,
            order=_json(order),
            order_status=order.status,
            saga=_json(saga),
            payments=(_json(payments) or {}).get("items"),
            notifications=(_json(notes) or {}).get("items"),
            entries=(_json(audit) or {}).get("items"),
            failed=[
                name
                for name, a in (("orders", order), ("payments", payments), ("notifications", notes), ("audit", audit))
                if not a.ok and a.status != 404
            ],
        )

    @routes.get("/ops/correlation/{correlation_id}")
    async def correlated(request: Request, correlation_id: str) -> Response:
        """Every message that shares a correlation id; an order's messages open its story."""
        visit = await web.visit(request, *ADMIN)
        cid = correlation_id[:64]
        answer = await get(web, request, visit, "/api/v1/ops/audit", correlation_id=cid, limit="1000")
        entries = answer.json()["items"] if answer.ok else None
        orders = sorted({e["order_id"] for e in entries or [] if e.get("order_id")})
        if len(orders) == 1:
            return redirect(request, visit, f"/ops/orders/{orders[0]}")
        return web.render.page(
            request,
            visit,
            "correlation.html",
            title=f"Correlation {short(cid, 12)}",
            correlation_id=cid,
            entries=entries,
            orders=orders,
            error=None if answer.ok else answer.problem(),
        )

    return routes
