"""Orders request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from pizzeria.kit.schemas import RequestBody
from pizzeria.services.orders.domain import MAX_LINES, MAX_QUANTITY, PaymentStatus, Status


class OrderLineBody(RequestBody):
    menu_item_id: UUID
    size: str = Field(min_length=1, max_length=20, examples=["medium"])
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class PaymentBody(RequestBody):
    method: Literal["card"] = "card"
    token: str = Field(
        pattern=r"^tok_[a-z0-9_]{1,60}$",
        examples=["tok_visa"],
        description="card token from the payment provider (`tok_visa`, `tok_declined`, ...)",
    )


class ContactBody(RequestBody):
    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(None, pattern=r"^\+?[0-9][0-9 ()-]{6,24}$")


class PlaceOrderBody(RequestBody):
    items: list[OrderLineBody] = Field(min_length=1, max_length=MAX_LINES)
    delivery_address: str = Field(min_length=1, max_length=500)
    payment: PaymentBody
    contact: ContactBody = Field(default_factory=ContactBody)


class OrderLineView(BaseModel):
    menu_item_id: UUID
    name: str
    size: str
    quantity: int
    unit_price: int


class HistoryEntry(BaseModel):
    status: Status
    at: datetime


class OrderView(BaseModel):
    id: UUID
    customer_id: str
    status: Status
    items: list[OrderLineView]
    total: int
    currency: str
    cancel_reason: str | None
    cancel_requested: bool = Field(False, description="the customer asked to cancel; not decided yet")
    payment_status: PaymentStatus
    delivery_address: str
    courier_name: str | None = None
    created_at: datetime
    updated_at: datetime
    history: list[HistoryEntry]


class OrderPage(BaseModel):
    items: list[OrderView]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
