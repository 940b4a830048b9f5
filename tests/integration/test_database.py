"""The database wrapper on SQLite and PostgreSQL: what it counts, and reads that see commits."""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client import REGISTRY as METRICS

from pizzeria.kit.db import Database
from tests.integration.conftest import widgets


def counted() -> tuple[float, float]:
    return (
        METRICS.get_sample_value("pizzeria_db_statements_total") or 0.0,
        METRICS.get_sample_value("pizzeria_db_transactions_total") or 0.0,
    )


async def test_statements_and_commits_are_counted(db: Database) -> None:
    statements, commits = counted()
    async with db.transaction() as conn:
        await conn.execute(widgets.insert(), [{"id": f"w{n}", "owner": "o", "n": n} for n in range(3)])
        await conn.execute(sa.update(widgets).where(widgets.c.id == "w1").values(n=10))
    after_statements, after_commits = counted()
    assert after_statements - statements >= 2
    assert after_commits - commits == 1
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.sum(widgets.c.n)))).scalar_one() == 12
    assert counted()[0] > after_statements


async def test_a_read_sees_what_was_committed_before_each_statement(db: Database) -> None:
    async with db.read() as reader:
        assert (await reader.execute(sa.select(sa.func.count()).select_from(widgets))).scalar_one() == 0
        async with db.transaction() as writer:
            await writer.execute(widgets.insert().values(id="late", owner="o", n=1))
        seen = (await reader.execute(sa.select(sa.func.count()).select_from(widgets))).scalar_one()
    # PostgreSQL reads are read committed (a snapshot per statement); SQLite keeps one snapshot
    # for the whole read.
    assert seen == (1 if db.is_postgres else 0)
