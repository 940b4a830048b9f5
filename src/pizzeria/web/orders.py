"""A customer's orders: the live order page (its timeline follows the order over server-sent
events), cancelling, the order history and the notifications."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from pizzeria.web.api import server_sent_events
from pizzeria.web.render import redirect, short
from pizzeria.web.site import Web, as_uuid

READERS = ("customer", "staff", "admin")


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
            flash = "Too late to cancel: the kitchen has already started on this order."
        elif answer.status == 404:
            flash = "We cannot find that order."
        else:
            flash = "Cancelling is unavailable right now; please try again in a moment."
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
