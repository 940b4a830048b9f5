"""The delivery autopilot: hands waiting orders to free couriers and moves each delivery on
after a fixed time per stage (`DELIVERY_AUTOPILOT=1`). Couriers do it through the API otherwise;
waiting deliveries are handed out either way."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from uuid import UUID

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.errors import Conflict
from pizzeria.kit.loops import StepResult, move_on
from pizzeria.services.delivery import handlers, repository


class CourierDispatcher:
    """One step hands waiting deliveries to free couriers and, driving, moves on every delivery
    whose stage has lasted long enough and says when the next one will have; a new delivery
    or a courier coming free wakes it."""

    def __init__(self, runtime: ServiceRuntime, *, drive: bool, stage: timedelta) -> None:
        self.runtime = runtime
        self.drive = drive
        self.stage = stage

    async def step(self) -> StepResult:
        if await handlers.assign_waiting(self.runtime.uow()):
            return True
        if not self.drive:
            return None
        async with self.runtime.db.read() as conn:
            under_way = await repository.on_the_road(conn, limit=200)
        return await move_on(under_way, self.stage, self._advance)

    async def _advance(self, delivery_id: UUID, began: datetime) -> None:
        with contextlib.suppress(Conflict):
            await handlers.advance(self.runtime.uow(), delivery_id, since=began)
