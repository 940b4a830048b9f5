"""Settling payments in sets, on SQLite and PostgreSQL: the outcomes of provider calls that
finish together commit in one transaction; one that fails in a set is tried alone and holds up
none of the others; two outcomes for one payment in a set settle it once; and a set that fails
before its commit leaves every payment open, charged again later with the same idempotency key
(the provider makes one charge for each)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY as METRICS

from pizzeria.contracts.payments import ChargePayment, PaymentCompleted, PaymentFailed
from pizzeria.kit import context, failpoints
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.resilience import CircuitBreaker
from pizzeria.messaging.message import Message
from pizzeria.messaging.tables import outbox
from pizzeria.services.payments import handlers, repository
from pizzeria.services.payments.charger import Charger
from pizzeria.services.payments.domain import Payment, Status
from pizzeria.services.payments.handlers import build_handlers
from pizzeria.services.payments.provider import ProviderClient
from pizzeria.services.payments.settling import BEFORE_COMMIT, Change, Settler
from pizzeria.services.payments.tables import metadata
from pizzeria.services.payments.tables import payments as payments_table
from tests.support.cluster import Provider
from tests.support.participant import Participant, on_postgres
from tests.support.polling import eventually

LEASE = timedelta(minutes=1)


@pytest.fixture
async def payments(db: Database) -> Participant:
    return await Participant.create(db, metadata, build_handlers(lambda: None), service="payments")


@pytest.fixture
def settler(payments: Participant) -> Settler:
    return Settler(payments.runtime.uow)


@pytest.fixture
def settle_failing() -> Iterator[None]:
    """Every set, and every outcome tried alone, fails just before its commit."""
    failpoints.hold(BEFORE_COMMIT, on=True)
    yield
    failpoints.hold(BEFORE_COMMIT, on=False)


async def claimed(payments: Participant, count: int) -> list[Payment]:
    """`count` new payments, claimed as the charger claims them (held for LEASE)."""
    for _ in range(count):
        await payments.send(
            ChargePayment(order_id=uuid4(), customer_id="cust-1", amount=2400, currency="EUR", token="tok_visa")
        )
    async with payments.db.transaction() as conn:
        taken = await repository.claim_due(conn, now=utcnow(), lease=LEASE, limit=count, exclude=set())
    assert len(taken) == count
    return taken


async def state_of(payments: Participant, payment_id: UUID) -> dict[str, object]:
    [row] = await payments.rows(payments_table, payments_table.c.id == payment_id)
    return row


async def told(payments: Participant, payment_id: UUID) -> list[Message]:
    """What payments told the world about the payment."""
    return [m for m in await payments.emitted() if getattr(m, "payment_id", None) == payment_id]


def commits() -> float:
    return METRICS.get_sample_value("pizzeria_db_transactions_total") or 0.0


async def test_outcomes_that_finish_together_commit_in_one_transaction(payments: Participant, settler: Settler) -> None:
    taken = await claimed(payments, 5)
    before = commits()
    done = await asyncio.gather(*(handlers.settle_completed(settler, p.id, f"ch_{n}") for n, p in enumerate(taken)))
    assert done == [True] * 5
    assert commits() - before == 1
    for n, payment in enumerate(taken):
        row = await state_of(payments, payment.id)
        assert (row["status"], row["provider_charge_id"], row["locked_until"]) == ("completed", f"ch_{n}", None)
        [completed] = await told(payments, payment.id)
        assert isinstance(completed, PaymentCompleted)
        assert completed.provider_charge_id == f"ch_{n}"


async def test_outcomes_arriving_while_a_set_is_written_make_the_next_set(
    payments: Participant, settler: Settler
) -> None:
    first, *later = await claimed(payments, 4)
    arriving: list[asyncio.Future[list[bool]]] = []

    def complete_as_others_arrive(payment: Payment, now: datetime) -> list[Message]:
        # Applied while the first set is being written: these come in meanwhile.
        arriving.append(asyncio.gather(*(handlers.settle_completed(settler, p.id, f"ch_{p.id}") for p in later)))
        payment.complete("ch_first", at=now)
        return []

    before = commits()
    assert await settler.settle(first.id, complete_as_others_arrive) is not None
    assert commits() - before == 1
    assert await arriving[0] == [True] * 3
    assert commits() - before == 2
    for payment in later:
        assert (await state_of(payments, payment.id))["status"] == "completed"


async def test_a_payment_that_fails_in_a_set_holds_up_none_of_the_others(
    payments: Participant, settler: Settler
) -> None:
    steady, flaky, broken, last = await claimed(payments, 4)
    fails_once = Counter[UUID]()

    def completing(payment_id: UUID, *, failures: int) -> Change:
        def complete(payment: Payment, now: datetime) -> list[Message]:
            if fails_once[payment_id] < failures:
                fails_once[payment_id] += 1
                raise RuntimeError(f"cannot settle {payment_id}")
            return handlers.completing(f"ch_{payment_id}")(payment, now)

        return complete

    before = commits()
    outcomes = await asyncio.gather(
        handlers.settle_completed(settler, steady.id, f"ch_{steady.id}"),
        settler.settle(flaky.id, completing(flaky.id, failures=1)),  # fails in the set only
        settler.settle(broken.id, completing(broken.id, failures=2)),  # fails alone too
        handlers.settle_failed(settler, last.id, "card_declined"),
        return_exceptions=True,
    )
    assert outcomes[0] is True
    assert isinstance(outcomes[1], Payment)
    assert outcomes[1].status is Status.COMPLETED
    assert isinstance(outcomes[2], RuntimeError)
    assert outcomes[3] is True
    assert commits() - before == 3  # the set rolled back; three of its outcomes committed alone
    assert (await state_of(payments, steady.id))["status"] == "completed"
    assert (await state_of(payments, flaky.id))["status"] == "completed"
    assert (await state_of(payments, last.id))["status"] == "failed"
    assert [type(m) for m in await told(payments, last.id)] == [PaymentFailed]
    # The broken one is left to its lease, for the next claim once it runs out.
    left = await state_of(payments, broken.id)
    assert left["status"] == "processing"
    assert left["locked_until"] is not None
    assert await told(payments, broken.id) == []
    async with payments.db.transaction() as conn:
        again = await repository.claim_due(conn, now=utcnow() + LEASE * 2, lease=LEASE, limit=10, exclude=set())
    assert [p.id for p in again] == [broken.id]


async def test_two_outcomes_for_one_payment_in_a_set_settle_it_once(payments: Participant, settler: Settler) -> None:
    [payment] = await claimed(payments, 1)
    before = commits()
    done = await asyncio.gather(
        handlers.settle_completed(settler, payment.id, "ch_1"),
        handlers.settle_failed(settler, payment.id, "card_declined"),
        handlers.settle_completed(settler, payment.id, "ch_2"),
    )
    assert done == [True, False, False]
    assert commits() - before == 1
    row = await state_of(payments, payment.id)
    assert (row["status"], row["provider_charge_id"]) == ("completed", "ch_1")
    assert [type(m) for m in await told(payments, payment.id)] == [PaymentCompleted]


async def test_a_retry_and_an_outcome_for_payments_of_one_set(payments: Participant, settler: Settler) -> None:
    retried, completed = await claimed(payments, 2)
    attempts, done = await asyncio.gather(
        handlers.schedule_retry(settler, retried.id, attempt=retried.attempts + 1),
        handlers.settle_completed(settler, completed.id, "ch_1"),
    )
    assert (attempts, done) == (1, True)
    row = await state_of(payments, retried.id)
    assert (row["status"], row["attempts"], row["locked_until"]) == ("processing", 1, None)
    assert await told(payments, retried.id) == []


async def test_an_attempt_written_twice_counts_once(payments: Participant, settler: Settler) -> None:
    """A commit can raise after it went through (the connection lost on the way back); the
    outcome is then written again, alone. The failed attempt it reports still counts once, or
    a charge would give up before its attempts were spent."""
    [payment] = await claimed(payments, 1)
    first = payment.attempts + 1
    assert await handlers.schedule_retry(settler, payment.id, attempt=first) == first
    assert await handlers.schedule_retry(settler, payment.id, attempt=first) == first
    assert (await state_of(payments, payment.id))["attempts"] == first
    assert await handlers.schedule_retry(settler, payment.id, attempt=None) == first  # no call made
    assert await handlers.schedule_retry(settler, payment.id, attempt=first + 1) == first + 1


@pytest.mark.usefixtures("settle_failing")
async def test_a_set_that_fails_before_its_commit_leaves_every_payment_to_be_charged_again_with_the_same_key(
    payments: Participant,
) -> None:
    provider = Provider()
    requests = Counter[str]()

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/charges":
            requests[request.headers["idempotency-key"]] += 1
        return provider.handle(request)

    client = ProviderClient(
        "http://provider",
        timeout=1.0,
        transport=httpx.MockTransport(handle),
        breaker=CircuitBreaker("provider-settling", failure_threshold=10_000),
    )
    charger = Charger(payments.runtime, client, concurrency=8, max_attempts=3, call_timeout=1.0)
    try:
        # A first pass, as the charger makes it: every charge made, every outcome settled in
        # one set, and the set fails just before it commits (and so does each outcome alone).
        taken = await claimed(payments, 4)
        charges = [
            await client.charge(
                idempotency_key=str(p.id),
                amount=p.amount,
                currency=p.currency,
                source=p.token,
                order_id=str(p.order_id),
                customer=p.customer_id,
            )
            for p in taken
        ]
        pairs = zip(taken, charges, strict=True)
        settling = (handlers.settle_completed(charger.settler, p.id, c.charge_id) for p, c in pairs)
        before = commits()
        outcomes = await asyncio.gather(*settling, return_exceptions=True)
        assert commits() == before
        assert all(isinstance(o, failpoints.FailpointError) for o in outcomes)
        for payment in taken:
            assert (await state_of(payments, payment.id))["status"] == "processing"
            assert await told(payments, payment.id) == []
        assert await charger.step(utcnow()) == 0  # still held: nobody charges them meanwhile

        failpoints.hold(BEFORE_COMMIT, on=False)
        assert await charger.step(utcnow() + LEASE * 2) == 4  # the leases ran out
    finally:
        await client.close()
    assert requests == Counter({str(p.id): 2 for p in taken})  # asked twice, with the same key,
    assert len(provider.charges) == 4  # charged once
    for payment, charge in zip(taken, charges, strict=True):
        assert (await state_of(payments, payment.id))["provider_charge_id"] == charge.charge_id
        [completed] = await told(payments, payment.id)
        assert isinstance(completed, PaymentCompleted)


async def test_each_outcomes_events_carry_the_trace_and_correlation_of_the_call_that_settled_it(
    payments: Participant, settler: Settler
) -> None:
    taken = await claimed(payments, 2)
    traces = {p.id: f"00-{p.id.hex}-{'0' * 15}{n + 1}-01" for n, p in enumerate(taken)}

    async def settle_within_its_trace(payment: Payment) -> bool:
        context.traceparent.set(traces[payment.id])
        context.correlation_id.set(f"order-{payment.order_id}")
        return await handlers.settle_completed(settler, payment.id, f"ch_{payment.id}")

    before = commits()
    assert await asyncio.gather(*(settle_within_its_trace(p) for p in taken)) == [True, True]
    assert commits() - before == 1  # in one set, yet each event in its own trace
    rows = await payments.rows(outbox)
    headers = {orjson.loads(r["headers"])["ce_subject"]: orjson.loads(r["headers"]) for r in rows}
    for payment in taken:
        sent = headers[str(payment.order_id)]
        assert sent["ce_type"] == PaymentCompleted.type_name()
        assert (sent["ce_traceparent"], sent["ce_correlationid"]) == (traces[payment.id], f"order-{payment.order_id}")


@pytest.fixture
async def payments_on_postgres() -> AsyncIterator[Participant]:
    async with on_postgres(metadata, build_handlers(lambda: None), service="payments") as payments:
        yield payments


@pytest.mark.postgres
async def test_a_set_takes_what_nobody_holds_and_settles_the_rest_once_it_is_let_go(
    payments_on_postgres: Participant,
) -> None:
    """A consumer's run locks its payments in the order its messages came (here B, then A); a
    set that waited for B while holding A would close a cycle. It takes A, and B is settled
    alone once the run lets it go: the run gets A without a deadlock. (PostgreSQL: SQLite has
    one writer at a time, and no row another transaction holds.)"""
    payments = payments_on_postgres
    settler = Settler(payments.runtime.uow)
    a, b = sorted(await claimed(payments, 2), key=lambda p: p.id)
    uow = payments.runtime.uow()
    async with uow:
        await repository.of_order_for_update(uow.conn, b.order_id)  # the run's first refund
        settling = asyncio.gather(
            handlers.settle_completed(settler, a.id, "ch_a"), handlers.settle_completed(settler, b.id, "ch_b")
        )

        async def a_settled() -> bool:
            return (await state_of(payments, a.id))["status"] == Status.COMPLETED.value

        await eventually(a_settled, "A was not settled while B was held", 10, every=0.01)
        assert (await state_of(payments, b.id))["status"] == Status.PROCESSING.value
        await repository.of_order_for_update(uow.conn, a.order_id)  # the run's second refund: no cycle
    assert await asyncio.wait_for(settling, timeout=10) == [True, True]
    assert (await state_of(payments, b.id))["status"] == Status.COMPLETED.value
    assert [type(m) for m in await told(payments, b.id)] == [PaymentCompleted]
    await settler.close()
