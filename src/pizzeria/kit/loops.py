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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)


async def move_on(
    in_stage: Sequence[tuple[T, datetime]], stage: timedelta, advance: Callable[[T, datetime], Awaitable[None]]
) -> StepResult:
    """One step of an autopilot: advance every item (id, when its stage began), oldest first,
    whose stage has lasted `stage`; True if any moved (the next stage may be due at once), else
    the seconds until the oldest one will be due, or None when nothing is under way. `advance`
    is told when the stage it saw began, so that it moves only that stage on: another replica's
    autopilot may have moved the item meanwhile."""
    now = utcnow()
    moved = False
    for item, began in in_stage:
        wait = (as_utc(began) + stage - now).total_seconds()
        if wait > 0:
            return True if moved else max(wait, 0.001)
        await advance(item, began)
        moved = True
    return True if moved else None
