"""The devices' watches: one takes devices that fell silent offline, one expires commands not
acknowledged by their deadline. Each wakes when its next item falls due (and on its interval,
for what other replicas did); a replica that finds an item already dealt with leaves it."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit.loops import StepResult, move_on
from pizzeria.services.devices import handlers, repository

#: How many items one step looks at (the rest: at once in the next step).
BATCH = 200


class PresenceWatch:
    """Online devices silent for `offline_after` go offline (DeviceWentOffline)."""

    def __init__(self, runtime: ServiceRuntime, offline_after: timedelta) -> None:
        self.runtime = runtime
        self.offline_after = offline_after

    async def step(self) -> StepResult:
        async with self.runtime.db.read() as conn:
            online = await repository.online_by_silence(conn, BATCH)
        return await move_on(online, self.offline_after, self._offline)

    async def _offline(self, due: list[tuple[UUID, datetime]]) -> None:
        await handlers.mark_offline(self.runtime.uow(), due, self.offline_after)


class CommandExpiry:
    """Commands still pending at their deadline expire (DeviceCommandExpired)."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    async def step(self) -> StepResult:
        async with self.runtime.db.read() as conn:
            pending = await repository.pending_by_deadline(conn, BATCH)
        return await move_on(pending, timedelta(0), self._expire)

    async def _expire(self, due: list[tuple[UUID, datetime]]) -> None:
        await handlers.expire_commands(self.runtime.uow(), due)
