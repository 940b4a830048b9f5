"""The kitchen on PostgreSQL, where a saga command and the autopilot may act on one ticket at
the same moment, each in its own transaction: whichever decides first, the other sees what it
decided. (Found by the 30-minute soak: a customer's cancel read a ticket as queued while the
autopilot started cooking it; both committed, the order stayed `preparing` with its ticket
cancelled.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import asyncpg
import pytest

from pizzeria.contracts.kitchen import CancelTicket, TicketCancelRefused, TicketStarted
from pizzeria.kit.clock import utcnow
from pizzeria.services.kitchen import repository
from pizzeria.services.kitchen.handlers import advance_tickets, build_handlers
from pizzeria.services.kitchen.tables import metadata
from tests.support.participant import HeldCommit, Participant, decode, on_postgres
from tests.support.polling import eventually
from tests.support.postgres import ADMIN_DSN
from tests.unit.test_kitchen import OPENING, RECIPES, queued_ticket, ticket_of

pytestmark = pytest.mark.postgres


@pytest.fixture
async def kitchen() -> AsyncIterator[Participant]:
    async with on_postgres(metadata, build_handlers(lambda: None), service="kitchen") as participant:
        async with participant.db.transaction() as conn:
            for item_id, recipe in RECIPES.items():
                await repository.apply_recipe(conn, item_id, "pizza", recipe, 1)
            for name, amount in OPENING.items():
                await repository.set_on_hand(conn, name, amount, utcnow())
        yield participant


async def waiting_for_a_lock(database: str, timeout: float = 10) -> None:
    """Until some session of `database` waits for a row lock."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        # A row lock is waited for as the holder's transaction (pg_locks: no database).
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = $1"
        await eventually(lambda: conn.fetchval(query, database), "nobody waited for the lock", timeout, every=0.02)
    finally:
        await conn.close()


async def test_a_cancel_that_comes_while_the_autopilot_starts_the_ticket_is_refused(kitchen: Participant) -> None:
    order_id = uuid4()
    ticket_id = await queued_ticket(kitchen, order_id)
    queued = await ticket_of(kitchen, order_id)
    database = kitchen.db.url.rsplit("/", 1)[1].split("?", 1)[0]

    # The autopilot starts cooking the ticket, and has not committed yet when the cancel comes.
    autopilot = kitchen.uow()
    held = HeldCommit(autopilot)  # its transaction stays open between its move and its commit

    async def autopilot_moves() -> int:
        return await advance_tickets(autopilot, [(ticket_id, queued["updated_at"])])

    moving = asyncio.create_task(autopilot_moves())
    await asyncio.wait_for(held.reached.wait(), 10)
    cancelling = asyncio.create_task(kitchen.send(CancelTicket(order_id=order_id)))
    await waiting_for_a_lock(database)  # the cancel waits for the autopilot's decision
    held.release.set()
    assert await moving == 1
    replies = await cancelling

    assert replies == [TicketCancelRefused(order_id=order_id, status="preparing")]
    assert (await ticket_of(kitchen, order_id))["status"] == "preparing"
    assert any(isinstance(m, TicketStarted) for m in [decode(e) for e in autopilot.emitted])
