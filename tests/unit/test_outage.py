"""Which failures a consumer waits out (kit.db.is_outage) on SQLite and without a database: a
locked database, a refused connection; not a missing table or a missing file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from pizzeria.kit.db import Database, is_outage, is_transient_error


async def test_on_sqlite_only_a_locked_database_is_an_outage(tmp_path: Path) -> None:
    """SQLite reports a missing table as an OperationalError, as it does a locked database:
    only the second is worth waiting for."""
    path = tmp_path / "x.db"
    db = Database(f"sqlite:///{path}")
    try:
        async with db.transaction() as conn:
            await conn.execute(sa.text("create table t (x int)"))
        async with db.read() as conn:
            with pytest.raises(sa.exc.OperationalError) as missing:
                await conn.execute(sa.text("select * from no_such_table"))
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("begin immediate")  # another process holds the write lock
            with pytest.raises(sa.exc.OperationalError) as locked:
                await db.begin_write(timeout=0.1)
        finally:
            holder.close()
    finally:
        await db.dispose()
    assert is_transient_error(missing.value)
    assert is_transient_error(locked.value)
    assert not is_outage(missing.value)
    assert is_outage(locked.value)
    assert is_outage(ConnectionRefusedError("refused"))
    assert is_outage(TimeoutError())
    assert not is_outage(FileNotFoundError("var/orders.db"))
