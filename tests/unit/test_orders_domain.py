"""Orders domain: pricing rules, the order state machine and the payment replies."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from pizzeria.contracts.orders import TRANSITIONS, is_valid_path
from pizzeria.kit.errors import Conflict, ValidationFailed
from pizzeria.services.orders.domain import (
    MAX_LINES,
    MAX_QUANTITY,
    TERMINAL,
    Line,
    MenuEntry,
    Order,
    OrderLimits,
    PaymentStatus,
    RequestedLine,
    Status,
    price_lines,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MARGHERITA = MenuEntry(uuid4(), "Margherita", "EUR", {"small": 800, "large": 1200}, True, 1)
DIAVOLA = MenuEntry(uuid4(), "Diavola", "EUR", {"medium": 1100}, True, 3)
SOLD_OUT = MenuEntry(uuid4(), "Tartufo", "EUR", {"medium": 2000}, False, 2)
IN_DOLLARS = MenuEntry(uuid4(), "New York", "USD", {"large": 1500}, True, 1)
MENU = {e.id: e for e in (MARGHERITA, DIAVOLA, SOLD_OUT, IN_DOLLARS)}

ILLEGAL = [(a, b) for a, b in itertools.product(Status, Status) if b not in TRANSITIONS[a]]
LEGAL = [(a, b) for a in Status for b in TRANSITIONS[a]]
HAPPY_PATH = [
    Status.PAID,
    Status.PREPARING,
    Status.BAKING,
    Status.READY,
    Status.OUT_FOR_DELIVERY,
    Status.DELIVERED,
]


def field_errors(exc: pytest.ExceptionInfo[ValidationFailed]) -> list[str]:
    return [e["field"] for e in exc.value.errors or []]


def new_order(status: Status = Status.PENDING) -> Order:
    order = Order.place(
        id=uuid4(),
        customer_id="cust-1",
        lines=[Line(MARGHERITA.id, "Margherita", "large", 2, 1200)],
        currency="EUR",
        payment_token="tok_visa",
        delivery_address="  1 Main St ",
        email="a@b.co",
        phone=None,
        at=T0,
    )
    order.status = status
    return order


# -- pricing ---------------------------------------------------------------------------------


def test_price_lines_prices_each_line_from_the_menu() -> None:
    lines, currency = price_lines(
        [RequestedLine(MARGHERITA.id, "large", 2), RequestedLine(DIAVOLA.id, "medium", 1)], MENU
    )
    assert currency == "EUR"
    assert lines == [
        Line(MARGHERITA.id, "Margherita", "large", 2, 1200),
        Line(DIAVOLA.id, "Diavola", "medium", 1, 1100),
    ]
    assert [line.total for line in lines] == [2400, 1100]


def test_unknown_item_is_reported_on_its_line() -> None:
    missing = uuid4()
    with pytest.raises(ValidationFailed) as exc:
        price_lines([RequestedLine(MARGHERITA.id, "small", 1), RequestedLine(missing, "small", 1)], MENU)
    assert exc.value.errors == [{"field": "items.1.menu_item_id", "message": f"no menu item {missing}"}]
    assert exc.value.status == 422


def test_unavailable_item_is_refused() -> None:
    with pytest.raises(ValidationFailed) as exc:
        price_lines([RequestedLine(SOLD_OUT.id, "medium", 1)], MENU)
    assert field_errors(exc) == ["items.0.menu_item_id"]
    assert "Tartufo is not available" in exc.value.detail


def test_wrong_size_names_the_sizes_there_are() -> None:
    with pytest.raises(ValidationFailed) as exc:
        price_lines([RequestedLine(MARGHERITA.id, "medium", 1)], MENU)
    assert field_errors(exc) == ["items.0.size"]
    assert "large, small" in exc.value.detail
    assert "'medium'" in exc.value.detail


@pytest.mark.parametrize("quantity", [0, -1, MAX_QUANTITY + 1])
def test_quantity_out_of_bounds_is_refused(quantity: int) -> None:
    with pytest.raises(ValidationFailed) as exc:
        price_lines([RequestedLine(MARGHERITA.id, "small", quantity)], MENU)
    assert field_errors(exc) == ["items.0.quantity"]


@pytest.mark.parametrize("quantity", [1, MAX_QUANTITY])
def test_quantity_bounds_are_inclusive(quantity: int) -> None:
    lines, _ = price_lines([RequestedLine(MARGHERITA.id, "small", quantity)], MENU)
    assert lines[0].quantity == quantity
    assert lines[0].total == 800 * quantity


LIMITS = OrderLimits(max_quantity=20, max_pizzas=30)


@pytest.mark.parametrize(
    ("quantities", "wrong"),
    [
        ([50] * 6, ["items", *(f"items.{n}.quantity" for n in range(6))]),  # 300 pizzas
        ([21], ["items.0.quantity"]),
        ([20, 11], ["items"]),
        ([10, 10, 10, 1], ["items"]),
    ],
)
def test_an_order_over_the_size_limits_is_refused(quantities: list[int], wrong: list[str]) -> None:
    with pytest.raises(ValidationFailed) as exc:
        price_lines([RequestedLine(MARGHERITA.id, "small", q) for q in quantities], MENU, LIMITS)
    assert field_errors(exc) == wrong
    assert ("at most 30 pizzas per order" in exc.value.detail) == ("items" in wrong)


@pytest.mark.parametrize("quantities", [[20], [20, 10], [1] * 30])
def test_the_size_limits_are_inclusive(quantities: list[int]) -> None:
    lines, _ = price_lines([RequestedLine(MARGHERITA.id, "small", q) for q in quantities], MENU, LIMITS)
    assert [ln.quantity for ln in lines] == quantities


def test_mixed_currencies_are_refused() -> None:
    with pytest.raises(ValidationFailed) as exc:
        price_lines(
            [RequestedLine(MARGHERITA.id, "small", 1), RequestedLine(IN_DOLLARS.id, "large", 1)],
            MENU,
        )
    assert field_errors(exc) == ["items"]
    assert "different currencies" in exc.value.detail


def test_an_empty_order_is_refused() -> None:
    with pytest.raises(ValidationFailed) as exc:
        price_lines([], MENU)
    assert field_errors(exc) == ["items"]


def test_too_many_lines_are_refused() -> None:
    with pytest.raises(ValidationFailed) as exc:
        price_lines([RequestedLine(MARGHERITA.id, "small", 1)] * (MAX_LINES + 1), MENU)
    assert field_errors(exc) == ["items"]
    assert f"at most {MAX_LINES}" in exc.value.detail


def test_every_problem_is_reported_at_once_with_its_field_path() -> None:
    requested = [
        RequestedLine(MARGHERITA.id, "small", 1),  # fine
        RequestedLine(uuid4(), "small", 1),
        RequestedLine(SOLD_OUT.id, "medium", 1),
        RequestedLine(DIAVOLA.id, "small", 1),
        RequestedLine(MARGHERITA.id, "large", MAX_QUANTITY + 1),
    ]
    with pytest.raises(ValidationFailed) as exc:
        price_lines(requested, MENU)
    assert field_errors(exc) == [
        "items.1.menu_item_id",
        "items.2.menu_item_id",
        "items.3.size",
        "items.4.quantity",
    ]
    assert exc.value.detail == "; ".join(e["message"] for e in exc.value.errors or [])


# -- placing and moving ----------------------------------------------------------------------


def test_place_starts_pending_with_history_and_a_trimmed_address() -> None:
    order = new_order()
    assert order.status is Status.PENDING
    assert order.payment_status is PaymentStatus.PENDING
    assert order.history == [(Status.PENDING, T0)]
    assert order.delivery_address == "1 Main St"
    assert order.updated_at == T0
    assert order.total == 2400


def test_place_requires_a_delivery_address() -> None:
    with pytest.raises(ValidationFailed) as exc:
        Order.place(
            id=uuid4(),
            customer_id="c",
            lines=[],
            currency="EUR",
            payment_token="t",
            delivery_address="   ",
            email=None,
            phone=None,
            at=T0,
        )
    assert field_errors(exc) == ["delivery_address"]


@pytest.mark.parametrize(("current", "target"), LEGAL)
def test_legal_transition_moves_and_records_history(current: Status, target: Status) -> None:
    order = new_order(current)
    at = T0 + timedelta(minutes=5)
    change = order.move_to(target, at=at, reason="why")
    assert (change.previous_status, change.status, change.at) == (current, target, at)
    assert order.events[-1] is change, "the change is recorded as the event to send"
    assert order.status is target
    assert order.history[-1] == (target, at)
    assert order.updated_at == at
    assert order.cancel_reason == ("why" if target is Status.CANCELLED else None)


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_transition_raises_conflict_and_changes_nothing(current: Status, target: Status) -> None:
    order = new_order(current)
    history = list(order.history)
    with pytest.raises(Conflict):
        order.move_to(target, at=T0 + timedelta(minutes=1))
    assert order.status is current
    assert order.history == history
    assert order.updated_at == T0


def test_terminal_statuses_lead_nowhere() -> None:
    assert all(not TRANSITIONS[s] for s in TERMINAL)
    assert set(TERMINAL) == {Status.DELIVERED, Status.CANCELLED}


def test_the_happy_path_is_a_valid_walk() -> None:
    order = new_order()
    for i, status in enumerate(HAPPY_PATH, start=1):
        order.move_to(status, at=T0 + timedelta(minutes=i))
    statuses = [s for s, _ in order.history]
    assert statuses == [Status.PENDING, *HAPPY_PATH]
    assert is_valid_path(statuses)


@pytest.mark.parametrize(
    "path",
    [
        [],
        ["paid"],
        ["pending", "preparing"],
        ["pending", "paid", "paid"],
        ["pending", "cancelled", "paid"],
        ["pending", "paid", "preparing", "cancelled"],
    ],
)
def test_is_valid_path_rejects_impossible_walks(path: list[str]) -> None:
    assert not is_valid_path(path)


@pytest.mark.parametrize("path", [["pending"], ["pending", "cancelled"], ["pending", "paid", "cancelled"]])
def test_is_valid_path_accepts_possible_walks(path: list[str]) -> None:
    assert is_valid_path(path)


def test_is_valid_path_is_false_for_an_unknown_status() -> None:
    assert is_valid_path(["pending", "teleported"]) is False


# -- payment replies -------------------------------------------------------------------------

PAYMENT_ID = UUID("01900000-0000-7000-8000-000000000001")


def test_payment_status_follows_the_payment_and_never_moves_the_order() -> None:
    order = new_order()
    assert order.record_payment(PaymentStatus.COMPLETED, PAYMENT_ID, at=T0 + timedelta(seconds=1))
    assert (order.status, order.payment_status, order.payment_id) == (
        Status.PENDING,
        PaymentStatus.COMPLETED,
        PAYMENT_ID,
    )
    assert order.record_payment(PaymentStatus.REFUNDED, None, at=T0 + timedelta(seconds=2))
    assert order.payment_status is PaymentStatus.REFUNDED
    assert order.payment_id == PAYMENT_ID


def test_late_or_repeated_payment_facts_change_nothing() -> None:
    order = new_order()
    order.record_payment(PaymentStatus.COMPLETED, PAYMENT_ID, at=T0)
    assert not order.record_payment(PaymentStatus.COMPLETED, PAYMENT_ID, at=T0)
    assert not order.record_payment(PaymentStatus.FAILED, uuid4(), at=T0), "a completed charge cannot fail"
    assert not order.record_payment(PaymentStatus.PROCESSING, None, at=T0)
    order.record_payment(PaymentStatus.REFUNDED, None, at=T0)
    assert not order.record_payment(PaymentStatus.COMPLETED, None, at=T0), "refunded is final"
    assert order.payment_status is PaymentStatus.REFUNDED


@pytest.mark.parametrize("status", [Status.PENDING, Status.PAID])
def test_a_customer_may_cancel_until_cooking_starts(status: Status) -> None:
    order = new_order()
    if status is Status.PAID:
        order.move_to(Status.PAID, at=T0)
    order.events.clear()
    assert order.request_cancel(at=T0 + timedelta(seconds=1))
    assert order.cancel_requested
    assert not order.request_cancel(at=T0 + timedelta(seconds=1)), "asking twice changes nothing"
    order.cancel_refused(at=T0 + timedelta(seconds=2))
    assert not order.cancel_requested
    assert [type(e).__name__ for e in order.events] == ["OrderCancellationRequested", "OrderCancellationRefused"]


def test_placing_records_order_placed_and_cancelling_clears_a_pending_cancellation() -> None:
    order = new_order()
    assert [type(e).__name__ for e in order.events] == ["OrderPlaced"]
    order.request_cancel(at=T0)
    order.move_to(Status.CANCELLED, at=T0, reason="customer_cancelled")
    assert not order.cancel_requested
    assert order.cancel_reason == "customer_cancelled"


@pytest.mark.parametrize(
    "path",
    [
        [Status.PAID, Status.PREPARING],
        [Status.PAID, Status.PREPARING, Status.BAKING, Status.READY],
        [Status.CANCELLED],
    ],
)
def test_too_late_to_cancel_once_the_kitchen_started_or_it_ended(path: list[Status]) -> None:
    order = new_order()
    for status in path:
        order.move_to(status, at=T0)
    with pytest.raises(Conflict):
        order.request_cancel(at=T0)
    assert not order.cancel_requested
