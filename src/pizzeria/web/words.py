"""What the system's states mean, in the words a customer, a cook or an operator reads."""

from __future__ import annotations

from typing import Any

#: The way an order goes when all is well, and what each step is called.
ORDER_STEPS: tuple[tuple[str, str], ...] = (
    ("pending", "Order placed"),
    ("paid", "Paid"),
    ("preparing", "Preparing"),
    ("baking", "In the oven"),
    ("ready", "Ready"),
    ("out_for_delivery", "Out for delivery"),
    ("delivered", "Delivered"),
)
STEP_LABELS = dict(ORDER_STEPS) | {"cancelled": "Cancelled"}

#: What is happening while an order is in each status.
ORDER_HEADLINES = {
    "pending": "We have your order and are checking the stock and your payment.",
    "paid": "Payment accepted. The kitchen will start on it shortly.",
    "preparing": "The kitchen is preparing your pizzas.",
    "baking": "Your pizzas are in the oven.",
    "ready": "Your order is ready and waiting for a courier.",
    "out_for_delivery": "A courier is on the way to you.",
    "delivered": "Delivered. Enjoy your meal!",
    "cancelled": "This order was cancelled.",
}

CANCEL_REASONS = {
    "out_of_stock": "We ran out of an ingredient this order needs, so we could not make it.",
    "payment_failed": "Your card was declined, so the order could not go ahead.",
    "customer_cancelled": "You cancelled this order.",
    "timeout": "A step of the order took too long to answer (for example the card payment), so it was stopped.",
}

PAYMENT_WORDS = {
    "pending": "Payment not started yet",
    "processing": "Payment in progress",
    "completed": "Paid",
    "failed": "Not charged",
    "refunded": "Refunded",
}

TICKET_COLUMNS: tuple[tuple[str, str], ...] = (
    ("queued", "Queued"),
    ("preparing", "Preparing"),
    ("baking", "In the oven"),
    ("ready", "Ready for pick-up"),
)
TICKET_ACTIONS = {"queued": "Start preparing", "preparing": "Put in the oven", "baking": "Mark ready"}

DELIVERY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("waiting", "Waiting for a courier"),
    ("assigned", "Assigned"),
    ("out_for_delivery", "On the road"),
)
DELIVERY_ACTIONS = {"assigned": "Picked up, leaving now", "out_for_delivery": "Mark delivered"}

CARDS: tuple[tuple[str, str, str], ...] = (
    ("tok_visa", "Test card that pays", "Always approved."),
    ("tok_declined", "Test card that is declined", "Always declined: the order is cancelled, nothing is charged."),
    (
        "tok_timeout",
        "Test card that never answers",
        "The provider never replies: the order times out and is cancelled.",
    ),
    (
        "tok_mastercard",
        "Ordinary test card",
        "Declined only as often as the provider's decline rate says (the fault lab sets it; normally never).",
    ),
)
CARD_TOKENS = frozenset(token for token, _, _ in CARDS)

CANCELLABLE = frozenset({"pending", "paid"})


def cancel_reason(order: dict[str, Any]) -> str:
    """Why an order was cancelled, and what became of the money, in words."""
    reason = order.get("cancel_reason") or ""
    said = CANCEL_REASONS.get(reason, f"It was cancelled ({reason.replace('_', ' ')})." if reason else "")
    payment = order.get("payment_status")
    if payment == "refunded":
        said += " Your payment has been refunded."
    elif payment in ("failed", "pending") or reason in ("payment_failed", "out_of_stock"):
        said += " Nothing was charged."
    return said.strip()


def can_cancel(order: dict[str, Any]) -> bool:
    return order.get("status") in CANCELLABLE and not order.get("cancel_requested")


def timeline(order: dict[str, Any]) -> list[dict[str, Any]]:
    """The order's steps: each one done (with when), current, or still to come."""
    reached = {h["status"]: h["at"] for h in order.get("history", [])}
    status = order.get("status")
    steps = []
    for name, label in ORDER_STEPS:
        if status == name:
            state = "done" if name == "delivered" else "current"
        elif name in reached:
            state = "done"
        else:
            state = "cancelled-before" if status == "cancelled" else "todo"
        steps.append({"status": name, "label": label, "state": state, "at": reached.get(name)})
    if status == "cancelled":
        last = max((i for i, s in enumerate(steps) if s["state"] == "done"), default=-1)
        steps = steps[: last + 1]
        steps.append(
            {"status": "cancelled", "label": "Cancelled", "state": "cancelled", "at": reached.get("cancelled")}
        )
    return steps
