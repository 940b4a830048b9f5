"""The kitchen autopilot: moves every ticket on after a fixed time per stage, for demos and
benchmarks (`KITCHEN_AUTOPILOT=1`). Staff do the same through the API when it is off."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import Conflict
from pizzeria.kit.logging import get_logger
from pizzeria.messaging.runtime import MessagingRuntime
from pizzeria.services.kitchen import repository
from pizzeria.services.kitchen.handlers import advance_ticket

log = get_logger(__name__)


class KitchenAutopilot:
    def __init__(self, runtime: MessagingRuntime, *, stage: timedelta) -> None:
        self.runtime = runtime
        self.stage = stage
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            moved = 0
            try:
                async with self.runtime.db.read() as conn:
                    due = await repository.tickets_due(conn, utcnow() - self.stage, limit=200)
                for ticket_id in due:
                    with contextlib.suppress(Conflict):  # staff moved it meanwhile
                        await advance_ticket(self.runtime.uow(), ticket_id)
                        moved += 1
            except Exception as exc:
                log.warning("kitchen autopilot failed; retrying", error=str(exc))
            if moved:
                continue  # the next stage may be due at once (zero-delay benchmarks)
            wait = min(1.0, max(0.05, self.stage.total_seconds() / 4))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
