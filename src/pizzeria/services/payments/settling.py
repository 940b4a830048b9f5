"""Settling payments in sets: the outcomes of provider calls that finish close together are
written in one transaction (a group commit).

An outcome is queued and its caller waits; a writer (kit/groupcommit.GroupCommit) takes whatever
has queued by the time it gets to it, loads (and locks) every payment of that set that nobody
holds in one query, applies each outcome's change in memory (the rules stay in the domain),
writes the changed payments back in one statement, emits every event and commits once. Outcomes
that arrive meanwhile make the next set; those whose payment another transaction holds are
settled alone by their callers.

If a set's transaction fails, each of its outcomes is tried again alone, by its caller: one bad
payment cannot hold up, roll back or lose its neighbours. One that still fails is left to its
lease, which runs out: the next claim charges again with the same idempotency key, and the
provider answers with the charge it made (no card is charged twice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from uuid import UUID

from pizzeria.kit import failpoints
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import Conflict
from pizzeria.kit.groupcommit import ALONE, Alone, GroupCommit, Member
from pizzeria.messaging.message import Message
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.payments import metrics, repository
from pizzeria.services.payments.domain import Payment

#: Changes a payment (through its domain methods) and returns the events to emit; raises
#: Conflict, before changing anything, if the payment is no longer in a state it applies to.
Change = Callable[[Payment, datetime], list[Message]]

#: Passed by every set (and every outcome tried alone) just before its commit.
BEFORE_COMMIT = "payments.settle.before_commit"


@dataclass(frozen=True, eq=False)
class _Outcome:
    payment_id: UUID
    change: Change


class Settler:
    """Applies outcomes to their payments, in sets, one set at a time."""

    def __init__(self, uow: Callable[[], UnitOfWork]) -> None:
        self._uow = uow
        self._sets = GroupCommit(self._write_set, self._settle_alone, name="payments.settle")

    async def settle(self, payment_id: UUID, change: Change) -> Payment | None:
        """Apply `change` to the payment and commit it with the events it returns; the payment
        as committed, or None if there was nothing to do any more (it is gone, or no longer in
        the state the outcome applies to: a holder whose lease ran out got there first). Raises
        what failed if it could not be written."""
        return await self._sets.submit(_Outcome(payment_id, change))

    async def close(self) -> None:
        """Stop writing (what is not written yet is left to its lease)."""
        await self._sets.close()

    async def _write_set(self, batch: Sequence[Member[_Outcome]]) -> list[Payment | Alone | None]:
        settled, held = await self._in_one_transaction(batch)
        # Another transaction holds these (a consumer's run): each is settled alone by its
        # caller, waiting for it, beside the sets that go on meanwhile.
        return [ALONE if m.item.payment_id in held else p for m, p in zip(batch, settled, strict=True)]

    async def _settle_alone(self, outcome: _Outcome) -> Payment | None:
        [payment], _ = await self._in_one_transaction([Member(outcome)])  # one payment alone is waited for
        return payment

    async def _in_one_transaction(self, batch: Sequence[Member[_Outcome]]) -> tuple[list[Payment | None], set[UUID]]:
        """Each outcome's payment as committed (None where there was nothing to do), and the
        payments a set of more than one could not take (another transaction holds them, or
        they are gone), which it left to be settled alone."""
        uow = self._uow()
        async with uow:
            ids = {m.item.payment_id for m in batch}
            loaded = await repository.load_many(uow.conn, ids)
            # A set did not wait for what it could not take: those are settled alone (which finds
            # a payment that is gone, too). One payment alone was waited for.
            held = ids - loaded.keys() if len(ids) > 1 else set()
            now = utcnow()
            settled: list[Payment | None] = []
            emitted: list[Message] = []
            for member in batch:
                payment = loaded.get(member.item.payment_id)
                if payment is not None:
                    try:
                        events = member.item.change(payment, now)
                    except Conflict:
                        payment = None  # settled already (by this set's earlier outcome, too)
                    else:
                        repository.settle_at_commit(uow, payment)
                        for event in events:
                            member.run(uow.emit, event)  # in its caller's trace
                        emitted.extend(events)
                settled.append(payment)
            failpoints.hit(BEFORE_COMMIT)
            uow.after_commit(partial(metrics.settled, emitted))
            await uow.commit()
        return settled, held
