"""The delivery autopilot: hands waiting orders to free couriers and moves each delivery on
after a fixed time per stage (`DELIVERY_AUTOPILOT=1`). Couriers do it through the API otherwise;
waiting deliveries are handed out either way."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.loops import StepResult, due_now
from pizzeria.services.delivery import handlers, repository

#: The most waiting deliveries one step hands out, and deliveries under way it looks at.
HAND_OUT, UNDER_WAY = 50, 200


class CourierDispatcher:
    """One step hands waiting deliveries to free couriers and, driving, moves on every delivery
    whose stage has lasted long enough and says when the next one will have; a new delivery
    or a courier coming free wakes it."""

    def __init__(self, runtime: ServiceRuntime, *, drive: bool, stage: timedelta) -> None:
        self.runtime = runtime
        self.drive = drive
        self.stage = stage
        # The last step had work and more may be due at once: the next looks in its write
        # transaction rather than in a read before it.
        self._busy = False

    async def step(self) -> StepResult:
        if not self._busy:
            # Usually nothing waits (or every courier is out) and nothing is due: a read says so,
            # with no write transaction.
            async with self.runtime.db.read() as conn:
                to_hand_out, due, look_again = await self._look(conn)
            if not (to_hand_out or due):
                return look_again
        uow = self.runtime.uow()
        async with uow:
            if self._busy:
                to_hand_out, due, look_again = await self._look(uow.conn)
            handed_out, moved = await handlers.dispatch(uow, to_hand_out=to_hand_out, due=due)
            await uow.commit()
        # Those handed out are on the road now: look again at once (their stage may be over).
        outcome = True if handed_out else look_again
        self._busy = (handed_out or moved) > 0 and outcome is True
        return outcome

    async def _look(self, conn: AsyncConnection) -> tuple[int, list[tuple[UUID, datetime]], StepResult]:
        """How many waiting deliveries there are to hand out (0 with every courier out), the
        deliveries under way whose stage is over, and when to look again once they moved on."""
        to_hand_out = await repository.assignable(conn, HAND_OUT)
        under_way = await repository.on_the_road(conn, limit=UNDER_WAY) if self.drive else []
        due, look_again = due_now(under_way, self.stage)
        return to_hand_out, due, look_again
