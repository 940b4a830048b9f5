"""Orders as customers place them, each with a story (its card, its contacts, whether its
customer asked to cancel it), and what each story allows the order to end as and to be told."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pizzeria.contracts.notifications import told

#: The statuses an order ends in.
TERMINAL = frozenset({"delivered", "cancelled"})
#: Notifications an order may or may not be sent, at most once per channel: "your pizza is
#: about N minutes away" goes out when its courier's tracker reports them near the address
#: (never without trackers, and not when the courier reached it between two readings).
AT_MOST_ONCE = frozenset({"courier_arriving"})


@dataclass
class Placed:
    key: str
    card: str
    email: str | None
    phone: str | None
    order: dict[str, Any]
    cancel: int | None = None  # HTTP status of the customer's cancel request, if they made one
    #: The cancel was answered 409 after an attempt whose fate is unknown (its connection died
    #: with the process that had it): it may have been accepted before.
    cancel_uncertain: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.order["id"])

    @property
    def channels(self) -> set[str]:
        return {c for c, v in (("email", self.email), ("sms", self.phone)) if v}

    @property
    def cancel_may_have_been_accepted(self) -> bool:
        return self.cancel == 202 or self.cancel_uncertain


def order_body(
    menu: list[dict[str, Any]], card: str, email: str | None, phone: str | None, rng: random.Random
) -> dict[str, Any]:
    """An order of one to three lines of the menu, paid with `card`."""
    items = []
    for item in rng.sample(menu, k=rng.randint(1, min(3, len(menu)))):
        items.append(
            {"menu_item_id": item["id"], "size": rng.choice(item["sizes"])["size"], "quantity": rng.randint(1, 3)}
        )
    contact = {k: v for k, v in (("email", email), ("phone", phone)) if v}
    return {
        "items": items,
        "delivery_address": f"{rng.randint(1, 99)} Test Street",
        "payment": {"token": card},
        "contact": contact,
    }


def allowed_endings(p: Placed) -> set[tuple[str, str | None]]:
    """(final status, cancel reason) pairs this order's story allows. Ingredients are reserved
    before the charge, so any order may run out of stock first."""
    endings: set[tuple[str, str | None]] = {("cancelled", "out_of_stock")}
    if p.card == "tok_declined":
        endings.add(("cancelled", "payment_failed"))
    elif p.card == "tok_timeout":
        endings.add(("cancelled", "timeout"))
    else:
        endings.add(("delivered", None))
        if p.cancel_may_have_been_accepted:  # cancelled, unless the kitchen started first (refused)
            endings.add(("cancelled", "customer_cancelled"))
    if p.cancel_may_have_been_accepted and p.card != "tok_visa":
        endings.add(("cancelled", "customer_cancelled"))  # cancelled before its payment failed
    return endings


def expected_notifications(p: Placed, order: dict[str, Any]) -> list[Counter[tuple[str, str]]]:
    """One notification for each status the order went through that a customer is told of
    (`TOLD`), on each of the customer's channels it goes to, plus the receipt, the refund and a
    refused cancellation where they happened (the ways it may have gone: a cancel whose fate is
    unknown may or may not have been refused)."""
    templates = [f"order_{h['status'].replace('pending', 'placed')}" for h in order["history"]]
    if order["payment_status"] in ("completed", "refunded"):
        templates.append("payment_receipt")
    if order["payment_status"] == "refunded":
        templates.append("payment_refunded")
    want = Counter((t, c) for t in templates for c in told(t, p.channels))
    refused = want + Counter(("order_cancellation_refused", c) for c in told("order_cancellation_refused", p.channels))
    if p.cancel == 202 and order["status"] == "delivered":
        return [refused]
    if p.cancel_uncertain and order["status"] == "delivered":
        return [want, refused]
    return [want]
