"""Payments domain: a payment settles only while open; provider retries back off and cap; giving
the money back voids an open payment, refunds a completed one, and answers again once done."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from pizzeria.kit.errors import Conflict
from pizzeria.services.payments.domain import Payment, Status, backoff_for

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=7)


def payment(status: Status = Status.PENDING) -> Payment:
    return Payment(
        id=uuid4(),
        order_id=uuid4(),
        customer_id="cust",
        amount=2400,
        currency="EUR",
        token="tok_visa",
        status=status,
        attempts=0,
        next_attempt_at=T0,
        created_at=T0,
        updated_at=T0,
    )


@pytest.mark.parametrize("status", [Status.PENDING, Status.PROCESSING])
def test_complete_while_open(status: Status) -> None:
    p = payment(status)
    p.complete("ch_1", at=T1)
    assert (p.status, p.provider_charge_id, p.updated_at) == (Status.COMPLETED, "ch_1", T1)
    assert not p.is_open


@pytest.mark.parametrize("status", [Status.PENDING, Status.PROCESSING])
def test_fail_while_open(status: Status) -> None:
    p = payment(status)
    p.fail("card_declined", at=T1)
    assert (p.status, p.failure_reason, p.updated_at) == (Status.FAILED, "card_declined", T1)
    assert not p.is_open


def test_retry_later_schedules_the_next_attempt() -> None:
    p = payment()
    p.retry_later(at=T1, backoff=timedelta(seconds=2))
    assert p.status is Status.PROCESSING
    assert p.next_attempt_at == T1 + timedelta(seconds=2)
    assert p.updated_at == T1
    assert p.is_open


ACTIONS: dict[str, Callable[[Payment], None]] = {
    "complete": lambda p: p.complete("ch_2", at=T1),
    "fail": lambda p: p.fail("late", at=T1),
    "retry_later": lambda p: p.retry_later(at=T1, backoff=timedelta(seconds=1)),
    "void": lambda p: p.void(at=T1),
}


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.REFUNDED])
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_a_settled_payment_cannot_change(status: Status, action: str) -> None:
    p = payment(status)
    with pytest.raises(Conflict, match="already"):
        ACTIONS[action](p)
    assert (p.status, p.updated_at, p.provider_charge_id, p.failure_reason) == (
        status,
        T0,
        None,
        None,
    )


def test_backoff_doubles_from_the_initial_delay() -> None:
    assert [backoff_for(n).total_seconds() for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_backoff_never_shrinks_and_caps_at_the_maximum() -> None:
    delays = [backoff_for(n) for n in range(0, 40)]
    assert delays == sorted(delays)
    assert delays[0] == timedelta(seconds=0.5)
    assert max(delays) == timedelta(seconds=30)
    assert backoff_for(1000) == timedelta(seconds=30)


def test_backoff_honours_custom_bounds() -> None:
    assert backoff_for(1, initial=2, maximum=5) == timedelta(seconds=2)
    assert backoff_for(2, initial=2, maximum=5) == timedelta(seconds=4)
    assert backoff_for(3, initial=2, maximum=5) == timedelta(seconds=5)


# -- giving the money back -------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.PENDING, Status.PROCESSING])
def test_money_back_from_an_open_payment_voids_it(status: Status) -> None:
    p = payment(status)
    assert p.request_money_back(at=T1) == "void"
    assert (p.cancel_requested, p.refund_requested, p.next_attempt_at, p.updated_at) == (True, False, T1, T1)
    assert p.status is status  # the charger settles it
    assert p.is_open
    assert not p.needs_refund


def test_money_back_from_a_completed_payment_asks_for_a_refund() -> None:
    p = payment(Status.COMPLETED)
    assert p.request_money_back(at=T1) == "refund"
    assert (p.refund_requested, p.cancel_requested, p.next_attempt_at) == (True, False, T1)
    assert p.status is Status.COMPLETED
    assert p.needs_refund


@pytest.mark.parametrize(("status", "answer"), [(Status.FAILED, "voided"), (Status.REFUNDED, "refunded")])
def test_money_back_from_a_settled_payment_only_answers(status: Status, answer: str) -> None:
    p = payment(status)
    assert p.request_money_back(at=T1) == answer
    assert (p.status, p.cancel_requested, p.refund_requested, p.next_attempt_at) == (status, False, False, T0)
    assert not p.needs_refund


def test_asking_twice_for_money_back_answers_the_same() -> None:
    p = payment(Status.COMPLETED)
    assert p.request_money_back(at=T0) == p.request_money_back(at=T1) == "refund"
    assert p.needs_refund


@pytest.mark.parametrize("status", [Status.PENDING, Status.PROCESSING])
def test_void_fails_an_open_payment_as_cancelled(status: Status) -> None:
    p = payment(status)
    p.request_money_back(at=T0)
    p.void(at=T1)
    assert (p.status, p.failure_reason, p.updated_at) == (Status.FAILED, "cancelled", T1)
    assert not p.is_open
    assert p.provider_charge_id is None


def test_completing_a_payment_cancelled_meanwhile_makes_it_wait_for_its_refund() -> None:
    p = payment(Status.PROCESSING)
    p.request_money_back(at=T0)
    p.complete("ch_late", at=T1)
    assert (p.status, p.provider_charge_id) == (Status.COMPLETED, "ch_late")
    assert (p.refund_requested, p.next_attempt_at) == (True, T1)
    assert p.needs_refund


def test_completing_a_payment_nobody_cancelled_needs_no_refund() -> None:
    p = payment(Status.PROCESSING)
    p.complete("ch_1", at=T1)
    assert not p.refund_requested
    assert not p.needs_refund


def test_refunded_settles_a_refund_that_was_waiting() -> None:
    p = payment(Status.COMPLETED)
    p.request_money_back(at=T0)
    p.refunded("re_1", at=T1)
    assert (p.status, p.provider_refund_id, p.refund_requested, p.updated_at) == (Status.REFUNDED, "re_1", False, T1)
    assert not p.needs_refund
    assert not p.is_open


@pytest.mark.parametrize(
    "status", [Status.PENDING, Status.PROCESSING, Status.COMPLETED, Status.FAILED, Status.REFUNDED]
)
def test_refunded_without_a_refund_waiting_is_a_conflict(status: Status) -> None:
    p = payment(status)
    with pytest.raises(Conflict, match="no refund waiting"):
        p.refunded("re_1", at=T1)
    assert (p.status, p.provider_refund_id, p.updated_at) == (status, None, T0)


def test_refunded_twice_is_a_conflict() -> None:
    p = payment(Status.COMPLETED)
    p.request_money_back(at=T0)
    p.refunded("re_1", at=T1)
    with pytest.raises(Conflict):
        p.refunded("re_2", at=T1)
    assert p.provider_refund_id == "re_1"


def test_retry_refund_later_schedules_the_refund_and_keeps_it_waiting() -> None:
    p = payment(Status.COMPLETED)
    p.request_money_back(at=T0)
    p.retry_refund_later(at=T1, backoff=timedelta(seconds=4))
    assert (p.next_attempt_at, p.updated_at) == (T1 + timedelta(seconds=4), T1)
    assert p.status is Status.COMPLETED
    assert p.needs_refund
