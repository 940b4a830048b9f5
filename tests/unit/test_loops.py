"""The autopilots' step (`move_on`): what is due goes in one call, and the answer says when to
look again."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from pizzeria.kit.clock import utcnow
from pizzeria.kit.loops import BackgroundLoop, move_on, wait_for_event

STAGE = timedelta(seconds=10)


async def test_every_due_item_is_handed_over_at_once_and_the_next_look_is_when_the_next_is_due() -> None:
    now = utcnow()
    under_way = [
        ("a", now - timedelta(seconds=30)),
        ("b", now - timedelta(seconds=11)),
        ("c", now - timedelta(seconds=4)),
    ]
    calls: list[list[str]] = []

    async def advance(due: list[tuple[str, object]]) -> None:
        calls.append([item for item, _ in due])

    wait = await move_on(under_way, STAGE, advance)
    assert calls == [["a", "b"]]
    assert isinstance(wait, float)
    assert 0 < wait <= 6


async def test_when_every_listed_item_was_due_it_looks_again_at_once() -> None:
    now = utcnow()
    calls: list[int] = []

    async def advance(due: list[tuple[str, object]]) -> None:
        calls.append(len(due))

    assert await move_on([("a", now - STAGE), ("b", now - STAGE)], STAGE, advance) is True
    assert calls == [2]


async def test_nothing_due_waits_for_the_first_and_nothing_under_way_waits_for_a_wake_up() -> None:
    now = utcnow()

    async def advance(due: list[tuple[str, object]]) -> None:
        raise AssertionError("nothing is due")

    wait = await move_on([("a", now - timedelta(seconds=2))], STAGE, advance)
    assert isinstance(wait, float)
    assert 0 < wait <= 8
    assert await move_on([], STAGE, advance) is None


async def test_a_wait_cancelled_while_its_event_is_set_ends_cancelled() -> None:
    """The stop of a loop that is being woken at that moment (`asyncio.wait_for` before Python
    3.12 returned as if woken, and the task went on as if never stopped)."""
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_for_event(event, 30))
    await asyncio.sleep(0)  # it waits
    event.set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_background_loop_stopped_while_it_is_woken_stops() -> None:
    steps = 0

    async def step() -> None:
        nonlocal steps
        steps += 1

    loop = BackgroundLoop("test", step, interval=30)
    running = asyncio.create_task(loop.run())
    while steps == 0:  # its first step has run; now it waits for the interval or a wake-up
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    loop.wake()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 5)


async def test_a_wait_for_an_event_says_whether_it_came() -> None:
    event = asyncio.Event()
    assert await wait_for_event(event, 0.01) is False
    event.set()
    assert await wait_for_event(event, 30) is True
