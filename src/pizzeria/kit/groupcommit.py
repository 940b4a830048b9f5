"""Work that concurrent callers hand in close together, done in sets (a group commit).

A transaction has a fixed price whatever it holds (the write lock, the commit's round trip, its
write to the log), so what callers hand in together is written together. Each caller's item is
queued and the caller waits; a writer takes whatever has queued by the time it gets to it (up
to `max_set` items; the rest wait for the next set) and hands that set to `write_set` (one
transaction), then takes what queued meanwhile, and so on.

`write_set` answers each member of its set: its result; the exception it alone gets (raised to
its caller, not to its neighbours); or `ALONE`, when the set could not do it (a row another
transaction holds) and its caller does it alone with `write_alone`, in the caller's own task.
If `write_set` raises, every member of the set does its item alone the same way: one bad item
cannot fail, roll back or lose its neighbours. A set of one that raises fails its caller (it
was alone already). Should answering a set fail (a bug: fewer answers than members), the
members not answered get that exception, and the sets after it are written as usual.

Each member keeps its caller's context (`contextvars`: the trace, correlation and causation of
the request), so what the set does for it, such as emitting its events, runs in that context:
`member.run(fn, *args)`. The writer itself runs in a copy of the context the group commit was
built in, which is the service's (built at its composition, not in a request: what it logs
carries the service, and no one caller's values).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, ParamSpec, TypeVar

from pizzeria.kit.logging import get_logger
from pizzeria.kit.metrics import group_commit_set_size

log = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")
P = ParamSpec("P")


class Alone:
    """The type of `ALONE`."""

    def __repr__(self) -> str:
        return "ALONE"


#: A set's answer for a member it could not do: its caller does it alone.
ALONE: Final = Alone()


@dataclass(frozen=True, eq=False)
class Member(Generic[T]):
    """One caller's item in a set, with the caller's context (by default the current one)."""

    item: T
    context: contextvars.Context = field(default_factory=contextvars.copy_context)

    def run(self, fn: Callable[P, V], /, *args: P.args, **kwargs: P.kwargs) -> V:
        """Call `fn` in the caller's context (what it emits carries the caller's trace)."""
        return self.context.run(fn, *args, **kwargs)


#: Does a set in one transaction; answers each member, in the set's order.
WriteSet = Callable[[Sequence[Member[T]]], Awaitable[Sequence[R | Exception | Alone]]]


#: The most items in one set: what a set's statements bind per item (two parameters a key, say)
#: stays well under the databases' limit of parameters in one statement (some 32,000).
MAX_SET: Final = 256


class GroupCommit(Generic[T, R]):
    """Queues items and writes them in sets of at most `max_set`, one set at a time."""

    def __init__(
        self,
        write_set: WriteSet[T, R],
        write_alone: Callable[[T], Awaitable[R]],
        *,
        name: str,
        max_set: int = MAX_SET,
    ) -> None:
        if max_set < 1:
            raise ValueError("a set holds at least one item")
        self._write_set = write_set
        self._write_alone = write_alone
        self.name = name
        self.max_set = max_set
        self._queue: list[tuple[Member[T], asyncio.Future[R | Alone]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._context = contextvars.copy_context()  # the service's, for the writer

    async def submit(self, item: T) -> R:
        """Have `item` written with whatever else is handed in meanwhile; its own result, or
        its own exception."""
        done: asyncio.Future[R | Alone] = asyncio.get_running_loop().create_future()
        self._queue.append((Member(item), done))
        if self._writer is None or self._writer.done() or self._writer.cancelling():
            # (A writer cancelled by a close may still be rolling its set back: it takes
            # nothing more.) In the service's context, not this caller's: a set is no one
            # caller's (each member's is its own).
            self._writer = asyncio.create_task(self._write_sets(), name=self.name, context=self._context.copy())
        answer = await done
        if isinstance(answer, Alone):
            return await self._write_alone(item)
        return answer

    async def close(self) -> None:
        """Stop writing: the set being written is cancelled (its transaction rolls back) and
        whoever still waits gets `CancelledError`. For the service's stop, once nothing submits
        any more: an item submitted after it starts a writer again and is written as usual."""
        try:
            if self._writer is not None:
                self._writer.cancel()
                # Waits for the writer without taking on its end: a cancellation of this close
                # itself still comes through.
                await asyncio.wait([self._writer])
        finally:  # cancelled or not, nobody is left waiting for a writer that is gone
            for _, done in self._queue:
                done.cancel()
            self._queue.clear()

    async def _write_sets(self) -> None:
        while self._queue:
            # A caller that stopped waiting (cancelled) has nothing written for it.
            waiting = [(member, done) for member, done in self._queue if not done.done()]
            batch, self._queue = waiting[: self.max_set], waiting[self.max_set :]
            if not batch:
                continue
            try:
                await self._write(batch)
            except Exception as exc:  # a bug answering the set: its callers get it, not the next sets
                log.exception("a set could not be answered", set=self.name, size=len(batch))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            finally:
                for _, done in batch:  # cancelled mid-set: nobody waits for ever
                    if not done.done():
                        done.cancel()

    async def _write(self, batch: list[tuple[Member[T], asyncio.Future[R | Alone]]]) -> None:
        group_commit_set_size.labels(self.name).observe(len(batch))
        answers: Sequence[R | Exception | Alone]
        try:
            answers = await self._write_set([member for member, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                log.warning("a set failed; each member done alone", set=self.name, size=len(batch), error=repr(exc))
            answers = [ALONE if len(batch) > 1 else exc] * len(batch)
        for (_, done), answer in zip(batch, answers, strict=True):
            if done.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(answer, Exception):
                done.set_exception(answer)
            else:
                done.set_result(answer)
