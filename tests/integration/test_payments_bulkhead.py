"""One customer's cards that never get an answer do not hold up anyone else's payment: the
charger, running as in the service, on SQLite and PostgreSQL, keeps at most
PAYMENT_CONCURRENCY_PER_CUSTOMER of one customer's charges in flight, so another customer's
charge is made while all of those are still waiting for the provider; what fails for that one
customer alone does not open the provider's breaker for everyone; and a charger that stops has
ended the charges it had in flight."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import UUID, uuid4

import httpx
import orjson
import pytest
import sqlalchemy as sa

from pizzeria.contracts.payments import ChargePayment
from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database
from pizzeria.kit.resilience import BreakerState, CircuitBreaker
from pizzeria.services.payments import repository
from pizzeria.services.payments.charger import SOON_S, Charger
from pizzeria.services.payments.domain import Status
from pizzeria.services.payments.handlers import build_handlers
from pizzeria.services.payments.provider import ProviderClient
from pizzeria.services.payments.tables import metadata
from pizzeria.services.payments.tables import payments as payments_table
from tests.support.cluster import Provider
from tests.support.participant import Participant
from tests.support.polling import eventually

CONCURRENCY, PER_CUSTOMER = 4, 2


class SilentCards:
    """The card provider, except that `tok_timeout` charges get no answer until `answer` is
    set (and, cancelled, take `ending_turns` to end); counts the charges in flight for each
    customer (the order id tells whose)."""

    def __init__(self, owners: dict[str, str]) -> None:
        self.provider = Provider()
        self.owners = owners  # order id → customer
        self.answer = asyncio.Event()
        self.in_flight: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.ending_turns = 0  # turns of the event loop a cancelled call takes to end

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return self.provider.handle(request)
        customer = self.owners[orjson.loads(request.content)["metadata"]["order_id"]]
        self.in_flight[customer] += 1
        self.most[customer] = max(self.most[customer], self.in_flight[customer])
        try:
            if orjson.loads(request.content)["source"] == "tok_timeout":
                try:
                    await self.answer.wait()
                except asyncio.CancelledError:
                    for _ in range(self.ending_turns):  # a call given up takes a while to end
                        await asyncio.sleep(0)
                    raise
                raise httpx.ReadTimeout("no answer", request=request)
            return self.provider.handle(request)
        finally:
            self.in_flight[customer] -= 1
            self.answered[customer] += 1


@pytest.fixture
async def payments(db: Database) -> Participant:
    return await Participant.create(db, metadata, build_handlers(lambda: None), service="payments")


async def place(payments: Participant, owners: dict[str, str], customer: str, token: str) -> UUID:
    order_id = uuid4()
    owners[str(order_id)] = customer
    await payments.send(
        ChargePayment(order_id=order_id, customer_id=customer, amount=2400, currency="EUR", token=token)
    )
    return order_id


async def status_of(payments: Participant, order_id: UUID) -> Status:
    async with payments.db.read() as conn:
        [payment] = await repository.for_order(conn, order_id)
    return payment.status


def charger_of(payments: Participant, cards: SilentCards, breaker: CircuitBreaker) -> Charger:
    client = ProviderClient(
        "http://provider", timeout=120, transport=httpx.MockTransport(cards.handle), breaker=breaker
    )
    return Charger(
        payments.runtime,
        client,
        concurrency=CONCURRENCY,
        per_customer=PER_CUSTOMER,
        max_attempts=3,
        call_timeout=120,
    )


@contextlib.asynccontextmanager
async def charging(payments: Participant, cards: SilentCards, breaker: CircuitBreaker) -> AsyncIterator[Charger]:
    charger = charger_of(payments, cards, breaker)
    running = asyncio.create_task(charger.run())
    try:
        yield charger
    finally:
        cards.answer.set()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_another_customers_charge_is_made_while_one_customers_charges_hang(payments: Participant) -> None:
    owners: dict[str, str] = {}
    cards = SilentCards(owners)
    # Mallory's many orders first: a charger that takes payments by age alone would fill every
    # place with them and leave Alice's waiting until they time out.
    for _ in range(3 * CONCURRENCY):
        await place(payments, owners, "mallory", "tok_timeout")
    alice = await place(payments, owners, "alice", "tok_visa")
    breaker = CircuitBreaker("provider-bulkhead", failure_threshold=2, min_sources=2)
    async with charging(payments, cards, breaker):
        deadline = time.monotonic() + 60
        while await status_of(payments, alice) is not Status.COMPLETED:
            assert time.monotonic() < deadline, f"Alice's payment is still {await status_of(payments, alice)}"
            await asyncio.sleep(0.05)
        # Charged while every one of Mallory's charges so far is still waiting for an answer.
        assert cards.answered["mallory"] == 0
        assert cards.in_flight["mallory"] == PER_CUSTOMER
        assert cards.most["mallory"] == PER_CUSTOMER


async def test_a_claim_reaches_past_one_customers_many_due_payments(payments: Participant) -> None:
    # More of Mallory's payments are due, oldest, than a claim's first look reads: it still
    # takes only her first few, and Alice's.
    owners: dict[str, str] = {}
    mallory = [await place(payments, owners, "mallory", "tok_visa") for _ in range(10 * CONCURRENCY)]
    alice = await place(payments, owners, "alice", "tok_visa")
    async with payments.db.transaction() as conn:
        taken = await repository.claim_due(
            conn, now=utcnow(), lease=timedelta(minutes=1), limit=3, exclude=set(), per_customer=PER_CUSTOMER
        )
    assert [p.order_id for p in taken] == [*mallory[:PER_CUSTOMER], alice]
    assert not taken.more, "nothing else may be taken: Mallory has her places"


async def test_one_customers_failing_charges_leave_the_breaker_closed_for_the_others(payments: Participant) -> None:
    owners: dict[str, str] = {}
    cards = SilentCards(owners)
    cards.answer.set()  # Mallory's charges fail at once (no answer in time), again and again
    for _ in range(3):
        await place(payments, owners, "mallory", "tok_timeout")
    breaker = CircuitBreaker("provider-bulkhead", failure_threshold=2, min_sources=2)
    async with charging(payments, cards, breaker):
        deadline = time.monotonic() + 60
        while cards.answered["mallory"] < 3 * 2:
            assert time.monotonic() < deadline, f"only {cards.answered['mallory']} of Mallory's attempts made"
            await asyncio.sleep(0.05)
        assert breaker.failures >= 6
        assert breaker.state is BreakerState.CLOSED
        alice = await place(payments, owners, "alice", "tok_visa")

        async def alice_paid() -> bool:
            return await status_of(payments, alice) is Status.COMPLETED

        await eventually(alice_paid, "Alice's payment was never made", 60)
        assert breaker.state is BreakerState.CLOSED


async def test_a_charger_that_stops_has_ended_its_charges_in_flight(payments: Participant) -> None:
    """Stopping cancels the charges waiting for the provider and waits for them to end, so
    none is left to settle (or roll back) once the database is closed."""
    owners: dict[str, str] = {}
    cards = SilentCards(owners)
    cards.ending_turns = 100
    for _ in range(PER_CUSTOMER):
        await place(payments, owners, "mallory", "tok_timeout")
    charger = charger_of(payments, cards, CircuitBreaker("provider-stop", failure_threshold=2, min_sources=2))
    running = asyncio.create_task(charger.run())
    deadline = time.monotonic() + 60
    while cards.in_flight["mallory"] < PER_CUSTOMER:
        assert time.monotonic() < deadline, f"only {cards.in_flight['mallory']} charges in flight"
        await asyncio.sleep(0.05)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert cards.in_flight["mallory"] == 0  # each ended before the charger stopped
    assert cards.answered["mallory"] == PER_CUSTOMER


@pytest.mark.parametrize("db", ["postgres"], indirect=True)  # SQLite has no row locks to skip
async def test_a_charger_that_finds_what_is_due_held_elsewhere_looks_again_soon(payments: Participant) -> None:
    """Another replica's claim holds a due payment for a moment: this charger, with nothing in
    flight that would wake it when it ends, looks again soon rather than at its fallback look."""
    owners: dict[str, str] = {}
    await place(payments, owners, "alice", "tok_visa")
    charger = charger_of(payments, SilentCards(owners), CircuitBreaker("provider-held", failure_threshold=5))
    other = await payments.db.begin_write()
    try:
        await other.execute(sa.select(payments_table.c.id).with_for_update())  # the other replica's page
        look_again = await charger._claim_and_start()
    finally:
        await other.rollback()
        await other.close()
    assert look_again == SOON_S
    await charger.settler.close()
    await charger.client.close()
