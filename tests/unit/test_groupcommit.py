"""The group commit on its own (its users' sets are tested on real databases in
tests/integration/test_payments_settling.py and test_orders_placing.py): what is handed in
together makes one set and what comes in meanwhile the next; each caller gets its own answer or
its own exception; a failed set, and a member the set answers ALONE, is done alone by its
caller, in the caller's context; the writer runs in the context the group commit was built in;
a caller that stopped waiting is left out of the next set; a set holds at most `max_set` items; a
set that cannot be answered fails its callers with why, and the sets after it go on; and closing
cancels whoever still waits."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from pizzeria.kit.groupcommit import ALONE, Alone, GroupCommit, Member
from tests.support.polling import eventually

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
#: A value of the service's, set where the group commit is built (as `service` for its logs).
SERVICE: contextvars.ContextVar[str] = contextvars.ContextVar("service", default="none")


class Refused(Exception):
    pass


class Writer:
    """Doubles each number in a set; refuses negative ones; answers ALONE for 13; the whole set
    fails while `failing` is set (a set with 99 in it fails too); a set with 7 in it is answered
    one answer short (a bug)."""

    def __init__(self) -> None:
        self.sets: list[list[int]] = []
        self.alone: list[tuple[int, str]] = []
        self.seen_in: list[tuple[int, str]] = []  # each member's caller, as the set saw it
        self.written_in: list[tuple[str, str]] = []  # the writer's own context: service, caller
        self.failing = False
        self.on_write: asyncio.Event | None = None

    async def write_set(self, members: Sequence[Member[int]]) -> list[int | Exception | Alone]:
        self.sets.append([m.item for m in members])
        self.written_in.append((SERVICE.get(), WHO.get()))
        self.seen_in += [(m.item, m.run(WHO.get)) for m in members]
        if self.on_write is not None:
            await self.on_write.wait()
        if self.failing or 99 in (m.item for m in members):
            raise RuntimeError("the set's transaction failed")
        answers = [ALONE if m.item == 13 else Refused(m.item) if m.item < 0 else m.item * 2 for m in members]
        return answers[:-1] if 7 in (m.item for m in members) else answers

    async def write_alone(self, item: int) -> int:
        self.alone.append((item, WHO.get()))
        if item == 99:
            raise RuntimeError("fails alone too")
        return item * 2


@pytest.fixture
def writer() -> Writer:
    return Writer()


@pytest.fixture
def sets(writer: Writer) -> GroupCommit[int, int]:
    return GroupCommit(writer.write_set, writer.write_alone, name="test")


async def submitted_as(sets: GroupCommit[int, int], item: int, who: str) -> int:
    WHO.set(who)
    return await sets.submit(item)


async def test_what_is_handed_in_together_is_one_set_each_answered_in_its_callers_context(
    sets: GroupCommit[int, int], writer: Writer
) -> None:
    answers = await asyncio.gather(
        *(submitted_as(sets, n, f"caller {n}") for n in (1, -2, 3, 13)), return_exceptions=True
    )
    assert answers[0] == 2
    assert isinstance(answers[1], Refused)
    assert answers[2:] == [6, 26]
    assert writer.sets == [[1, -2, 3, 13]]
    assert writer.seen_in == [(n, f"caller {n}") for n in (1, -2, 3, 13)]
    assert writer.alone == [(13, "caller 13")]  # done alone by its caller, in its own task


async def test_the_writer_runs_in_the_context_the_group_commit_was_built_in(writer: Writer) -> None:
    SERVICE.set("orders")
    sets = GroupCommit(writer.write_set, writer.write_alone, name="test")
    SERVICE.set("changed later")
    await asyncio.gather(submitted_as(sets, 1, "caller 1"), submitted_as(sets, 2, "caller 2"))
    assert writer.written_in == [("orders", "nobody")]  # the service's values, no caller's
    assert writer.seen_in == [(1, "caller 1"), (2, "caller 2")]


async def test_what_comes_in_while_a_set_is_written_makes_the_next(sets: GroupCommit[int, int], writer: Writer) -> None:
    writer.on_write = asyncio.Event()
    first = asyncio.create_task(sets.submit(1))
    await eventually(lambda: writer.sets, "no set was begun", 5, every=0)
    later = asyncio.gather(sets.submit(2), sets.submit(3))
    writer.on_write.set()
    assert (await first, await later) == (2, [4, 6])
    assert writer.sets == [[1], [2, 3]]


async def test_a_failed_set_is_done_alone_by_each_caller(sets: GroupCommit[int, int], writer: Writer) -> None:
    answers = await asyncio.gather(*(submitted_as(sets, n, f"caller {n}") for n in (1, 99, 3)), return_exceptions=True)
    assert answers[0] == 2
    assert isinstance(answers[1], RuntimeError)
    assert str(answers[1]) == "fails alone too"
    assert answers[2] == 6
    assert writer.sets == [[1, 99, 3]]
    assert writer.alone == [(1, "caller 1"), (99, "caller 99"), (3, "caller 3")]


async def test_a_failed_set_of_one_fails_its_caller(sets: GroupCommit[int, int], writer: Writer) -> None:
    writer.failing = True
    with pytest.raises(RuntimeError, match="the set's transaction failed"):
        await sets.submit(1)
    assert writer.alone == []


async def test_a_caller_that_stopped_waiting_is_left_out(sets: GroupCommit[int, int], writer: Writer) -> None:
    writer.on_write = asyncio.Event()
    first = asyncio.create_task(sets.submit(1))
    await eventually(lambda: writer.sets, "no set was begun", 5, every=0)
    gone = asyncio.create_task(sets.submit(2))
    stays = asyncio.create_task(sets.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    writer.on_write.set()
    assert (await first, await stays) == (2, 6)
    assert gone.cancelled()
    assert writer.sets == [[1], [3]]


async def test_a_set_holds_at_most_max_set_items_the_rest_make_the_next(writer: Writer) -> None:
    sets = GroupCommit(writer.write_set, writer.write_alone, name="test", max_set=2)
    assert await asyncio.gather(*(sets.submit(n) for n in range(1, 6))) == [2, 4, 6, 8, 10]
    assert writer.sets == [[1, 2], [3, 4], [5]]


async def test_a_set_that_cannot_be_answered_fails_its_callers_with_why_and_the_next_sets_go_on(
    sets: GroupCommit[int, int], writer: Writer
) -> None:
    writer.on_write = asyncio.Event()
    short = asyncio.gather(sets.submit(1), sets.submit(7), return_exceptions=True)
    await eventually(lambda: writer.sets, "no set was begun", 5, every=0)
    later = asyncio.create_task(sets.submit(3))
    writer.on_write.set()
    answered, unanswered = await asyncio.wait_for(short, timeout=5)
    assert answered == 2
    assert isinstance(unanswered, ValueError)  # the short answer's own error, not a cancellation
    assert await asyncio.wait_for(later, timeout=5) == 6
    assert writer.sets == [[1, 7], [3]]


async def test_closing_cancels_whoever_waits(sets: GroupCommit[int, int], writer: Writer) -> None:
    writer.on_write = asyncio.Event()
    waiting = asyncio.gather(sets.submit(1), sets.submit(2), return_exceptions=True)
    await eventually(lambda: writer.sets, "no set was begun", 5, every=0)
    await sets.close()
    assert all(isinstance(a, asyncio.CancelledError) for a in await waiting)


async def test_a_stop_that_is_itself_cancelled_while_the_set_rolls_back_stays_cancelled(
    sets: GroupCommit[int, int], writer: Writer
) -> None:
    """The set being written takes its time to roll back; whoever closes and is cancelled
    meanwhile (a stop given up on) is cancelled, not told that the close went through; whoever
    was queued is cancelled too, and what is submitted after it is written as usual."""
    rolling_back, rolled_back = asyncio.Event(), asyncio.Event()

    async def slow_rollback(members: Sequence[Member[int]]) -> list[int | Exception | Alone]:
        writer.sets.append([m.item for m in members])
        if writer.sets[1:]:  # the sets after the first are written at once
            return [m.item * 2 for m in members]
        try:
            await asyncio.Event().wait()
        finally:
            rolling_back.set()
            await rolled_back.wait()
        raise AssertionError("never written")

    slow = GroupCommit(slow_rollback, writer.write_alone, name="slow")
    waiting = asyncio.ensure_future(slow.submit(1))
    await eventually(lambda: writer.sets, "no set was begun", 5, every=0)
    queued = asyncio.ensure_future(slow.submit(2))  # after the set was taken: the next one's
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(slow.close())
    await asyncio.wait_for(rolling_back.wait(), timeout=5)
    closing.cancel()
    await asyncio.wait([closing], timeout=5)
    assert closing.cancelled(), "the close swallowed its own cancellation"
    with pytest.raises(asyncio.CancelledError):  # not left waiting for a writer that is gone
        await asyncio.wait_for(queued, timeout=5)
    # Submitted while the cancelled set still rolls back: a writer of its own, answered.
    assert await asyncio.wait_for(slow.submit(3), timeout=5) == 6
    rolled_back.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, timeout=5)
