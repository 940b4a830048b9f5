"""The inbox on SQLite and PostgreSQL: a message id is claimed once per consumer group, even
by deliveries racing each other, and the claim lives or dies with the handler's effects."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import sqlalchemy as sa

from pizzeria.kit.db import Database
from pizzeria.messaging.tables import inbox
from pizzeria.messaging.uow import UnitOfWork
from tests.integration.conftest import widgets


def uow(db: Database) -> UnitOfWork:
    return UnitOfWork(db, source="/pizzeria/test")


async def handle(db: Database, group: str, message_id: str, effect_id: str) -> bool:
    """What the consumer runner does: claim, apply the effect, commit. True if it took effect."""
    async with uow(db) as work:
        if not await work.claim(group, message_id):
            return False
        await work.conn.execute(widgets.insert().values(id=effect_id, owner=group, n=1))
        await work.commit()
        return True


async def widget_count(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(widgets))).scalar_one())


async def test_a_redelivered_message_has_no_second_effect(db: Database) -> None:
    assert await handle(db, "payments", "m1", "e1") is True
    assert await handle(db, "payments", "m1", "e2") is False
    assert await widget_count(db) == 1


async def test_each_group_claims_the_same_message_for_itself(db: Database) -> None:
    assert await handle(db, "payments", "m1", "e1") is True
    assert await handle(db, "notifications", "m1", "e2") is True
    assert await widget_count(db) == 2


async def test_a_rolled_back_handler_leaves_the_message_unclaimed(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with uow(db) as work:
            assert await work.claim("payments", "m1")
            raise RuntimeError("handler failed")
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(inbox))).scalar_one() == 0
    assert await handle(db, "payments", "m1", "e1") is True  # the retry still takes effect


async def test_racing_deliveries_of_one_message_take_effect_once(db: Database) -> None:
    async def attempt(i: int) -> bool:
        with contextlib.suppress(sa.exc.IntegrityError):
            return await handle(db, "payments", "dup", f"effect-{i}")
        return False

    results = await asyncio.gather(*(attempt(i) for i in range(10)))
    assert results.count(True) == 1
    assert await widget_count(db) == 1
