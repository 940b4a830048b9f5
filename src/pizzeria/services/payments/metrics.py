"""Business metrics of payments: how payments end (the success ratio is completed over
completed plus failed)."""

from __future__ import annotations

from prometheus_client import Counter

from pizzeria.contracts.payments import PaymentCompleted, PaymentFailed, PaymentRefunded, PaymentVoided
from pizzeria.messaging.message import Message

payments_settled = Counter(
    "pizzeria_payments_total", "Payments settled, by outcome (completed, failed, refunded, voided).", ["outcome"]
)
OUTCOMES: dict[type[Message], str] = {
    PaymentCompleted: "completed",
    PaymentFailed: "failed",
    PaymentRefunded: "refunded",
    PaymentVoided: "voided",
}


def settled(events: list[Message]) -> None:
    for event in events:
        outcome = OUTCOMES.get(type(event))
        if outcome is not None:
            payments_settled.labels(outcome).inc()
