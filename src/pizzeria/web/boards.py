"""The kitchen board (tickets by state, the ovens, the inventory) and the courier board (deliveries).

Both refresh by htmx polling every few seconds: tickets and deliveries have no stream in the
API, a poll of one server-rendered fragment costs a single API call, survives a service restart
with no reconnect logic, and a board read at arm's length needs no sub-second updates. Buttons
keep stable ids, so htmx gives focus back to the same button after each refresh.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from pizzeria.web import words
from pizzeria.web.api import Answer
from pizzeria.web.render import Alert, redirect
from pizzeria.web.session import Visit
from pizzeria.web.site import Web, as_int, as_uuid, form

KITCHEN = ("staff", "admin")
COURIERS = ("courier", "staff", "admin")
#: An oven against its range (telemetry's word) → how the board says it, and whether it alarms.
OVEN_STATES = {
    "settling": ("heating up", False),
    "in_range": ("at temperature", False),
    "high": ("too hot", True),
    "low": ("too cold", True),
}


async def ovens(web: Web, request: Request, visit: Visit) -> dict[str, Any]:
    """Each oven: its twin (name, station, online, desired temperature) and newest reading."""
    twins = await web.call(request, visit, "GET", "/api/v1/devices", params={"kind": "oven"})
    readings = await web.call(request, visit, "GET", "/api/v1/telemetry/devices", params={"kind": "oven"})
    if not twins.ok:
        return {"ovens": None, "ovens_error": twins.problem()}
    newest = {r["device_id"]: r for r in readings.json()["items"]} if readings.ok else {}
    found = []
    for twin in twins.json()["items"]:
        reading = newest.get(twin["id"], {})
        state, alarm = OVEN_STATES.get(reading.get("oven_state") or "", ("no reading yet", False))
        found.append({**twin, "reading": reading, "state": state, "alarm": alarm})
    return {"ovens": found, "ovens_error": None if readings.ok else readings.problem()}


def router(web: Web) -> APIRouter:
    routes = APIRouter()

    # -- kitchen --------------------------------------------------------------------------------

    async def tickets_fragment(request: Request, *roles: str) -> Response:
        visit = await web.visit(request, *roles)
        answer = await web.call(request, visit, "GET", "/api/v1/kitchen/tickets", params={"limit": "200"})
        return web.render.partial(
            request,
            visit,
            "_tickets.html",
            columns=by_status(answer, words.TICKET_COLUMNS),
            error=None if answer.ok else answer.problem(),
        )

    @routes.get("/kitchen")
    async def kitchen(request: Request) -> Response:
        visit = await web.visit(request, *KITCHEN)
        tickets = await web.call(request, visit, "GET", "/api/v1/kitchen/tickets", params={"limit": "200"})
        stock = await web.call(request, visit, "GET", "/api/v1/inventory")
        return web.render.page(
            request,
            visit,
            "kitchen.html",
            title="Kitchen",
            columns=by_status(tickets, words.TICKET_COLUMNS),
            error=None if tickets.ok else tickets.problem(),
            inventory=stock.json()["items"] if stock.ok else None,
            inventory_error=None if stock.ok else stock.problem(),
            **await ovens(web, request, visit),
        )

    @routes.get("/kitchen/ovens")
    async def ovens_fragment(request: Request) -> Response:
        visit = await web.visit(request, *KITCHEN)
        return web.render.partial(request, visit, "_ovens.html", **await ovens(web, request, visit))

    @routes.get("/kitchen/tickets")
    async def tickets(request: Request) -> Response:
        return await tickets_fragment(request, *KITCHEN)

    @routes.post("/kitchen/tickets/{ticket_id}/advance")
    async def advance_ticket(request: Request, ticket_id: str) -> Response:
        visit = await web.visit(request, *KITCHEN)
        found = as_uuid(ticket_id)
        answer = await web.call(request, visit, "POST", f"/api/v1/kitchen/tickets/{found}/advance") if found else None
        if request.headers.get("hx-request") == "true" and answer is not None and answer.ok:
            return await tickets_fragment(request, *KITCHEN)
        flash = "Ticket moved on." if answer is not None and answer.ok else _why(answer, "move that ticket on")
        return redirect(request, visit, "/kitchen", flash=flash)

    @routes.post("/kitchen/inventory/{ingredient}")
    async def restock(request: Request, ingredient: str) -> Response:
        visit = await web.visit(request, *KITCHEN)
        fields = await form(request)
        on_hand = as_int(fields.get("on_hand"), -1)
        if not ingredient.replace("_", "").isalnum() or not ingredient.isascii() or on_hand < 0:
            return redirect(
                request, visit, "/kitchen#inventory", flash=Alert("Enter the units on hand as a whole number.")
            )
        answer = await web.call(request, visit, "PUT", f"/api/v1/inventory/{ingredient}", json={"on_hand": on_hand})
        flash = (
            f"{ingredient.replace('_', ' ').capitalize()}: {on_hand} on hand."
            if answer.ok
            else _why(answer, f"restock {ingredient}")
        )
        return redirect(request, visit, "/kitchen#inventory", flash=flash)

    # -- couriers -------------------------------------------------------------------------------

    async def deliveries_context(request: Request, roles: tuple[str, ...]) -> tuple[Visit, dict[str, Any]]:
        visit = await web.visit(request, *roles)
        answer = await web.call(request, visit, "GET", "/api/v1/deliveries", params={"limit": "200"})
        couriers = await web.call(request, visit, "GET", "/api/v1/couriers")
        columns = by_status(answer, words.DELIVERY_COLUMNS)
        names = {c["id"]: c["name"] for c in couriers.json()["items"]} if couriers.ok else {}
        return visit, {
            "columns": columns,
            "couriers": couriers.json()["items"] if couriers.ok else None,
            "courier_names": names,
            "error": None if answer.ok else answer.problem(),
        }

    @routes.get("/deliveries")
    async def deliveries(request: Request) -> Response:
        visit, context = await deliveries_context(request, COURIERS)
        return web.render.page(request, visit, "deliveries.html", title="Deliveries", **context)

    @routes.get("/deliveries/board")
    async def deliveries_board(request: Request) -> Response:
        visit, context = await deliveries_context(request, COURIERS)
        return web.render.partial(request, visit, "_deliveries.html", **context)

    @routes.post("/deliveries/{delivery_id}/advance")
    async def advance_delivery(request: Request, delivery_id: str) -> Response:
        visit = await web.visit(request, *COURIERS)
        found = as_uuid(delivery_id)
        answer = await web.call(request, visit, "POST", f"/api/v1/deliveries/{found}/advance") if found else None
        if request.headers.get("hx-request") == "true" and answer is not None and answer.ok:
            visit, context = await deliveries_context(request, COURIERS)
            return web.render.partial(request, visit, "_deliveries.html", **context)
        flash = "Delivery moved on." if answer is not None and answer.ok else _why(answer, "move that delivery on")
        return redirect(request, visit, "/deliveries", flash=flash)

    return routes


def by_status(answer: Answer, columns: tuple[tuple[str, str], ...]) -> dict[str, list[dict[str, Any]]] | None:
    """The listed items in one column per status (in the board's order), or None on failure."""
    if not answer.ok:
        return None
    found: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in columns}
    for item in answer.json()["items"]:
        found.setdefault(item["status"], []).append(item)
    return found


def _why(answer: Answer | None, what: str) -> Alert:
    if answer is None:
        return Alert(f"Could not {what}: no such item.")
    if answer.status >= 500:
        return Alert(f"Could not {what}: the service is unavailable right now.")
    return Alert(f"Could not {what}: {answer.problem()}")
