"""The one way a service runs background work: a named loop that calls a step when woken or on
a timer, again at once while the step reports more work, with backoff while it fails."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from pizzeria.kit.clock import as_utc, utcnow
from pizzeria.kit.logging import get_logger

log = get_logger(__name__)

#: What a step answers: True — more is waiting, run again now; a number — run again within that
#: many seconds; None or False — nothing more now, wait for the interval or a wake-up.
StepResult = bool | float | None
Step = Callable[[], Awaitable[StepResult]]
T = TypeVar("T")


class BackgroundLoop:
    """Runs `step` until stopped or cancelled.

    A failing step is logged and retried after an exponential backoff with jitter (capped at
    `max_backoff`); `healthy` is False from the first failure until the next success, and
    `on_error` (if given) runs after each failure, before the backoff (to let go of a lock, say).
    """

    def __init__(
        self,
        name: str,
        step: Step,
        *,
        interval: float,
        initial_delay: float = 0.0,
        initial_backoff: float = 0.05,
        max_backoff: float = 10.0,
        on_error: Callable[[Exception], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.initial_delay = initial_delay
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.on_error = on_error
        self.healthy = True
        self.failures = 0
        self._wake = asyncio.Event()
        self._stopped = False

    def wake(self) -> None:
        """Run the step soon (new work was committed)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def run(self) -> None:
        if self.initial_delay:
            await self._pause(self.initial_delay)
        backoff = self.initial_backoff
        while not self._stopped:
            self._wake.clear()
            try:
                outcome = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.healthy = False
                self.failures += 1
                log.warning(
                    "background work failed; will retry", worker=self.name, error=str(exc), backoff_s=round(backoff, 3)
                )
                if self.on_error is not None:
                    with contextlib.suppress(Exception):
                        await self.on_error(exc)
                await asyncio.sleep(backoff * (0.5 + random.random() / 2))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.healthy = True
            backoff = self.initial_backoff
            if outcome is True:
                await asyncio.sleep(0)  # let others run between back-to-back steps
                continue
            wait = self.interval if outcome is None or outcome is False else min(float(outcome), self.interval)
            await self._pause(wait)

    async def _pause(self, seconds: float) -> None:
        await wait_for_event(self._wake, seconds)


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` have passed; True if it is set. Not
    `asyncio.wait_for`: before Python 3.12 it swallows a cancellation that comes while the
    event is being set (the waiting task goes on as if never cancelled, and whoever stops it
    waits for ever)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def move_on(
    in_stage: Sequence[tuple[T, datetime]],
    stage: timedelta,
    advance: Callable[[list[tuple[T, datetime]]], Awaitable[None]],
) -> StepResult:
    """One step of an autopilot: of the items under way (id, when its stage began), oldest
    first, hand every one whose stage has lasted `stage` to `advance` at once (one transaction
    for all of them); then say when to look again (see `due_now`)."""
    due, look_again = due_now(in_stage, stage)
    if due:
        await advance(due)
    return look_again


def due_now(in_stage: Sequence[tuple[T, datetime]], stage: timedelta) -> tuple[list[tuple[T, datetime]], StepResult]:
    """Of the items under way (id, when its stage began), oldest first, those whose stage has
    lasted `stage`; and, once they are moved on, when to look again — at once if every item
    listed was due (more may be), else when the next one will be due (or a moved one's next
    stage ends), or None when nothing is under way."""
    now = utcnow()
    due: list[tuple[T, datetime]] = []
    wait: float | None = None
    for item, began in in_stage:
        left = (as_utc(began) + stage - now).total_seconds()
        if left > 0:
            wait = left
            break
        due.append((item, began))
    if due:
        if wait is None:
            return due, True
        wait = min(wait, stage.total_seconds())
    return due, None if wait is None else max(wait, 0.001)
