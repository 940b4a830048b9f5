"""Which database failures a retry can get past (answered 503, retried) and which it cannot
(a bug or bad input): decided by the error's SQLSTATE on a real PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from pizzeria.kit.db import is_outage, is_transient_error

pytestmark = pytest.mark.postgres


async def raised_by_postgres(pg_url: str, sqlstate: str) -> sa.exc.DBAPIError:
    """The error the driver raises when the server fails a statement with `sqlstate`."""
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(sa.exc.DBAPIError) as raised:
                raise_it = f"RAISE EXCEPTION USING ERRCODE = '{sqlstate}', MESSAGE = 'raised by the test'"
                await conn.execute(sa.text(f"DO $$ BEGIN {raise_it}; END $$"))
    finally:
        await engine.dispose()
    return raised.value


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [
        ("53300", True),  # too many clients already: the server is full, not broken
        ("57P03", True),  # cannot connect now: starting up or shutting down
        ("40001", True),  # serialization failure
        ("40P01", True),  # deadlock detected
        ("23505", False),  # unique violation: retrying changes nothing
        ("22012", False),  # division by zero: a bug
    ],
)
async def test_a_database_error_is_transient_by_its_sqlstate(pg_url: str, sqlstate: str, transient: bool) -> None:
    assert is_transient_error(await raised_by_postgres(pg_url, sqlstate)) is transient


@pytest.mark.parametrize(
    ("sqlstate", "outage"),
    [
        ("57P03", True),  # cannot connect now: waiting gets past it
        ("40P01", True),  # deadlock detected: the other transaction ends
        ("57014", False),  # cancelled by its statement timeout: it would time out again
        ("23505", False),  # unique violation
    ],
)
async def test_an_outage_worth_waiting_out_is_told_by_its_sqlstate(pg_url: str, sqlstate: str, outage: bool) -> None:
    assert is_outage(await raised_by_postgres(pg_url, sqlstate)) is outage
