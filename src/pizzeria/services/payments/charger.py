"""The charger: settles open payments with the provider, many at a time, a few per customer.

At most `concurrency` provider calls are in flight, and at most `per_customer` of them for one
customer (a bulkhead): one customer's many payments, or payments that never get an answer,
cannot hold every place while other customers' payments wait.

Payments are claimed with a lease, charged with the payment id as the idempotency key, and
settled in a transaction that emits the outcome, with the other outcomes that came in meanwhile
(settling.Settler). A crash anywhere leaves the payment open with a lease that runs out; the
next claim charges again with the same key, and the provider answers with the original charge:
no card is charged twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from functools import partial
from uuid import UUID

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit import tracing
from pizzeria.kit.clock import utcnow
from pizzeria.kit.logging import get_logger
from pizzeria.kit.loops import BackgroundLoop, StepResult
from pizzeria.kit.resilience import BreakerState, CircuitOpen
from pizzeria.services.payments import handlers, repository
from pizzeria.services.payments.domain import Payment
from pizzeria.services.payments.provider import CardDeclined, ProviderClient, ProviderRejected, ProviderUnavailable
from pizzeria.services.payments.settling import Settler

log = get_logger(__name__)

#: With nothing due, the charger sleeps until the first piece of work will be (a retry, a lease
#: that runs out) or it is woken (a charge or refund committed here, a call that ended); it looks
#: anyway this often, for work nothing here woke it for (another replica's, say).
LOOK_AGAIN_S = 5.0
#: How soon it looks again when work is due that it could not take and no call of its own will
#: end to wake it (another replica's claim holds the rows for a moment).
SOON_S = 0.1


def _until(due: datetime | None) -> float | None:
    """Seconds until `due` (0 if it has come), None for never."""
    return None if due is None else max((due - utcnow()).total_seconds(), 0.0)


class Charger:
    """Background worker of the payments service."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        client: ProviderClient,
        *,
        concurrency: int,
        max_attempts: int,
        call_timeout: float,
        per_customer: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.concurrency = concurrency
        self.per_customer = per_customer
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=call_timeout * 2 + 5)
        self._inflight: dict[UUID, asyncio.Task[None]] = {}
        self._customers: Counter[str] = Counter()  # payments in flight, by customer
        self.settler = Settler(runtime.uow)
        # The last claim left more due than it could take: the next one need not look first.
        self._more_due = False
        # The last look left work due that it could not take (places full, or in flight here):
        # a call that ends wakes the loop to take it. Else only new work does (a charge or
        # refund committed, a retry scheduled) or the time the first piece of work will be due.
        self._left_due = False
        self._loop = BackgroundLoop("charger", self._claim_and_start, interval=LOOK_AGAIN_S, max_backoff=1.0)

    def wake(self) -> None:
        self._loop.wake()

    async def run(self) -> None:
        try:
            await self._loop.run()
        finally:
            inflight = list(self._inflight.values())
            for task in inflight:
                task.cancel()
            # Ended before the settler and the database go: a settlement cancelled mid-way
            # rolls back while its connection is still there (its lease runs out as ever).
            await asyncio.gather(*inflight, return_exceptions=True)
            await self.settler.close()
            await self.client.close()

    async def _claim_and_start(self) -> StepResult:
        """Start charging what is due, as many at a time as `concurrency` allows."""
        state = self.client.breaker.state
        if state is BreakerState.OPEN:
            return 0.2  # the provider is down: do not burn attempts
        free = self.concurrency - len(self._inflight)
        probing = state is BreakerState.HALF_OPEN
        if probing:
            free = 0 if self._inflight else 1  # one probe at a time, a fresh charge first
        if free <= 0:
            self._left_due = True  # whatever woke it waits for a place: a call that ends looks
            return None
        claimed, look_again = await self._claim(free, fresh_first=probing)
        for payment in claimed:
            task = asyncio.create_task(self._settle(payment), name=f"charge-{payment.id}")
            self._inflight[payment.id] = task
            self._customers[payment.customer_id] += 1
            task.add_done_callback(partial(self._done, payment.id, payment.customer_id))
        return look_again

    async def step(self, now: datetime) -> int:
        """One pass without the loop (tests drive time): claim what is due at `now` and settle
        it, one payment after another (nothing in flight at once: no bulkhead to keep)."""
        async with self.runtime.db.transaction() as conn:
            claimed = await repository.claim_due(conn, now=now, lease=self.lease, limit=self.concurrency, exclude=set())
        for payment in claimed:
            await self._settle(payment)
        return len(claimed)

    async def _claim(self, limit: int, *, fresh_first: bool = False) -> tuple[list[Payment], StepResult]:
        """The payments claimed, and when to look again: None when only a wake-up can bring
        more (no work, or the places are full), else in how many seconds the first piece of
        work left will be due."""
        if not self._more_due:
            # Usually nothing is due: no write lock for that.
            async with self.runtime.db.read() as conn:
                wait = _until(await repository.next_due(conn))
            if wait is None or wait > 0:
                self._left_due = False
                return [], wait
        async with self.runtime.db.transaction() as conn:
            claimed = await repository.claim_due(
                conn,
                now=utcnow(),
                lease=self.lease,
                limit=limit,
                exclude=set(self._inflight),
                fresh_first=fresh_first,
                per_customer=self.per_customer,
                busy=self._customers,
            )
            self._more_due = claimed.more
            # More due than it could take, or when the rest will be due (a retry, a lease that
            # runs out).
            wait = 0.0 if claimed.more else _until(await repository.next_due(conn))
        # What is due and was left waits for a call here to end, which wakes the loop. With none
        # here to end (what is due is locked by another replica's claim, or came due since the
        # claim read), look again soon.
        self._left_due = wait == 0
        if self._left_due and not claimed and not self._inflight:
            return claimed, SOON_S
        return claimed, wait or None

    async def _give_up(self, payment: Payment) -> None:
        """Stop trying to charge, but only once the provider confirms it took nothing: an
        attempt whose answer was lost may have gone through."""
        try:
            taken = await self.client.find_charge(str(payment.id), customer=payment.customer_id)
        except (ProviderUnavailable, CircuitOpen):
            return  # cannot tell yet: the next attempt asks again
        if taken is None:
            await handlers.settle_failed(self.settler, payment.id, "provider_unavailable")
        else:
            await self._complete(payment, taken.charge_id)

    def _done(self, payment_id: UUID, customer_id: str, _task: object = None) -> None:
        self._inflight.pop(payment_id, None)
        self._customers[customer_id] -= 1
        if self._customers[customer_id] <= 0:
            del self._customers[customer_id]
        if self._left_due:  # its place can take what was left
            self._loop.wake()

    async def _settle(self, payment: Payment) -> None:
        try:
            # Part of the order's trace: what this attempt emits follows the command that asked for it.
            with tracing.span(
                "payments charge",
                parent=payment.traceparent or "",
                attributes={
                    "payment.id": str(payment.id),
                    "order.id": str(payment.order_id),
                    "payment.attempt": payment.attempts + 1,
                },
            ):
                await self._charge(payment)
        except Exception:
            # The database failed while settling: the lease runs out and the charge is retried
            # with the same idempotency key.
            log.exception("settling a payment failed", payment_id=str(payment.id))

    async def _charge(self, payment: Payment) -> None:
        settler = self.settler
        try:
            if payment.needs_refund:
                refund_id = await self.client.refund(
                    idempotency_key=f"{payment.id}:refund",
                    charge_id=payment.provider_charge_id or "",
                    amount=payment.amount,
                    customer=payment.customer_id,
                )
                await handlers.settle_refunded(settler, payment.id, refund_id)
                return
            if payment.cancel_requested:
                # Voiding: but an earlier attempt may have gone through without an answer.
                taken = await self.client.find_charge(str(payment.id), customer=payment.customer_id)
                if taken is None:
                    await handlers.settle_voided(settler, payment.id)
                else:
                    await self._complete(payment, taken.charge_id)  # then refunded
                return
            result = await self.client.charge(
                idempotency_key=str(payment.id),
                amount=payment.amount,
                currency=payment.currency,
                source=payment.token,
                order_id=str(payment.order_id),
                customer=payment.customer_id,
            )
        except CardDeclined:
            await handlers.settle_failed(settler, payment.id, "card_declined")
        except ProviderRejected as exc:
            log.error("provider rejected a request", payment_id=str(payment.id), error=str(exc))
            if payment.needs_refund:
                await handlers.schedule_retry(settler, payment.id, attempt=payment.attempts + 1)
                self.wake()
            else:
                await handlers.settle_failed(settler, payment.id, "provider_rejected")
        except CircuitOpen:
            await handlers.schedule_retry(settler, payment.id, attempt=None)
            self.wake()  # to sleep until its retry is due
        except ProviderUnavailable as exc:
            attempts = await handlers.schedule_retry(settler, payment.id, attempt=payment.attempts + 1)
            self.wake()
            log.warning(
                "provider unavailable; will retry", payment_id=str(payment.id), attempts=attempts, error=str(exc)
            )
            # A charge gives up after a few attempts; a refund never does.
            if attempts >= self.max_attempts and not payment.needs_refund and not payment.cancel_requested:
                await self._give_up(payment)
        else:
            await self._complete(payment, result.charge_id)

    async def _complete(self, payment: Payment, charge_id: str) -> None:
        """The provider took the charge: settle it; if it was cancelled meanwhile, its refund
        is due now."""
        settled = await self.settler.settle(payment.id, handlers.completing(charge_id))
        if settled is not None and settled.needs_refund:
            self.wake()
