"""The kitchen autopilot: moves every ticket on after a fixed time per stage, for demos and
benchmarks (`KITCHEN_AUTOPILOT=1`). Staff do the same through the API when it is off."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import Conflict
from pizzeria.services.kitchen import repository
from pizzeria.services.kitchen.handlers import advance_ticket


class KitchenAutopilot:
    """One step of the autopilot moves on every ticket whose stage has lasted long enough."""

    def __init__(self, runtime: ServiceRuntime, *, stage: timedelta) -> None:
        self.runtime = runtime
        self.stage = stage

    @property
    def interval(self) -> float:
        return min(1.0, max(0.05, self.stage.total_seconds() / 4))

    async def step(self) -> bool:
        """True if it moved a ticket (the next stage may be due at once in zero-delay benchmarks)."""
        async with self.runtime.db.read() as conn:
            due = await repository.tickets_due(conn, utcnow() - self.stage, limit=200)
        moved = 0
        for ticket_id in due:
            with contextlib.suppress(Conflict):  # staff moved it meanwhile
                await advance_ticket(self.runtime.uow(), ticket_id)
                moved += 1
        return moved > 0
