"""The delivery autopilot: hands waiting orders to free couriers and moves each delivery on
after a fixed time per stage (`DELIVERY_AUTOPILOT=1`). Couriers do it through the API otherwise;
waiting deliveries are handed out either way."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import Conflict
from pizzeria.services.delivery import handlers, repository


class CourierDispatcher:
    """One step hands waiting deliveries to free couriers and, driving, moves on every delivery
    whose stage has lasted long enough."""

    def __init__(self, runtime: ServiceRuntime, *, drive: bool, stage: timedelta) -> None:
        self.runtime = runtime
        self.drive = drive
        self.stage = stage

    @property
    def interval(self) -> float:
        return min(1.0, max(0.05, self.stage.total_seconds() / 4)) if self.drive else 1.0

    async def step(self) -> bool:
        """True if anything moved (more may be due at once)."""
        moved = await handlers.assign_waiting(self.runtime.uow())
        if self.drive:
            async with self.runtime.db.read() as conn:
                due = await repository.due(conn, utcnow() - self.stage, limit=200)
            for delivery_id in due:
                with contextlib.suppress(Conflict):
                    await handlers.advance(self.runtime.uow(), delivery_id)
                    moved += 1
        return moved > 0
