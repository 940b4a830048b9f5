"""Replicas of a service start together (`pizzeria up --replicas`, a Deployment of two pods) and
each seeds a new database at its start: on PostgreSQL, where the two look at once, the seed is
made once and neither replica fails (found when the replicas began to start together: the
second kitchen's seed broke on the first's stock and its process exited)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import sqlalchemy as sa

from pizzeria.kit.db import Database
from pizzeria.messaging.tables import metadata as messaging_metadata
from pizzeria.messaging.uow import UnitOfWork
from pizzeria.services.catalog import tables as catalog_tables
from pizzeria.services.catalog.demo_menu import DEMO_MENU
from pizzeria.services.catalog.handlers import seed_demo_menu
from pizzeria.services.delivery import tables as delivery_tables
from pizzeria.services.delivery.domain import DEMO_COURIERS
from pizzeria.services.delivery.handlers import seed_couriers
from pizzeria.services.identity import tables as identity_tables
from pizzeria.services.identity.demo_accounts import DEMO_ACCOUNTS
from pizzeria.services.identity.handlers import seed_demo_accounts
from pizzeria.services.identity.passwords import Passwords
from pizzeria.services.kitchen import tables as kitchen_tables
from pizzeria.services.kitchen.handlers import seed_opening_stock
from pizzeria.services.kitchen.stock import OPENING_STOCK
from pizzeria.services.orders import projection
from pizzeria.services.orders import tables as orders_tables
from tests.support.postgres import two_processes

pytestmark = pytest.mark.postgres

Seed = Callable[[UnitOfWork], Awaitable[bool]]


@pytest.fixture
async def two_replicas() -> AsyncIterator[tuple[Database, Database]]:
    """Two processes' connections to one new PostgreSQL database."""
    async with two_processes("seed") as dbs:
        yield dbs


async def seeded_by_both(dbs: tuple[Database, Database], metadata: sa.MetaData, seed: Seed) -> list[bool]:
    async with dbs[0].transaction() as conn:
        await conn.run_sync(messaging_metadata.create_all)
        await conn.run_sync(metadata.create_all)
    results = await asyncio.gather(*(seed(UnitOfWork(db, source="test")) for db in dbs))
    assert sorted(results) == [False, True], "one replica seeds, the other finds it seeded"
    return results


async def count(db: Database, table: sa.Table) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def test_two_kitchens_starting_together_stock_up_once(two_replicas: tuple[Database, Database]) -> None:
    await seeded_by_both(two_replicas, kitchen_tables.metadata, seed_opening_stock)
    async with two_replicas[0].read() as conn:
        rows = (
            await conn.execute(sa.select(kitchen_tables.ingredients.c.name, kitchen_tables.ingredients.c.on_hand))
        ).all()
    assert dict(rows) == OPENING_STOCK


async def test_two_deliveries_starting_together_hire_the_couriers_once(two_replicas: tuple[Database, Database]) -> None:
    await seeded_by_both(two_replicas, delivery_tables.metadata, seed_couriers)
    assert await count(two_replicas[0], delivery_tables.couriers) == len(DEMO_COURIERS)


async def test_two_catalogs_starting_together_put_the_menu_up_once(two_replicas: tuple[Database, Database]) -> None:
    await seeded_by_both(two_replicas, catalog_tables.metadata, seed_demo_menu)
    assert await count(two_replicas[0], catalog_tables.menu_items) == len(DEMO_MENU)
    assert await count(two_replicas[0], messaging_metadata.tables["outbox"]) == len(DEMO_MENU)  # announced once


async def test_two_identities_starting_together_open_the_demo_accounts_once(
    two_replicas: tuple[Database, Database],
) -> None:
    passwords = Passwords()
    await seeded_by_both(two_replicas, identity_tables.metadata, lambda uow: seed_demo_accounts(uow, passwords))
    assert await count(two_replicas[0], identity_tables.users) == len(DEMO_ACCOUNTS)


async def test_two_orders_starting_together_write_the_views_state_once(two_replicas: tuple[Database, Database]) -> None:
    async with two_replicas[0].transaction() as conn:
        await conn.run_sync(orders_tables.metadata.create_all)
    for db in two_replicas:  # both processes connected already, as at a start
        await count(db, orders_tables.projections)

    async def starts(db: Database) -> None:
        async with db.transaction() as conn:
            await projection.ensure_state(conn)

    for _ in range(5):  # a new database each time
        async with two_replicas[0].transaction() as conn:
            await conn.execute(orders_tables.projections.delete())
        await asyncio.gather(*(starts(db) for db in two_replicas))
        assert await count(two_replicas[0], orders_tables.projections) == 1
    async with two_replicas[1].transaction() as conn:
        assert await projection.request_rebuild(conn) == 2  # the row stands, generation 1
