"""The autopilots' step (`move_on`): what is due goes in one call, and the answer says when to
look again."""

from __future__ import annotations

from datetime import timedelta

from pizzeria.kit.clock import utcnow
from pizzeria.kit.loops import move_on

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
