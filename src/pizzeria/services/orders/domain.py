"""The order, its state machine and its pricing. No I/O: every change is a method of `Order`
that decides, changes the order and records the event it is (`Order.events`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from pizzeria.contracts.orders import (
    TRANSITIONS,
    Contact,
    OrderCancellationRefused,
    OrderCancellationRequested,
    OrderLine,
    OrderPlaced,
    OrderStatus,
    OrderStatusChanged,
    PaymentMethod,
)
from pizzeria.kit.errors import Conflict, ValidationFailed
from pizzeria.messaging.message import Message

Status = OrderStatus


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDED = "refunded"


TERMINAL = frozenset({Status.DELIVERED, Status.CANCELLED})
CANCELLABLE = frozenset({Status.PENDING, Status.PAID})
PAYMENT_NEXT: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset({PaymentStatus.PROCESSING, PaymentStatus.COMPLETED, PaymentStatus.FAILED}),
    PaymentStatus.PROCESSING: frozenset({PaymentStatus.COMPLETED, PaymentStatus.FAILED}),
    PaymentStatus.COMPLETED: frozenset({PaymentStatus.REFUNDED}),
    PaymentStatus.FAILED: frozenset(),
    PaymentStatus.REFUNDED: frozenset(),
}
#: What no order can exceed, whatever the settings say (and the API's schema tells).
MAX_LINES = 30
MAX_QUANTITY = 50


@dataclass(frozen=True)
class OrderLimits:
    """How big an order may be, and how many of a customer's may wait for payment at once
    (`OrdersSettings`): no one customer can reserve what the kitchen has for everyone. The
    defaults are the ceilings above, and no limit on unpaid orders."""

    max_quantity: int = MAX_QUANTITY  # of one line
    max_pizzas: int = MAX_LINES * MAX_QUANTITY  # of all lines together
    max_unpaid: int | None = None


#: No limits but the ceilings.
CEILINGS = OrderLimits()


@dataclass(frozen=True)
class MenuEntry:
    """Orders' copy of a menu item: what it needs to price a line."""

    id: UUID
    name: str
    currency: str
    prices: Mapping[str, int]
    available: bool
    version: int


@dataclass(frozen=True)
class RequestedLine:
    menu_item_id: UUID
    size: str
    quantity: int


@dataclass(frozen=True)
class Line:
    menu_item_id: UUID
    name: str
    size: str
    quantity: int
    unit_price: int

    @property
    def total(self) -> int:
        return self.unit_price * self.quantity


def price_lines(
    requested: Sequence[RequestedLine], menu: Mapping[UUID, MenuEntry], limits: OrderLimits = CEILINGS
) -> tuple[list[Line], str]:
    """Price each line from the menu, within the limits; every problem is reported at once, by
    line."""
    errors: list[dict[str, str]] = []
    if not requested:
        errors.append({"field": "items", "message": "an order needs at least one item"})
    if len(requested) > MAX_LINES:
        errors.append({"field": "items", "message": f"at most {MAX_LINES} lines per order"})
    pizzas = sum(max(0, r.quantity) for r in requested)
    if pizzas > limits.max_pizzas:
        errors.append({"field": "items", "message": f"at most {limits.max_pizzas} pizzas per order, not {pizzas}"})
    lines: list[Line] = []
    currencies: set[str] = set()
    for i, req in enumerate(requested):
        entry = menu.get(req.menu_item_id)
        where = f"items.{i}"
        if entry is None:
            errors.append({"field": f"{where}.menu_item_id", "message": f"no menu item {req.menu_item_id}"})
            continue
        if not entry.available:
            errors.append({"field": f"{where}.menu_item_id", "message": f"{entry.name} is not available"})
            continue
        price = entry.prices.get(req.size)
        if price is None:
            sizes = ", ".join(sorted(entry.prices))
            errors.append({"field": f"{where}.size", "message": f"{entry.name} comes in {sizes}, not {req.size!r}"})
            continue
        if not 1 <= req.quantity <= limits.max_quantity:
            errors.append({"field": f"{where}.quantity", "message": f"quantity must be 1..{limits.max_quantity}"})
            continue
        currencies.add(entry.currency)
        lines.append(Line(entry.id, entry.name, req.size, req.quantity, price))
    if len(currencies) > 1:
        errors.append({"field": "items", "message": "items are priced in different currencies"})
    if errors:
        raise ValidationFailed("; ".join(e["message"] for e in errors), errors=errors)
    return lines, currencies.pop()


@dataclass
class Order:
    """An order. Its status only moves along `TRANSITIONS`; every move is kept in `history`."""

    id: UUID
    customer_id: str
    lines: list[Line]
    total: int  # of the lines, priced when it was placed
    currency: str
    payment_token: str
    delivery_address: str
    email: str | None
    phone: str | None
    created_at: datetime
    status: Status = Status.PENDING
    payment_status: PaymentStatus = PaymentStatus.PENDING
    payment_id: UUID | None = None
    cancel_reason: str | None = None
    updated_at: datetime | None = None
    history: list[tuple[Status, datetime]] = field(default_factory=list)
    cancel_requested: bool = False
    version: int = 1  # bumped by every write (an order is locked from its load to the commit)
    #: Events of the changes made since it was loaded; the unit of work sends them on commit.
    events: list[Message] = field(default_factory=list, compare=False, repr=False)
    #: How many `history` entries are stored (the rest are new: the repository appends them).
    stored_history: int = field(default=0, compare=False, repr=False)
    #: Loaded to be moved on, without its lines and the history stored before (`history` then
    #: holds only what happened since): what the saga's replies and the kitchen's and couriers'
    #: facts need, never what is shown.
    partial: bool = field(default=False, compare=False, repr=False)
    #: The number the next stored history entry takes (the last stored one's + 1).
    next_history_seq: int = field(default=0, compare=False, repr=False)

    @classmethod
    def place(
        cls,
        *,
        id: UUID,
        customer_id: str,
        lines: list[Line],
        currency: str,
        payment_token: str,
        delivery_address: str,
        email: str | None,
        phone: str | None,
        at: datetime,
    ) -> Order:
        if not delivery_address.strip():
            raise ValidationFailed(
                "a delivery address is required", errors=[{"field": "delivery_address", "message": "must not be blank"}]
            )
        order = cls(
            id=id,
            customer_id=customer_id,
            lines=lines,
            total=sum(line.total for line in lines),
            currency=currency,
            payment_token=payment_token,
            delivery_address=delivery_address.strip(),
            email=email,
            phone=phone,
            created_at=at,
            updated_at=at,
            history=[(Status.PENDING, at)],
        )
        order.events.append(
            OrderPlaced(
                order_id=order.id,
                customer_id=customer_id,
                items=[
                    OrderLine(
                        menu_item_id=ln.menu_item_id,
                        name=ln.name,
                        size=ln.size,
                        quantity=ln.quantity,
                        unit_price=ln.unit_price,
                    )
                    for ln in lines
                ],
                total=order.total,
                currency=currency,
                payment_method=PaymentMethod(token=payment_token),
                delivery_address=order.delivery_address,
                contact=Contact(email=email, phone=phone),
                placed_at=at,
            )
        )
        return order

    def can_move_to(self, status: Status) -> bool:
        return status in TRANSITIONS[self.status]

    def move_to(self, status: Status, *, at: datetime, reason: str | None = None) -> OrderStatusChanged:
        """Move along the state machine; a cancelled order has no cancellation pending any more
        (any other move leaves a pending one as it is, while the saga compensates)."""
        if not self.can_move_to(status):
            raise Conflict(f"order {self.id} is {self.status}; it cannot become {status}")
        change = OrderStatusChanged(
            order_id=self.id,
            customer_id=self.customer_id,
            status=status,
            previous_status=self.status,
            reason=reason,
            at=at,
        )
        self.status = status
        self.updated_at = at
        self.history.append((status, at))
        if status is Status.CANCELLED:
            self.cancel_reason = reason
            self.cancel_requested = False
        self.events.append(change)
        return change

    def request_cancel(self, *, at: datetime) -> bool:
        """The customer wants out: possible until the kitchen starts cooking. False if it was
        asked already (asking twice changes nothing)."""
        if self.cancel_requested:
            return False
        if self.status not in CANCELLABLE:
            raise Conflict(f"order {self.id} is {self.status}; it can no longer be cancelled")
        self.cancel_requested = True
        self.updated_at = at
        self.events.append(OrderCancellationRequested(order_id=self.id, customer_id=self.customer_id, at=at))
        return True

    def cancel_refused(self, *, at: datetime) -> None:
        """Too late: the kitchen had started; the order goes on."""
        self.cancel_requested = False
        self.updated_at = at
        self.events.append(OrderCancellationRefused(order_id=self.id, customer_id=self.customer_id, at=at))

    def record_payment(self, status: PaymentStatus, payment_id: UUID | None, *, at: datetime) -> bool:
        """Follow the payment's own status (it does not move the order: the saga does)."""
        if status not in PAYMENT_NEXT[self.payment_status]:
            return False  # a fact arriving late, or again
        self.payment_status = status
        self.payment_id = payment_id or self.payment_id
        self.updated_at = at
        return True
