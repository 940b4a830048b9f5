"""Settling payments in sets: the outcomes of provider calls that finish close together are
written in one transaction (a group commit).

An outcome is queued and its caller waits; a writer takes whatever has queued by the time it
gets to it, loads (and locks) every payment of that set in one query, applies each outcome's
change in memory (the rules stay in the domain), writes the changed payments back in one
statement, emits every event and commits once. Outcomes that arrive meanwhile make the next set.

If a set's transaction fails, each of its outcomes is tried again alone: one bad payment cannot
hold up, roll back or lose its neighbours. One that still fails is left to its lease, which runs
out: the next claim charges again with the same idempotency key, and the provider answers with
the charge it made (no card is charged twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from uuid import UUID

from pizzeria.kit import failpoints
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import Conflict
from pizzeria.kit.logging import get_logger
from pizzeria.messaging.message import Message
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.payments import metrics, repository
from pizzeria.services.payments.domain import Payment

log = get_logger(__name__)

#: Changes a payment (through its domain methods) and returns the events to emit; raises
#: Conflict, before changing anything, if the payment is no longer in a state it applies to.
Change = Callable[[Payment, datetime], list[Message]]

#: Passed by every set (and every outcome tried alone) just before its commit.
BEFORE_COMMIT = "payments.settle.before_commit"


@dataclass(eq=False)
class _Outcome:
    payment_id: UUID
    change: Change
    #: The caller's context (its trace, correlation and causation), which the events carry.
    context: contextvars.Context
    done: asyncio.Future[Payment | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    #: Settled alone, by a task of its own (its payment was held when its set was written).
    handed_on: bool = False


class Settler:
    """Applies outcomes to their payments, in sets, one set at a time."""

    def __init__(self, uow: Callable[[], UnitOfWork]) -> None:
        self._uow = uow
        self._queue: list[_Outcome] = []
        self._writer: asyncio.Task[None] | None = None
        self._alone: set[asyncio.Task[None]] = set()  # outcomes whose payment a set found held

    async def settle(self, payment_id: UUID, change: Change) -> Payment | None:
        """Apply `change` to the payment and commit it with the events it returns; the payment
        as committed, or None if there was nothing to do any more (it is gone, or no longer in
        the state the outcome applies to: a holder whose lease ran out got there first). Raises
        what failed if it could not be written."""
        outcome = _Outcome(payment_id, change, contextvars.copy_context())
        self._queue.append(outcome)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_sets(), name="payments-settle")
        return await outcome.done

    async def close(self) -> None:
        """Stop writing (what is not written yet is left to its lease)."""
        for task in [self._writer, *self._alone]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for outcome in self._queue:
            outcome.done.cancel()
        self._queue.clear()

    async def _write_sets(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._write(batch)
            finally:
                for outcome in batch:  # cancelled mid-set: nobody waits for ever
                    if not outcome.done.done() and not outcome.handed_on:
                        outcome.done.cancel()

    async def _write(self, batch: list[_Outcome]) -> None:
        try:
            settled, held = await self._in_one_transaction(batch)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            log.warning("settling a set of payments failed; settling each alone", size=len(batch), error=repr(exc))
            for outcome in batch:
                await self._settle_alone(outcome)
            return
        for outcome, payment in zip(batch, settled, strict=True):
            if outcome.payment_id in held:
                # Another transaction holds it (a consumer's run): settled alone, waiting for
                # it, beside the sets that go on meanwhile.
                outcome.handed_on = True
                task = asyncio.create_task(self._settle_alone(outcome), name="payments-settle-alone")
                self._alone.add(task)
                task.add_done_callback(self._alone.discard)
            else:
                _resolve(outcome, payment)

    async def _settle_alone(self, outcome: _Outcome) -> None:
        try:
            [alone], _ = await self._in_one_transaction([outcome])  # one payment alone is waited for
        except Exception as exc:
            _fail(outcome, exc)
        else:
            _resolve(outcome, alone)
        finally:
            if not outcome.done.done():  # cancelled: nobody waits for ever
                outcome.done.cancel()

    async def _in_one_transaction(self, batch: list[_Outcome]) -> tuple[list[Payment | None], set[UUID]]:
        """Each outcome's payment as committed (None where there was nothing to do), and the
        payments a set of more than one could not take (another transaction holds them, or
        they are gone), which it left to be settled alone."""
        uow = self._uow()
        async with uow:
            ids = {o.payment_id for o in batch}
            loaded = await repository.load_many(uow.conn, ids)
            # A set did not wait for what it could not take: those are settled alone (which finds
            # a payment that is gone, too). One payment alone was waited for.
            held = ids - loaded.keys() if len(ids) > 1 else set()
            now = utcnow()
            settled: list[Payment | None] = []
            emitted: list[Message] = []
            for outcome in batch:
                payment = loaded.get(outcome.payment_id)
                if payment is not None:
                    try:
                        events = outcome.change(payment, now)
                    except Conflict:
                        payment = None  # settled already (by this set's earlier outcome, too)
                    else:
                        repository.settle_at_commit(uow, payment)
                        for event in events:
                            outcome.context.run(uow.emit, event)
                        emitted.extend(events)
                settled.append(payment)
            failpoints.hit(BEFORE_COMMIT)
            uow.after_commit(partial(metrics.settled, emitted))
            await uow.commit()
        return settled, held


def _resolve(outcome: _Outcome, payment: Payment | None) -> None:
    if not outcome.done.done():  # its caller may have been cancelled
        outcome.done.set_result(payment)


def _fail(outcome: _Outcome, exc: Exception) -> None:
    if not outcome.done.done():
        outcome.done.set_exception(exc)
