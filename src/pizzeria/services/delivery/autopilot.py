"""The delivery autopilot: hands waiting orders to free couriers and moves each delivery on
after a fixed time per stage (`DELIVERY_AUTOPILOT=1`). Couriers do it through the API otherwise;
waiting deliveries are handed out either way."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import Conflict
from pizzeria.kit.logging import get_logger
from pizzeria.messaging.runtime import MessagingRuntime
from pizzeria.services.delivery import handlers, repository

log = get_logger(__name__)


class Dispatcher:
    def __init__(self, runtime: MessagingRuntime, *, drive: bool, stage: timedelta) -> None:
        self.runtime = runtime
        self.drive = drive
        self.stage = stage
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            moved = 0
            try:
                moved += await handlers.assign_waiting(self.runtime.uow())
                if self.drive:
                    async with self.runtime.db.read() as conn:
                        due = await repository.due(conn, utcnow() - self.stage, limit=200)
                    for delivery_id in due:
                        with contextlib.suppress(Conflict):
                            await handlers.advance(self.runtime.uow(), delivery_id)
                            moved += 1
            except Exception as exc:
                log.warning("delivery dispatcher failed; retrying", error=str(exc))
            if moved:
                continue
            wait = min(1.0, max(0.05, self.stage.total_seconds() / 4)) if self.drive else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
