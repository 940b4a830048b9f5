"""The invariants the fault lab shows and `pizzeria demo` checks, counted from the services'
answers: accepted = finished + under way; an order is lost only when its saga is under way a
minute past its deadline; stock is conserved when on hand + reserved + consumed = received."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pizzeria.services.gateway.faults import charged_twice
from pizzeria.services.gateway.invariants import LOST_AFTER_S, order_counts, stock_balance

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def saga(saga_id: str, deadline: datetime | None) -> dict[str, object]:
    return {"id": saga_id, "deadline_at": deadline.isoformat() if deadline else None}


def test_an_order_is_lost_only_a_minute_past_its_deadline() -> None:
    unfinished = [
        saga("waiting", NOW + timedelta(seconds=20)),
        saga("just-late", NOW - timedelta(seconds=LOST_AFTER_S - 1)),
        saga("lost", NOW - timedelta(seconds=LOST_AFTER_S + 1)),
        saga("no-deadline", None),
    ]
    counts = order_counts(unfinished, {"completed": 5, "compensated": 2, "running": 3, "compensating": 1}, NOW)
    assert (counts.accepted, counts.finished, counts.under_way) == (11, 7, 4)
    assert (counts.lost, counts.lost_orders) == (1, ["lost"])


def test_a_naive_deadline_is_taken_as_utc() -> None:
    late = (NOW - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert order_counts([{"id": "a", "deadline_at": late}], {"running": 1}, NOW).lost == 1


def test_stock_is_conserved_when_every_unit_received_is_somewhere() -> None:
    items = [
        {"ingredient": "dough", "on_hand": 5, "reserved": 1, "consumed": 4, "received": 10},
        {"ingredient": "basil", "on_hand": 5, "reserved": 2, "consumed": 4, "received": 10},
    ]
    balance = stock_balance(items)
    assert (balance.conserved, balance.unbalanced, balance.reserved) == (False, ["basil"], 3)
    assert stock_balance(items[:1]).conserved


def test_an_order_counts_as_charged_twice_for_two_successful_charges_only() -> None:
    charges = [
        {"order_id": "o-1", "status": "succeeded"},
        {"order_id": "o-2", "status": "succeeded"},
        {"order_id": "o-2", "status": "declined"},
        {"order_id": "o-3", "status": "succeeded"},
        {"order_id": "o-3", "status": "succeeded"},
    ]
    assert charged_twice(charges) == 1
