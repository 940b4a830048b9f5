"""Orders HTTP routes."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Header, Query, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import IntegrityError

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.auth import Customer, CustomerOrAdmin, CustomerOrStaff, owner_scope
from pizzeria.kit.errors import BadRequest, NotFound
from pizzeria.services.orders import handlers, projection, repository
from pizzeria.services.orders.deps import OrdersDep, OrdersParts
from pizzeria.services.orders.domain import TERMINAL, Order, RequestedLine, Status
from pizzeria.services.orders.schemas import (
    HistoryEntry,
    OrderLineView,
    OrderPage,
    OrderView,
    PlaceOrderBody,
)

router = APIRouter(prefix="/api/v1/orders", tags=["orders"])


class MissingIdempotencyKey(BadRequest):
    type_slug = "idempotency-key-missing"
    title = "Idempotency-Key header required"


class BadCursor(BadRequest):
    type_slug = "bad-cursor"
    title = "Bad cursor"


def view(order: Order) -> OrderView:
    if order.partial:
        raise RuntimeError(f"order {order.id} was loaded without its lines and history: it is not shown")
    return OrderView(
        id=order.id,
        customer_id=order.customer_id,
        status=order.status,
        items=[
            OrderLineView(
                menu_item_id=ln.menu_item_id, name=ln.name, size=ln.size, quantity=ln.quantity, unit_price=ln.unit_price
            )
            for ln in order.lines
        ],
        total=order.total,
        currency=order.currency,
        cancel_reason=order.cancel_reason,
        payment_status=order.payment_status,
        delivery_address=order.delivery_address,
        cancel_requested=order.cancel_requested,
        created_at=order.created_at,
        updated_at=order.updated_at or order.created_at,
        history=[HistoryEntry(status=s, at=at) for s, at in order.history],
    )


def view_from_model(row: Any) -> OrderView:
    """An order as the read model has it."""
    return OrderView(
        id=row.id,
        customer_id=row.customer_id,
        status=Status(row.status),
        items=[OrderLineView.model_validate(i) for i in row.items],
        total=row.total,
        currency=row.currency,
        cancel_reason=row.cancel_reason,
        cancel_requested=row.cancel_requested,
        payment_status=row.payment_status,
        delivery_address=row.delivery_address,
        courier_name=row.courier_name,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=[HistoryEntry(status=h["status"], at=h["at"]) for h in row.history],
    )


def request_hash(body: PlaceOrderBody) -> str:
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


@router.post(
    "",
    response_model=OrderView,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Place an order (idempotent per Idempotency-Key)",
    responses={
        400: {"description": "Idempotency-Key missing"},
        409: {"description": "the customer has as many unpaid orders as allowed (ORDER_MAX_UNPAID)"},
        422: {"description": "invalid order (pizzas per line or per order over the limits), or key reused"},
    },
)
async def place_order(
    body: PlaceOrderBody,
    parts: OrdersDep,
    response: Response,
    customer: Customer,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> OrderView:
    if not idempotency_key or not idempotency_key.strip():
        raise MissingIdempotencyKey("send an Idempotency-Key header (a fresh UUID per order) so retries are safe")
    cmd = handlers.PlaceOrder(
        customer_id=customer.user_id,
        idempotency_key=idempotency_key.strip(),
        request_hash=request_hash(body),
        lines=[RequestedLine(i.menu_item_id, i.size, i.quantity) for i in body.items],
        payment_token=body.payment.token,
        delivery_address=body.delivery_address,
        email=body.contact.email,
        phone=body.contact.phone,
    )
    try:
        order, replayed = await parts.placer.place(cmd)
    except IntegrityError:
        # A concurrent request with the same key won the race: answer with its order.
        order, replayed = await parts.placer.place(cmd)
    response.headers["Location"] = f"/api/v1/orders/{order.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return view(order)


@router.get("/{order_id}", response_model=OrderView, summary="One order with its status history")
async def get_order(order_id: UUID, caller: CustomerOrStaff, runtime: RuntimeDep, parts: OrdersDep) -> Response:
    found = await _order_json(order_id, owner_scope(caller), runtime, parts)
    return Response(content=found, media_type="application/json")


async def _order_json(order_id: UUID, owner: str | None, runtime: ServiceRuntime, parts: OrdersParts) -> bytes:
    """The order as JSON: from the cache, else the read model (then cached), else (just placed)
    the order itself; 404 when it does not exist or is not the caller's to see."""
    async with runtime.db.read() as conn:
        generation = await parts.projections.generation(conn)
        key = projection.view_key(generation, order_id)
        if (found := await parts.cache.get(key)) is None:
            row = await projection.view_of(conn, generation, order_id)
            if row is not None:
                found = orjson.dumps(view_from_model(row).model_dump(mode="json"))
                await parts.cache.fill(key, found)
        if found is None:
            # Just placed, not in the read model yet: answer from the order itself (read your writes).
            order = await repository.get(conn, order_id)
            if order is not None:
                found = orjson.dumps(view(order).model_dump(mode="json"))
    if found is None or owner not in (None, orjson.loads(found)["customer_id"]):
        raise NotFound(f"order {order_id} does not exist")
    return found


#: How long a stream waits for word of a change before looking itself (changes made by another
#: process), and how often it proves it is alive to proxies that close quiet connections.
STREAM_RECHECK_S = 2.0
STREAM_KEEPALIVE_S = 15.0


@router.get(
    "/{order_id}/stream",
    summary="The order's status, live (server-sent events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`event: order` with the order JSON at once and at every change; "
            "`event: end` once it is delivered or cancelled",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def stream_order(
    order_id: UUID,
    caller: CustomerOrStaff,
    runtime: RuntimeDep,
    parts: OrdersDep,
) -> StreamingResponse:
    owner = owner_scope(caller)
    first = await _order_json(order_id, owner, runtime, parts)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        current: bytes | None = first
        last: bytes | None = None
        quiet = 0.0
        yield b"retry: 2000\n\n"
        while True:
            if current != last and current is not None:
                order = orjson.loads(current)
                yield b"event: order\nid: %d\ndata: %s\n\n" % (len(order["history"]), current)
                last, quiet = current, 0.0
                if order["status"] in TERMINAL:
                    yield b"event: end\ndata: {}\n\n"
                    return
            if not await parts.watch.wait(order_id, STREAM_RECHECK_S):
                quiet += STREAM_RECHECK_S
                if quiet >= STREAM_KEEPALIVE_S:
                    yield b": keepalive\n\n"
                    quiet = 0.0
            current = await _order_json(order_id, owner, runtime, parts)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.post(
    "/{order_id}/cancel",
    response_model=OrderView,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel an order (until the kitchen starts cooking it)",
    responses={409: {"description": "too late: the kitchen has started"}},
)
async def cancel_order(order_id: UUID, caller: CustomerOrAdmin, runtime: RuntimeDep, parts: OrdersDep) -> OrderView:
    order = await handlers.cancel_order(order_id, owner_scope(caller), runtime.uow(), parts.saga)
    return view(order)


def _decode_cursor(cursor: str) -> UUID:
    try:
        return UUID(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("the cursor is not one this API returned") from None


def _encode_cursor(order_id: UUID) -> str:
    return base64.urlsafe_b64encode(str(order_id).encode()).decode().rstrip("=")


@router.get("", response_model=OrderPage, summary="Orders, newest first")
async def list_orders(
    caller: CustomerOrStaff,
    runtime: RuntimeDep,
    parts: OrdersDep,
    status_filter: Annotated[Status | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    customer_id: Annotated[str | None, Query(max_length=64, description="staff and admins: one customer's")] = None,
) -> OrderPage:
    customer_id = owner_scope(caller) or customer_id
    before = _decode_cursor(cursor) if cursor else None
    async with runtime.db.read() as conn:
        generation = await parts.projections.generation(conn)
        found = await projection.views(
            conn, generation, customer_id=customer_id, status=status_filter, limit=limit + 1, before=before
        )
    page, more = found[:limit], len(found) > limit
    return OrderPage(
        items=[view_from_model(o) for o in page], next_cursor=_encode_cursor(page[-1].id) if more else None
    )
