"""Kitchen: commands it executes for the order saga, and the facts it reports.

Stock moves between three buckets per ingredient — on hand, reserved (held for an order),
consumed (cooked) — and only restocking adds to their sum.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from pizzeria.messaging.message import Message

CONTEXT = "kitchen"


class KitchenLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    menu_item_id: UUID
    name: str
    size: str
    quantity: int


class IngredientAmount(BaseModel):
    model_config = ConfigDict(frozen=True)

    ingredient: str
    quantity: int


class Shortage(BaseModel):
    model_config = ConfigDict(frozen=True)

    ingredient: str
    needed: int
    available: int


# -- commands ------------------------------------------------------------------------------------


class ReserveIngredients(Message, context=CONTEXT, kind="command", key="order_id"):
    """Hold the ingredients these lines need, all or nothing."""

    order_id: UUID
    lines: list[KitchenLine]


class ReleaseIngredients(Message, context=CONTEXT, kind="command", key="order_id"):
    """Give back whatever is held for the order (compensation; a no-op if nothing is)."""

    order_id: UUID


class QueueTicket(Message, context=CONTEXT, kind="command", key="order_id"):
    """Put the paid order in the kitchen's queue."""

    order_id: UUID
    lines: list[KitchenLine]


class CancelTicket(Message, context=CONTEXT, kind="command", key="order_id"):
    """Take the order out of the queue if cooking has not started (compensation)."""

    order_id: UUID


# -- events --------------------------------------------------------------------------------------


class IngredientsReserved(Message, context=CONTEXT, key="order_id"):
    """Everything the order needs is held for it."""

    order_id: UUID
    reserved: list[IngredientAmount]


class IngredientsUnavailable(Message, context=CONTEXT, key="order_id"):
    """The order cannot be made: some ingredient is short. Nothing was held."""

    order_id: UUID
    missing: list[Shortage]


class IngredientsReleased(Message, context=CONTEXT, key="order_id"):
    """What was held for the order is back on hand (or nothing was held)."""

    order_id: UUID
    released: list[IngredientAmount]


class TicketQueued(Message, context=CONTEXT, key="order_id"):
    order_id: UUID
    ticket_id: UUID


class TicketStarted(Message, context=CONTEXT, key="order_id"):
    """Cooking began: the reserved ingredients are consumed; the order can no longer be cancelled."""

    order_id: UUID
    ticket_id: UUID
    at: datetime


class TicketBaking(Message, context=CONTEXT, key="order_id"):
    order_id: UUID
    ticket_id: UUID
    at: datetime


class TicketReady(Message, context=CONTEXT, key="order_id"):
    order_id: UUID
    ticket_id: UUID
    at: datetime


class TicketCancelled(Message, context=CONTEXT, key="order_id"):
    """The ticket left the queue before cooking (or there was none)."""

    order_id: UUID


class TicketCancelRefused(Message, context=CONTEXT, key="order_id"):
    """Too late: cooking had already started."""

    order_id: UUID
    status: str


class StockReplenished(Message, context=CONTEXT, key="ingredient"):
    """Staff restocked an ingredient."""

    ingredient: str
    added: int
    on_hand: int
