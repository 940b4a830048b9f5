"""Payments as a saga participant, on a real SQLite database through the real consumer runner,
with the charger stepped by hand against the in-memory card provider (an httpx transport): one
payment per order, charges that complete, decline or time out, and giving the money back in
every state a payment can be in — never charging or refunding a card twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from uuid import UUID, uuid4

import httpx
import pytest

from pizzeria.contracts.payments import (
    ChargePayment,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    PaymentRefundRequested,
    PaymentVoided,
    RefundPayment,
)
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.errors import Conflict, NotFound
from pizzeria.kit.resilience import CircuitBreaker
from pizzeria.messaging.message import Message
from pizzeria.services.payments import repository
from pizzeria.services.payments.charger import Charger
from pizzeria.services.payments.domain import Payment, Status
from pizzeria.services.payments.handlers import build_handlers, request_refund
from pizzeria.services.payments.provider import ProviderClient
from pizzeria.services.payments.tables import metadata
from pizzeria.services.payments.tables import payments as payments_table
from tests.support.cluster import Provider
from tests.support.participant import Participant

AMOUNT, CURRENCY = 2400, "EUR"
MAX_ATTEMPTS = 3


@pytest.fixture
def wakes() -> list[str]:
    return []


@pytest.fixture
async def payments(db: Database, wakes: list[str]) -> Participant:
    return await Participant.create(db, metadata, build_handlers(lambda: wakes.append("charger")), service="payments")


@pytest.fixture
def provider() -> Provider:
    return Provider()


@pytest.fixture
def while_charging() -> list[Callable[[], Awaitable[object]]]:
    """What happens while the next charge requests are in flight, one each."""
    return []


@pytest.fixture
def down() -> set[str]:
    """Provider endpoints that cannot be reached now, as "METHOD /path"."""
    return set()


@pytest.fixture
async def charger(
    payments: Participant, provider: Provider, down: set[str], while_charging: list[Callable[[], Awaitable[object]]]
) -> AsyncIterator[Charger]:
    async def handle(request: httpx.Request) -> httpx.Response:
        if f"{request.method} {request.url.path}" in down:
            raise httpx.ConnectError("provider down", request=request)
        if request.method == "POST" and request.url.path == "/v1/charges" and while_charging:
            await while_charging.pop(0)()
        return provider.handle(request)

    client = ProviderClient(
        "http://provider",
        timeout=1.0,
        transport=httpx.MockTransport(handle),
        breaker=CircuitBreaker("provider-unit", failure_threshold=10_000),
    )
    worker = Charger(payments.runtime, client, concurrency=8, max_attempts=MAX_ATTEMPTS, call_timeout=1.0)
    yield worker
    await client.close()


def charge(order_id: UUID, token: str = "tok_visa") -> ChargePayment:
    return ChargePayment(order_id=order_id, customer_id="cust-1", amount=AMOUNT, currency=CURRENCY, token=token)


def refund(order_id: UUID) -> RefundPayment:
    return RefundPayment(order_id=order_id, reason="customer_cancelled")


async def work(charger: Charger) -> int:
    """One charger pass, late enough for any retry backoff to have passed; how many it took."""
    return await charger.step(utcnow() + timedelta(minutes=1))


async def payment_of(payments: Participant, order_id: UUID) -> Payment:
    async with payments.db.read() as conn:
        [found] = await repository.for_order(conn, order_id)
    return found


async def story(payments: Participant, order_id: UUID) -> list[Message]:
    """What payments told the world about the order, in order."""
    return [m for m in await payments.emitted() if getattr(m, "order_id", None) == order_id]


def kinds(messages: list[Message]) -> list[type[Message]]:
    return [type(m) for m in messages]


async def charged(payments: Participant, charger: Charger, order_id: UUID) -> Payment:
    """A completed tok_visa payment of the order."""
    await payments.send(charge(order_id))
    await work(charger)
    paid = await payment_of(payments, order_id)
    assert paid.status is Status.COMPLETED
    return paid


# -- charging ----------------------------------------------------------------------------------


async def test_charge_creates_one_pending_payment_and_wakes_the_charger(
    payments: Participant, wakes: list[str]
) -> None:
    order_id = uuid4()
    assert await payments.send(charge(order_id)) == []  # the answer comes from the charger
    created = await payment_of(payments, order_id)
    assert (created.status, created.amount, created.currency, created.token, created.customer_id) == (
        Status.PENDING,
        AMOUNT,
        CURRENCY,
        "tok_visa",
        "cust-1",
    )
    assert created.attempts == 0
    assert wakes == ["charger"]


async def test_a_charge_sent_twice_makes_one_payment_and_one_charge(
    payments: Participant, charger: Charger, provider: Provider, wakes: list[str]
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id))
    first = await payment_of(payments, order_id)
    await payments.send(charge(order_id))
    assert await payment_of(payments, order_id) == first  # `payment_of` also asserts there is one
    assert wakes == ["charger"]

    assert await work(charger) == 1
    assert await work(charger) == 0
    await payments.send(charge(order_id))  # even after it completed
    assert await work(charger) == 0
    assert len(provider.succeeded(str(order_id))) == 1
    assert kinds(await story(payments, order_id)) == [PaymentCompleted]


async def test_a_good_card_is_charged_and_the_payment_completed(
    payments: Participant, charger: Charger, provider: Provider
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id))
    assert await work(charger) == 1
    paid = await payment_of(payments, order_id)
    [taken] = provider.succeeded(str(order_id))
    assert (paid.status, paid.provider_charge_id) == (Status.COMPLETED, taken["id"])
    assert taken["amount"] == AMOUNT
    [completed] = await story(payments, order_id)
    assert isinstance(completed, PaymentCompleted)
    assert (completed.payment_id, completed.amount, completed.currency, completed.provider_charge_id) == (
        paid.id,
        AMOUNT,
        CURRENCY,
        taken["id"],
    )


async def test_a_declined_card_fails_the_payment(payments: Participant, charger: Charger, provider: Provider) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id, "tok_declined"))
    assert await work(charger) == 1
    failed = await payment_of(payments, order_id)
    assert (failed.status, failed.failure_reason) == (Status.FAILED, "card_declined")
    [event] = await story(payments, order_id)
    assert isinstance(event, PaymentFailed)
    assert (event.payment_id, event.reason, event.amount) == (failed.id, "card_declined", AMOUNT)
    assert provider.succeeded(str(order_id)) == []
    assert await work(charger) == 0  # settled: never tried again


async def test_a_provider_that_never_answers_is_retried_then_given_up_on(
    payments: Participant, charger: Charger, provider: Provider
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id, "tok_timeout"))
    for attempt in range(1, MAX_ATTEMPTS):
        before = utcnow()
        assert await work(charger) == 1
        waiting = await payment_of(payments, order_id)
        assert (waiting.status, waiting.attempts) == (Status.PROCESSING, attempt)
        assert waiting.next_attempt_at > before  # backs off before the next attempt
        assert await story(payments, order_id) == []

    assert await work(charger) == 1
    failed = await payment_of(payments, order_id)
    assert (failed.status, failed.failure_reason, failed.attempts) == (
        Status.FAILED,
        "provider_unavailable",
        MAX_ATTEMPTS,
    )
    [event] = await story(payments, order_id)
    assert isinstance(event, PaymentFailed)
    assert event.reason == "provider_unavailable"
    assert await work(charger) == 0
    assert provider.succeeded(str(order_id)) == []


async def test_a_retry_after_a_lost_answer_gets_the_original_charge(
    payments: Participant, charger: Charger, provider: Provider
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id))
    provider.lose_answers = 1
    await work(charger)
    assert await story(payments, order_id) == []
    assert await work(charger) == 1  # same idempotency key: the provider answers with the charge it made
    [taken] = provider.succeeded(str(order_id))
    paid = await payment_of(payments, order_id)
    assert (paid.status, paid.provider_charge_id, paid.attempts) == (Status.COMPLETED, taken["id"], 1)
    assert kinds(await story(payments, order_id)) == [PaymentCompleted]


async def test_giving_up_on_a_charge_the_provider_did_take_does_not_keep_the_money(
    payments: Participant, charger: Charger, provider: Provider
) -> None:
    # The first attempt goes through but no attempt's answer arrives (a provider slower than
    # our timeout). The saga treats PaymentFailed as "nothing taken" and never asks for a
    # refund, so the payment must not end failed while the card stays charged.
    order_id = uuid4()
    await payments.send(charge(order_id))
    provider.lose_answers = MAX_ATTEMPTS
    for _ in range(MAX_ATTEMPTS + 2):
        await work(charger)
    [taken] = provider.succeeded(str(order_id))
    settled = await payment_of(payments, order_id)
    kept = settled.status is Status.COMPLETED and settled.provider_charge_id == taken["id"]
    given_back = len(provider.refunds_of(taken["id"])) == 1
    assert kept or given_back, (
        f"charged {taken['id']}, but the payment is {settled.status} ({settled.failure_reason}) "
        "and nothing was refunded"
    )
    assert (PaymentCompleted in kinds(await story(payments, order_id))) is kept


async def test_a_payment_backing_off_is_not_retried_before_it_is_due(payments: Participant, charger: Charger) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id, "tok_timeout"))
    await work(charger)
    due = (await payment_of(payments, order_id)).next_attempt_at
    assert await charger.step(due - timedelta(milliseconds=1)) == 0
    assert (await payment_of(payments, order_id)).attempts == 1
    assert await charger.step(due) == 1
    assert (await payment_of(payments, order_id)).attempts == 2


async def test_the_charger_knows_when_the_first_piece_of_work_will_be_due(
    payments: Participant, charger: Charger
) -> None:
    # It sleeps until then rather than polling: a retry when its backoff ends, a payment whose
    # holder crashed when the lease runs out; with no open payment, only new work wakes it.
    async def next_due() -> object:
        async with payments.db.read() as conn:
            return await repository.next_due(conn)

    await charged(payments, charger, uuid4())
    assert await next_due() is None, "a completed payment is no work"
    order_id = uuid4()
    await payments.send(charge(order_id, "tok_timeout"))
    assert await next_due() == (await payment_of(payments, order_id)).next_attempt_at  # due at once
    await work(charger)  # no answer: it backs off
    backing_off = await payment_of(payments, order_id)
    assert backing_off.next_attempt_at > utcnow()
    assert await next_due() == backing_off.next_attempt_at
    lease = timedelta(minutes=10)
    async with payments.db.transaction() as conn:  # claimed when due, by a holder that then crashes
        [held] = await repository.claim_due(conn, now=backing_off.next_attempt_at, lease=lease, limit=1, exclude=set())
    assert held.id == backing_off.id
    assert await next_due() == backing_off.next_attempt_at + lease


async def test_the_probe_of_a_recovering_provider_is_a_charge_that_has_not_failed_yet(
    payments: Participant, charger: Charger
) -> None:
    # A half-open breaker lets one call through; if it is the card that never answers, the
    # breaker opens again and every good card waits another cool-down.
    stuck, fresh = uuid4(), uuid4()
    await payments.send(charge(stuck, "tok_timeout"))
    await work(charger)
    await payments.send(charge(fresh))
    async with payments.db.transaction() as conn:  # the failed one has been due for a while
        await conn.execute(
            payments_table.update()
            .where(payments_table.c.order_id == stuck)
            .values(next_attempt_at=utcnow() - timedelta(minutes=5))
        )
    later, lease = utcnow() + timedelta(minutes=1), timedelta(seconds=5)
    async with payments.db.transaction() as conn:
        [oldest_due] = await repository.claim_due(conn, now=later, lease=lease, limit=1, exclude=set())
    async with payments.db.transaction() as conn:  # once that lease has run out: both due again
        [probe] = await repository.claim_due(
            conn, now=later + 2 * lease, lease=lease, limit=1, exclude=set(), fresh_first=True
        )
    assert oldest_due.order_id == stuck  # in normal running, the one due longest goes first
    assert (probe.order_id, probe.attempts) == (fresh, 0)


# -- giving the money back ---------------------------------------------------------------------


async def test_refund_of_an_order_never_charged_voids_it_for_good(
    payments: Participant, charger: Charger, provider: Provider, wakes: list[str]
) -> None:
    order_id = uuid4()
    [voided] = await payments.send(refund(order_id))
    assert isinstance(voided, PaymentVoided)
    assert (voided.order_id, voided.payment_id) == (order_id, None)
    tombstone = await payment_of(payments, order_id)
    assert (tombstone.status, tombstone.failure_reason) == (Status.FAILED, "cancelled")

    # The charge command, overtaken by the refund, arrives late: nothing is charged.
    assert await payments.send(charge(order_id)) == []
    assert await payment_of(payments, order_id) == tombstone
    assert await work(charger) == 0
    assert provider.charges == {}
    assert wakes == []


async def test_refund_of_a_failed_payment_voids_it(payments: Participant, charger: Charger) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id, "tok_declined"))
    await work(charger)
    failed = await payment_of(payments, order_id)
    [voided] = await payments.send(refund(order_id))
    assert isinstance(voided, PaymentVoided)
    assert (voided.order_id, voided.payment_id) == (order_id, failed.id)
    assert (await payment_of(payments, order_id)).status is Status.FAILED
    assert await work(charger) == 0


async def test_refund_of_a_completed_payment_refunds_it_once(
    payments: Participant, charger: Charger, provider: Provider, wakes: list[str]
) -> None:
    order_id = uuid4()
    paid = await charged(payments, charger, order_id)
    wakes.clear()
    assert await payments.send(refund(order_id)) == []  # the charger refunds, then answers
    assert (await payment_of(payments, order_id)).needs_refund
    assert wakes == ["charger"]

    assert await work(charger) == 1
    refunded = await payment_of(payments, order_id)
    [given_back] = provider.refunds_of(paid.provider_charge_id or "")
    assert (refunded.status, refunded.provider_refund_id) == (Status.REFUNDED, given_back["id"])
    assert given_back["amount"] == AMOUNT
    assert kinds(await story(payments, order_id)) == [PaymentCompleted, PaymentRefunded]
    event = (await story(payments, order_id))[-1]
    assert isinstance(event, PaymentRefunded)
    assert (event.payment_id, event.amount, event.provider_refund_id) == (paid.id, AMOUNT, given_back["id"])
    assert await work(charger) == 0


async def test_refund_sent_again_after_the_refund_answers_again_without_refunding_twice(
    payments: Participant, charger: Charger, provider: Provider
) -> None:
    order_id = uuid4()
    paid = await charged(payments, charger, order_id)
    await payments.send(refund(order_id))
    await work(charger)
    refunded = await payment_of(payments, order_id)

    [again] = await payments.send(refund(order_id))
    assert isinstance(again, PaymentRefunded)
    assert (again.payment_id, again.provider_refund_id, again.amount) == (paid.id, refunded.provider_refund_id, AMOUNT)
    assert await work(charger) == 0
    assert len(provider.refunds_of(paid.provider_charge_id or "")) == 1
    assert (await payment_of(payments, order_id)).status is Status.REFUNDED


async def test_refund_sent_twice_before_the_charger_refunds_once(
    payments: Participant, charger: Charger, provider: Provider
) -> None:
    order_id = uuid4()
    paid = await charged(payments, charger, order_id)
    await payments.send(refund(order_id))
    await payments.send(refund(order_id))
    assert await work(charger) == 1
    assert len(provider.refunds_of(paid.provider_charge_id or "")) == 1
    assert kinds(await story(payments, order_id)) == [PaymentCompleted, PaymentRefunded]


async def test_refund_of_an_open_payment_voids_it_before_anything_is_taken(
    payments: Participant, charger: Charger, provider: Provider, wakes: list[str]
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id))
    assert await payments.send(refund(order_id)) == []  # the charger voids it, then answers
    assert (await payment_of(payments, order_id)).cancel_requested
    assert wakes == ["charger", "charger"]

    assert await work(charger) == 1
    voided = await payment_of(payments, order_id)
    assert (voided.status, voided.failure_reason) == (Status.FAILED, "cancelled")
    [event] = await story(payments, order_id)
    assert isinstance(event, PaymentVoided)
    assert event.payment_id == voided.id
    assert provider.succeeded(str(order_id)) == []
    assert await work(charger) == 0


async def test_refund_while_the_provider_is_not_answering_voids_the_payment(
    payments: Participant, charger: Charger, provider: Provider
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id, "tok_timeout"))
    await work(charger)  # one attempt timed out; the payment is still open
    await payments.send(refund(order_id))
    assert await work(charger) == 1
    assert (await payment_of(payments, order_id)).status is Status.FAILED
    assert kinds(await story(payments, order_id)) == [PaymentVoided]
    assert provider.succeeded(str(order_id)) == []


async def test_refund_of_an_open_payment_the_provider_did_take_completes_then_refunds_it(
    payments: Participant, charger: Charger, provider: Provider
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id))
    provider.lose_answers = 1
    assert await work(charger) == 1  # charged, but the answer never came back
    assert (await payment_of(payments, order_id)).status is Status.PROCESSING
    [taken] = provider.succeeded(str(order_id))

    assert await payments.send(refund(order_id)) == []
    assert await work(charger) == 1  # finds the charge that went through
    completed = await payment_of(payments, order_id)
    assert (completed.status, completed.provider_charge_id) == (Status.COMPLETED, taken["id"])
    assert completed.needs_refund

    assert await work(charger) == 1  # and gives it back
    refunded = await payment_of(payments, order_id)
    assert refunded.status is Status.REFUNDED
    assert kinds(await story(payments, order_id)) == [PaymentCompleted, PaymentRefunded]
    assert len(provider.succeeded(str(order_id))) == 1
    assert len(provider.refunds_of(taken["id"])) == 1
    assert await work(charger) == 0


async def test_a_refund_is_retried_for_as_long_as_the_provider_is_down(
    payments: Participant, charger: Charger, provider: Provider, down: set[str]
) -> None:
    order_id = uuid4()
    paid = await charged(payments, charger, order_id)
    await payments.send(refund(order_id))
    down.add("POST /v1/refunds")
    for _ in range(MAX_ATTEMPTS + 1):  # a refund, unlike a charge, never gives up
        assert await work(charger) == 1
        waiting = await payment_of(payments, order_id)
        assert (waiting.status, waiting.needs_refund) == (Status.COMPLETED, True)
    assert kinds(await story(payments, order_id)) == [PaymentCompleted]

    down.clear()
    assert await work(charger) == 1
    assert (await payment_of(payments, order_id)).status is Status.REFUNDED
    assert kinds(await story(payments, order_id)) == [PaymentCompleted, PaymentRefunded]
    assert len(provider.refunds_of(paid.provider_charge_id or "")) == 1


async def test_voiding_waits_for_the_provider_to_say_whether_it_took_the_charge(
    payments: Participant, charger: Charger, provider: Provider, down: set[str]
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id))
    await payments.send(refund(order_id))
    down.add("GET /v1/charges")
    for _ in range(MAX_ATTEMPTS + 1):  # cannot know if it is safe to void: never fails it instead
        assert await work(charger) == 1
        assert (await payment_of(payments, order_id)).is_open
    assert await story(payments, order_id) == []

    down.clear()
    assert await work(charger) == 1
    assert (await payment_of(payments, order_id)).failure_reason == "cancelled"
    assert kinds(await story(payments, order_id)) == [PaymentVoided]
    assert provider.charges == {}


# -- the money asked back while the charge is in flight -----------------------------------------


async def test_refund_while_a_good_charge_is_in_flight_refunds_it_once_it_completes(
    payments: Participant,
    charger: Charger,
    provider: Provider,
    while_charging: list[Callable[[], Awaitable[object]]],
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id))
    while_charging.append(lambda: payments.send(refund(order_id)))
    assert await work(charger) == 1
    assert while_charging == []
    completed = await payment_of(payments, order_id)
    assert (completed.status, completed.cancel_requested) == (Status.COMPLETED, True)
    assert completed.needs_refund

    assert await work(charger) == 1
    assert (await payment_of(payments, order_id)).status is Status.REFUNDED
    assert kinds(await story(payments, order_id)) == [PaymentCompleted, PaymentRefunded]
    [taken] = provider.succeeded(str(order_id))
    assert len(provider.refunds_of(taken["id"])) == 1


async def test_refund_while_a_declined_charge_is_in_flight_answers_failed_and_voided(
    payments: Participant,
    charger: Charger,
    while_charging: list[Callable[[], Awaitable[object]]],
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id, "tok_declined"))
    while_charging.append(lambda: payments.send(refund(order_id)))
    assert await work(charger) == 1
    failed = await payment_of(payments, order_id)
    assert (failed.status, failed.failure_reason) == (Status.FAILED, "card_declined")
    assert kinds(await story(payments, order_id)) == [PaymentFailed, PaymentVoided]
    assert await work(charger) == 0


async def test_refund_while_a_timing_out_charge_is_in_flight_voids_it_next(
    payments: Participant,
    charger: Charger,
    provider: Provider,
    while_charging: list[Callable[[], Awaitable[object]]],
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id, "tok_timeout"))
    while_charging.append(lambda: payments.send(refund(order_id)))
    assert await work(charger) == 1  # the attempt timed out; the payment stays open to be voided
    assert (await payment_of(payments, order_id)).is_open
    assert await story(payments, order_id) == []

    assert await work(charger) == 1
    voided = await payment_of(payments, order_id)
    assert (voided.status, voided.failure_reason) == (Status.FAILED, "cancelled")
    assert kinds(await story(payments, order_id)) == [PaymentVoided]
    assert provider.succeeded(str(order_id)) == []


async def test_refund_while_the_last_charge_attempt_is_in_flight_answers_failed_and_voided(
    payments: Participant,
    charger: Charger,
    while_charging: list[Callable[[], Awaitable[object]]],
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id, "tok_timeout"))
    for _ in range(MAX_ATTEMPTS - 1):
        await work(charger)
    while_charging.append(lambda: payments.send(refund(order_id)))
    assert await work(charger) == 1
    failed = await payment_of(payments, order_id)
    assert (failed.status, failed.failure_reason) == (Status.FAILED, "provider_unavailable")
    assert kinds(await story(payments, order_id)) == [PaymentFailed, PaymentVoided]
    assert await work(charger) == 0


# -- an administrator's refund -----------------------------------------------------------------


async def test_an_administrator_refunds_a_completed_payment(
    payments: Participant, charger: Charger, provider: Provider
) -> None:
    order_id = uuid4()
    paid = await charged(payments, charger, order_id)
    requested = await request_refund(payments.uow(), paid.id, actor="admin-1")
    assert (requested.status, requested.refund_requested) == (Status.COMPLETED, True)
    assert await work(charger) == 1
    assert (await payment_of(payments, order_id)).status is Status.REFUNDED
    assert len(provider.refunds_of(paid.provider_charge_id or "")) == 1
    told = await story(payments, order_id)
    assert kinds(told) == [PaymentCompleted, PaymentRefundRequested, PaymentRefunded]
    assert told[1].actor == "admin-1"  # type: ignore[attr-defined]  # the audit log names who did it


@pytest.mark.parametrize("token", ["tok_declined", "tok_timeout"])
async def test_an_administrator_cannot_refund_a_payment_that_is_not_completed(
    payments: Participant, charger: Charger, token: str
) -> None:
    order_id = uuid4()
    await payments.send(charge(order_id, token))
    await work(charger)  # declined: failed; timing out: still processing
    before = await payment_of(payments, order_id)
    with pytest.raises(Conflict):
        await request_refund(payments.uow(), before.id, actor="admin-1")
    assert await payment_of(payments, order_id) == before


async def test_an_administrator_cannot_refund_a_pending_or_refunded_payment(
    payments: Participant, charger: Charger
) -> None:
    pending_order = uuid4()
    await payments.send(charge(pending_order))
    pending = await payment_of(payments, pending_order)
    with pytest.raises(Conflict):
        await request_refund(payments.uow(), pending.id, actor="admin-1")

    refunded_order = uuid4()
    await charged(payments, charger, refunded_order)
    await payments.send(refund(refunded_order))
    await work(charger)
    refunded = await payment_of(payments, refunded_order)
    assert refunded.status is Status.REFUNDED
    with pytest.raises(Conflict):
        await request_refund(payments.uow(), refunded.id, actor="admin-1")


async def test_an_administrator_refund_of_an_unknown_payment_is_not_found(payments: Participant) -> None:
    with pytest.raises(NotFound):
        await request_refund(payments.uow(), uuid4(), actor="admin-1")
