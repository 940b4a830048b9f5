"""The session lock (`kit.db.SessionLock`) on a real PostgreSQL: one holder at a time, let go
when the holder releases it or its session ends, and, with an idle bound, when the holder went
quiet without closing its connection (the server would otherwise keep it for hours)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from pizzeria.kit.db import Database, SessionLock
from tests.support.polling import eventually
from tests.support.postgres import VANISHED_PEER_BOUNDS, peer_bounds, two_processes


@pytest.fixture
async def processes() -> AsyncIterator[tuple[Database, Database]]:
    async with two_processes("pzlock") as dbs:
        yield dbs


async def test_one_holder_at_a_time_until_it_lets_go(processes: tuple[Database, Database]) -> None:
    first, second = (SessionLock(db, "the-lock") for db in processes)
    assert await first.acquire()
    assert await first.acquire(), "taking it again is holding it"
    assert not await second.acquire()
    assert await first.holds()
    await first.release()
    assert not first.held
    assert await second.acquire(), "released, and still held by a session in the pool"
    assert not await first.acquire()
    await second.release()


async def test_a_holder_gone_quiet_is_let_go_by_the_server_after_its_idle_bound(
    processes: tuple[Database, Database],
) -> None:
    quiet = SessionLock(processes[0], "the-lock", idle_timeout_s=0.5)
    other = SessionLock(processes[1], "the-lock")
    assert await quiet.acquire()
    assert not await other.acquire()
    # The holder asks nothing more (its host died): the server ends its session after the bound.
    await eventually(other.acquire, "the lock of a silent holder was never let go", 30)
    assert not await quiet.holds(), "the holder still believed it held the lock"
    await other.release()


async def test_a_holder_that_checks_within_its_bound_keeps_the_lock(processes: tuple[Database, Database]) -> None:
    holder = SessionLock(processes[0], "the-lock", idle_timeout_s=1.0)
    other = SessionLock(processes[1], "the-lock")
    assert await holder.acquire()
    deadline = time.monotonic() + 3  # three bounds' worth of checks, each well within one
    while time.monotonic() < deadline:
        assert await holder.holds()
        assert not await other.acquire()
        await asyncio.sleep(0.2)
    await holder.release()


async def test_the_lock_session_bounds_how_long_the_server_waits_on_a_vanished_holder(
    processes: tuple[Database, Database],
) -> None:
    """A holder whose host died answers nothing: without bounds of its own the server would wait
    for its operating system's TCP keepalive (two hours by default) before letting the lock go.
    (The host's death itself cannot be staged on loopback without a packet filter; the bounds
    are the server's to apply, so the test reads them from the session.)"""
    holder = SessionLock(processes[0], "the-lock")
    assert await holder.acquire()
    try:
        assert holder._conn is not None
        assert await peer_bounds(holder._conn) == VANISHED_PEER_BOUNDS
    finally:
        await holder.release()
