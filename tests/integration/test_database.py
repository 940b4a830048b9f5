"""The database wrapper on SQLite and PostgreSQL: what it counts, and reads that see commits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY as METRICS

from pizzeria.kit.db import Database, one_of
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


_OWNED_BY = sa.select(widgets.c.id).where(one_of(widgets.c.owner, "owners")).order_by(widgets.c.id)


async def test_one_of_takes_any_number_of_values_in_one_statement_text(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute(widgets.insert(), [{"id": f"w{n}", "owner": f"o{n % 3}", "n": n} for n in range(6)])
    texts: set[str] = set()

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        texts.add(statement)

    sa.event.listen(db.writer.sync_engine, "before_cursor_execute", seen)
    try:
        async with db.read() as conn:
            found = {
                str(owners): [r.id for r in await conn.execute(_OWNED_BY, {"owners": owners})]
                for owners in (["o1"], ("o0", "o2"), {"o0", "o1", "o2", "nobody"}, [])
            }
    finally:
        sa.event.remove(db.writer.sync_engine, "before_cursor_execute", seen)
    assert list(found.values()) == [["w1", "w4"], ["w0", "w2", "w3", "w5"], [f"w{n}" for n in range(6)], []]
    if db.is_postgres:  # one text, prepared once, whatever the number of values
        assert len(texts) == 1


async def test_a_table_named_only_by_one_of_is_in_from(db: Database) -> None:
    """As with `IN`, the column's table is what the statement reads, even when nothing else
    names it."""
    async with db.transaction() as conn:
        await conn.execute(widgets.insert(), [{"id": f"w{n}", "owner": f"o{n % 3}", "n": n} for n in range(6)])
    counted = sa.select(sa.func.count()).where(one_of(widgets.c.owner, "owners"))
    async with db.read() as conn:
        assert (await conn.execute(counted, {"owners": ["o0", "o1"]})).scalar_one() == 4


@pytest.mark.parametrize("ending", ["done", "failed"])
async def test_a_reads_end_never_yields_so_no_cancellation_lands_in_it(db: Database, ending: str) -> None:
    """A read closes its connection itself, unshielded (a shielded close costs a task a read).
    That is safe only while its end (commit or rollback, and the close) never suspends: a task
    cancelled there would leave the connection out of the pool. Driven by hand, the end runs
    to its finish in one step, whether the block ended well or with an exception, and the
    connection is back in the pool."""
    pool: Any = db.reader.pool
    block = db.read()
    conn = await block.__aenter__()
    assert (await conn.execute(sa.select(sa.func.count()).select_from(widgets))).scalar_one() == 0
    assert pool.checkedout() == 1
    failure = asyncio.CancelledError()
    end = block.__aexit__(None, None, None) if ending == "done" else block.__aexit__(type(failure), failure, None)
    with pytest.raises(StopIteration) as finished:  # (if it suspends, "DID NOT RAISE")
        end.send(None)
    assert not finished.value.value  # a failure goes on up: it is not swallowed
    assert pool.checkedout() == 0
    async with db.read() as conn:  # and the pool still serves
        assert (await conn.execute(sa.select(sa.func.count()).select_from(widgets))).scalar_one() == 0
