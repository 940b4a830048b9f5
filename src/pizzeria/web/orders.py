"""A customer's orders: the live order page (its timeline follows the order over server-sent
events, and while it is out for delivery a map shows the courier coming), cancelling, the order
history and the notifications."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from pizzeria.web.api import server_sent_events
from pizzeria.web.maps import courier_map, eta_words
from pizzeria.web.render import Alert, redirect, short
from pizzeria.web.session import Visit
from pizzeria.web.site import Web, as_uuid

READERS = ("customer", "staff", "admin")
#: How often the map asks where the courier is while the order is out, and before it leaves
#: (the API has no stream of positions; one read of the newest costs a few milliseconds).
COURIER_POLL_S = 0.25
WAITING_POLL_S = 1.0
#: A page left open stops following after this long.
FOLLOW_FOR_S = 3 * 3600.0


def sse(event: str, html: str) -> bytes:
    """One server-sent event whose data is a piece of HTML (one `data:` line per line). The data
    must not be empty: a browser does not dispatch an event without data."""
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {event}\n{data}\n".encode()


async def order_panels(
    web: Web, request: Request, order_id: str, token: str | None, *, cancels: bool
) -> AsyncIterator[bytes]:
    """The order's status panel at once and at every change, from the API's stream of the order."""
    async with web.api.stream(request, f"/api/v1/orders/{order_id}/stream", token=token) as stream:
        if stream.status != 200:
            yield sse("order", web.render.fragment("_order_status.html", order=None, error=True))
            yield sse("end", "end")
            return
        async for kind, data in server_sent_events(stream.chunks):
            if kind == "order":
                order: dict[str, Any] = orjson.loads(data)
                panel = web.render.fragment("_order_status.html", order=order, error=False, can_cancel=cancels)
                yield sse("order", panel)
            elif kind == "end":
                yield sse("end", "end")
                return
            else:  # the API's keep-alive: passed on, so that a reader who left is noticed
                yield b": keepalive\n\n"


def courier_panel(web: Web, found: dict[str, Any] | None, *, delivered: bool = False) -> str:
    """The map and the estimate of a courier on the way (`found`: the API's answer)."""
    drawn = eta = None
    if found is not None and found["destination"] is not None:
        destination = (found["destination"]["lat"], found["destination"]["lon"])
        position = found["position"]
        at = (position["lat"], position["lon"]) if position and position["lat"] is not None else None
        drawn = courier_map(destination, at)
        eta = eta_words(found["eta_s"])
    return web.render.fragment("_courier.html", found=found, drawn=drawn, eta=eta, delivered=delivered)


async def courier_panels(web: Web, request: Request, visit: Visit, order_id: str) -> AsyncIterator[bytes]:
    """The courier's panel each time the courier is heard from, while the order is out; the
    last one when it is delivered."""
    shown: tuple[Any, ...] | None = None
    out = False
    until = time.monotonic() + FOLLOW_FOR_S
    while time.monotonic() < until and not await request.is_disconnected():
        answer = await web.call(request, visit, "GET", f"/api/v1/telemetry/orders/{order_id}/courier")
        if answer.ok:
            found: dict[str, Any] = answer.json()
            out = True
            position = found["position"] or {}
            now = (found["status"], position.get("at"), found["destination"] is None)
            if now != shown:
                shown = now
                yield sse("courier", courier_panel(web, found, delivered=found["status"] != "out"))
            if found["status"] != "out":
                break
        elif answer.status == 404 and out:  # delivered: a customer follows a courier only while out
            yield sse("courier", courier_panel(web, None, delivered=True))
            break
        else:
            yield b": keepalive\n\n"
        await asyncio.sleep(COURIER_POLL_S if out else WAITING_POLL_S)
    yield sse("end", "end")


def router(web: Web) -> APIRouter:
    routes = APIRouter()

    @routes.get("/orders")
    async def history(request: Request) -> Response:
        visit = await web.visit(request, *READERS)
        params = {"limit": "20"}
        if cursor := request.query_params.get("cursor"):
            params["cursor"] = cursor[:200]
        if (status := request.query_params.get("status")) and status.isidentifier():
            params["status"] = status
        answer = await web.call(request, visit, "GET", "/api/v1/orders", params=params)
        page = answer.json() if answer.ok else None
        return web.render.page(
            request,
            visit,
            "orders.html",
            title="Your orders" if visit.has_role("customer") else "Orders",
            page=page,
            error=None if answer.ok else answer.problem(),
            status_filter=params.get("status", ""),
        )

    @routes.get("/orders/{order_id}")
    async def order_page(request: Request, order_id: str) -> Response:
        visit = await web.visit(request, *READERS)
        found = as_uuid(order_id)
        answer = await web.call(request, visit, "GET", f"/api/v1/orders/{found}") if found else None
        if answer is None or answer.status == 404:
            return web.error_page(request, visit, 404, "No such order", "We cannot find that order in your account.")
        if not answer.ok:
            return web.error_page(
                request, visit, 503, "Order unavailable", "We cannot show this order right now; try again shortly."
            )
        order = answer.json()
        return web.render.page(request, visit, "order.html", title=f"Order {short(order['id'])}", order=order)

    @routes.get("/orders/{order_id}/live")
    async def live(request: Request, order_id: str) -> Response:
        """The order's status panel as HTML, again at every change (for htmx's SSE extension)."""
        visit = await web.visit(request)
        found = as_uuid(order_id)
        if not visit.signed_in or found is None:
            return Response("sign in to follow this order", status_code=401)

        cancels = visit.has_role("customer", "admin")
        response = StreamingResponse(
            order_panels(web, request, found, visit.access, cancels=cancels),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        visit.apply(request, response)  # an access token refreshed on the way
        return response

    @routes.get("/orders/{order_id}/courier/live")
    async def courier_live(request: Request, order_id: str) -> Response:
        """The map of the courier bringing the order, as HTML, again whenever they are heard
        from (for htmx's SSE extension)."""
        visit = await web.visit(request)
        found = as_uuid(order_id)
        if not visit.signed_in or found is None:
            return Response("sign in to follow this order", status_code=401)
        response = StreamingResponse(
            courier_panels(web, request, visit, found),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        visit.apply(request, response)
        return response

    @routes.post("/orders/{order_id}/cancel")
    async def cancel(request: Request, order_id: str) -> Response:
        visit = await web.visit(request, "customer", "admin")
        found = as_uuid(order_id)
        if found is None:
            return web.error_page(request, visit, 404, "No such order", "We cannot find that order.")
        answer = await web.call(request, visit, "POST", f"/api/v1/orders/{found}/cancel")
        if answer.status == 202:
            flash = "Cancellation requested: we are stopping your order and refunding any payment."
        elif answer.status == 409:
            flash = Alert("Too late to cancel: the kitchen has already started on this order.")
        elif answer.status == 404:
            flash = Alert("We cannot find that order.")
        else:
            flash = Alert("Cancelling is unavailable right now; please try again in a moment.")
        return redirect(request, visit, f"/orders/{found}", flash=flash)

    @routes.get("/notifications")
    async def notifications(request: Request) -> Response:
        visit = await web.visit(request, "customer", "admin")
        answer = await web.call(request, visit, "GET", "/api/v1/notifications", params={"limit": "50"})
        return web.render.page(
            request,
            visit,
            "notifications.html",
            title="Notifications",
            items=answer.json()["items"] if answer.ok else None,
            error=None if answer.ok else answer.problem(),
        )

    return routes
