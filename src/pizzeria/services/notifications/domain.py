"""What to tell a customer, on which channels, in which words. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

CHANNELS = ("email", "sms", "push")


@dataclass(frozen=True)
class MessageTemplate:
    name: str
    channel: str
    subject: str
    body: str

    def render(self, values: dict[str, str]) -> tuple[str, str]:
        """`$placeholders` filled from `values`; unknown ones stay as written (never fails)."""
        return Template(self.subject).safe_substitute(values), Template(self.body).safe_substitute(values)


def _both(name: str, subject: str, body: str, sms: str) -> list[MessageTemplate]:
    return [MessageTemplate(name, "email", subject, body), MessageTemplate(name, "sms", subject, sms)]


#: A template for each moment a customer is told of, on each channel it goes to
#: (`contracts.notifications.TOLD`).
DEFAULT_TEMPLATES: list[MessageTemplate] = [
    MessageTemplate(
        "order_paid", "sms", "Order $order_ref is paid", "Pizzeria: order $order_ref paid, the kitchen is next."
    ),
    *_both(
        "order_out_for_delivery",
        "Order $order_ref is on its way",
        "A courier is bringing order $order_ref.",
        "Pizzeria: order $order_ref is on its way.",
    ),
    *_both(
        "courier_arriving",
        "Order $order_ref is almost there",
        "Your pizza is about $minutes away: the courier is nearly at your door.",
        "Pizzeria: your pizza is about $minutes away.",
    ),
    *_both(
        "order_delivered",
        "Order $order_ref delivered",
        "Enjoy your meal! Order $order_ref was delivered.",
        "Pizzeria: order $order_ref delivered. Enjoy!",
    ),
    *_both(
        "order_cancelled",
        "Order $order_ref was cancelled",
        "Order $order_ref was cancelled: $reason.",
        "Pizzeria: order $order_ref cancelled ($reason).",
    ),
    MessageTemplate(
        "payment_receipt",
        "email",
        "Receipt for order $order_ref",
        "We charged $total for order $order_ref. Charge reference: $charge_ref.",
    ),
    *_both(
        "payment_refunded",
        "Refund for order $order_ref",
        "We refunded $total for order $order_ref. It reaches your card in a few days.",
        "Pizzeria: $total refunded for order $order_ref.",
    ),
    *_both(
        "order_cancellation_refused",
        "Order $order_ref is already in the oven",
        "Sorry: the kitchen had already started on order $order_ref, so it could not be cancelled.",
        "Pizzeria: order $order_ref could not be cancelled, it is being made.",
    ),
]

REASONS = {
    "payment_failed": "the payment did not go through",
    "out_of_stock": "we ran out of an ingredient",
    "customer_cancelled": "you cancelled it",
    "timeout": "a step took too long",
}


def order_ref(order_id: str) -> str:
    """The short reference customers see (the end of the id, which is the random part)."""
    return "#" + order_id.replace("-", "")[-6:].upper()


def minutes_away(eta_s: int) -> str:
    """An estimate as a customer is told it: whole minutes, at least one ("1 minute", "4 minutes")."""
    minutes = max(1, round(eta_s / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def money(amount: int, currency: str) -> str:
    return f"{amount // 100}.{amount % 100:02d} {currency}"


def recipients(email: str | None, phone: str | None) -> dict[str, str]:
    """Channel → address, for the channels this customer can be reached on."""
    found = {}
    if email:
        found["email"] = email
    if phone:
        found["sms"] = phone
    return found
