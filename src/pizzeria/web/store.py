"""The storefront: the menu, the cart and checkout."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from pizzeria.web import cart, words
from pizzeria.web.render import Alert, redirect
from pizzeria.web.session import Visit
from pizzeria.web.site import Web, as_int, as_uuid, form

#: The sign between a quantity and a pizza ("2 x Margherita", with the true multiplication sign).
TIMES = "\u00d7"


def categories(menu: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in menu:
        grouped.setdefault(item.get("category") or "pizza", []).append(item)
    return list(grouped.items())


class Storefront:
    """The menu, the cart and checkout."""

    def __init__(self, web: Web) -> None:
        self.web = web

    def router(self) -> APIRouter:
        routes = APIRouter()
        routes.add_api_route("/", self.menu, methods=["GET"])
        routes.add_api_route("/cart/add", self.add_to_cart, methods=["POST"])
        routes.add_api_route("/cart", self.show_cart, methods=["GET"])
        routes.add_api_route("/cart/update", self.update_cart, methods=["POST"])
        routes.add_api_route("/checkout", self.checkout, methods=["POST"])
        return routes

    async def menu_of(self, request: Request, visit: Visit) -> tuple[list[dict[str, Any]] | None, str | None]:
        answer = await self.web.call(request, visit, "GET", "/api/v1/menu")
        if answer.ok:
            return answer.json()["items"], None
        return None, answer.problem()

    async def menu(self, request: Request) -> Response:
        visit = await self.web.visit(request)
        items, error = await self.menu_of(request, visit)
        return self.web.render.page(
            request, visit, "menu.html", title="Menu", categories=categories(items or []), menu=items, error=error
        )

    async def add_to_cart(self, request: Request) -> Response:
        visit = await self.web.visit(request)
        fields = await form(request)
        item = as_uuid(fields.get("menu_item_id", ""))
        size = fields.get("size", "")
        quantity = as_int(fields.get("quantity"), 1)
        items, _ = await self.menu_of(request, visit)
        found = next((i for i in items or [] if str(i["id"]) == item), None)
        if found is None or not any(s["size"] == size for s in found["sizes"]):
            return redirect(request, visit, "/", flash=Alert("That pizza or size is not on the menu any more."))
        lines = cart.add(cart.parse(request.cookies.get(cart.CART_COOKIE)), found["id"], size, quantity)
        response = redirect(
            request,
            visit,
            f"/#item-{found['id']}",
            flash=f"Added {max(1, min(cart.MAX_QUANTITY, quantity))} {TIMES} {found['name']} ({size}) to your cart.",
        )
        return keep_cart(response, lines)

    async def show_cart(self, request: Request) -> Response:
        visit = await self.web.visit(request)
        return await self.cart_page(request, visit, {}, {})

    async def cart_page(
        self, request: Request, visit: Visit, values: dict[str, str], errors: dict[str, str], status: int = 200
    ) -> Response:
        lines = cart.parse(request.cookies.get(cart.CART_COOKIE))
        items, error = await self.menu_of(request, visit) if lines else ([], None)
        priced = cart.price(lines, items or []) if items is not None else None
        contact = values.get("email") or (visit.principal.email if visit.principal else "") or ""
        return self.web.render.page(
            request,
            visit,
            "cart.html",
            status=status,
            title="Your cart",
            lines=lines,
            priced=priced,
            error=error,
            values={"email": contact, **{k: v for k, v in values.items() if k != "email"}},
            errors=errors,
            idempotency_key=values.get("idempotency_key") or str(uuid.uuid4()),
        )

    async def update_cart(self, request: Request) -> Response:
        visit = await self.web.visit(request)
        fields = await form(request)
        item, size = as_uuid(fields.get("menu_item_id", "")), fields.get("size", "")
        quantity = 0 if "remove" in fields else as_int(fields.get("quantity"), 1)
        lines = cart.parse(request.cookies.get(cart.CART_COOKIE))
        if item is not None:
            lines = cart.set_quantity(lines, item, size, max(0, quantity))
        return keep_cart(redirect(request, visit, "/cart", flash="Cart updated."), lines)

    async def checkout(self, request: Request) -> Response:
        visit = await self.web.visit(request, "customer", "staff", "courier", "admin")
        fields = await form(request)
        lines = cart.parse(request.cookies.get(cart.CART_COOKIE))
        errors: dict[str, str] = {}
        if not lines:
            errors["cart"] = "Your cart is empty: add a pizza from the menu first."
        if not fields.get("delivery_address", "").strip():
            errors["delivery_address"] = "Tell us where to bring your order."
        card = fields.get("card", "")
        if card not in words.CARD_TOKENS:
            errors["card"] = "Choose one of the test cards."
        if not visit.has_role("customer"):
            errors["cart"] = f"Only customer accounts can order; you are signed in as {visit.role}."
        if errors:
            return await self.cart_page(request, visit, fields, errors, status=422)
        contact = {k: v.strip() for k in ("email", "phone") if (v := fields.get(k, "")).strip()}
        body = {
            "items": [{"menu_item_id": ln.menu_item_id, "size": ln.size, "quantity": ln.quantity} for ln in lines],
            "delivery_address": fields["delivery_address"].strip(),
            "payment": {"token": card},
            "contact": contact,
        }
        key = fields.get("idempotency_key") or str(uuid.uuid4())
        answer = await self.web.call(
            request, visit, "POST", "/api/v1/orders", json=body, headers={"idempotency-key": key}
        )
        if answer.status == 202:
            order = answer.json()
            response = redirect(request, visit, f"/orders/{order['id']}", flash="Thank you! Your order is placed.")
            return keep_cart(response, [])
        found = {
            name.removeprefix("contact."): message
            for name, message in answer.field_errors().items()
            if name.startswith(("contact.", "delivery_address"))
        }
        if not found:
            found["cart"] = (
                "Ordering is unavailable right now; please try again in a moment."
                if answer.status >= 500
                else f"The order was not accepted: {answer.problem()}"
            )
        return await self.cart_page(request, visit, fields, found, status=answer.status if answer.status < 500 else 503)


def keep_cart(response: Response, lines: list[cart.Line]) -> Response:
    if lines:
        response.set_cookie(
            cart.CART_COOKIE, cart.dump(lines), max_age=30 * 86400, path="/", httponly=True, samesite="lax"
        )
    else:
        response.delete_cookie(cart.CART_COOKIE, path="/", httponly=True, samesite="lax")
    return response
