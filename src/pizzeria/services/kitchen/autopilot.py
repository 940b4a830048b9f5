"""The kitchen autopilot: moves every ticket on after a fixed time per stage, for demos and
benchmarks (`KITCHEN_AUTOPILOT=1`). Staff do the same through the API when it is off."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from uuid import UUID

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.errors import Conflict
from pizzeria.kit.loops import StepResult, move_on
from pizzeria.services.kitchen import repository
from pizzeria.services.kitchen.handlers import advance_ticket


class KitchenAutopilot:
    """One step of the autopilot moves on every ticket whose stage has lasted long enough, and
    says when the next one will have; a newly queued ticket wakes it."""

    def __init__(self, runtime: ServiceRuntime, *, stage: timedelta) -> None:
        self.runtime = runtime
        self.stage = stage

    async def step(self) -> StepResult:
        async with self.runtime.db.read() as conn:
            cooking = await repository.cooking(conn, limit=200)
        return await move_on(cooking, self.stage, self._advance)

    async def _advance(self, ticket_id: UUID, began: datetime) -> None:
        with contextlib.suppress(Conflict):  # staff moved it meanwhile
            await advance_ticket(self.runtime.uow(), ticket_id, since=began)
