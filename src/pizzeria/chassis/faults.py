"""The fault lab's switches in one service (administrators only). The gateway sets them on every
service (`/api/v1/ops/faults/...`); the fault lab page and `pizzeria demo` use the gateway's.

- **broker paused**: the service's broker connection lets no message through
  (messaging/pausable.py): its outbox backs up, its consumer groups wait where they are;
- **consumer failing**: one consumer group's handling raises on every message (a held
  failpoint, kit/failpoints.py), so each message is retried and then dead-lettered;
- **crash**: the process exits at once, with no cleanup, as `kill -9` would end it; whatever runs
  it (`pizzeria up`, Kubernetes) starts it again.

A switch that is on is a row of the service's `fault_switches` table: every replica reads the
table twice a second (chassis/runtime.py: `CONTROL_INTERVAL_S`), and a process that restarts
comes back with the switches as they were.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, BackgroundTasks, Depends, Request, status
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.chassis.runtime import ServiceRuntime
from pizzeria.kit import failpoints
from pizzeria.kit.auth import Admin, require_roles
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import NotFound
from pizzeria.kit.logging import get_logger
from pizzeria.kit.statements import fetch_rows
from pizzeria.kit.upsert import insert_ignore
from pizzeria.messaging.tables import fault_switches

log = get_logger(__name__)

_SWITCHES = sa.select(fault_switches.c.name)

#: The switch that pauses the broker in this service.
BROKER_PAUSED = "broker.paused"
#: The exit status of a crash on purpose (as after SIGKILL).
CRASH_STATUS = 137


class ServiceFaults(BaseModel):
    service: str
    pid: int = Field(description="the process that answered (a new one after a crash)")
    broker_paused: bool
    consumers_failing: dict[str, bool] = Field(description="each consumer group of the service: failing or not")


class FaultChange(BaseModel):
    """The switches to change; those left out stay as they are."""

    broker_paused: bool | None = Field(None, description="pause (true) or resume (false) the flow of messages")
    consumers_failing: dict[str, bool] | None = Field(
        None, description="consumer group → whether its handling fails on every message"
    )


class Crashing(BaseModel):
    service: str
    pid: int = Field(description="the process that is about to exit")


class FaultSwitches:
    """The switches of one service process, as its `fault_switches` table says they are."""

    def __init__(self, runtime: ServiceRuntime, *, exit_process: Callable[[int], object] = os._exit) -> None:
        self.runtime = runtime
        self.exit_process = exit_process
        self.on: frozenset[str] = frozenset()

    def groups(self) -> dict[str, str]:
        """Consumer group → the failpoint its handling passes."""
        return {runner.group: runner.failpoint for runner in self.runtime.runners}

    def state(self) -> ServiceFaults:
        return ServiceFaults(
            service=self.runtime.service,
            pid=os.getpid(),
            broker_paused=BROKER_PAUSED in self.on,
            consumers_failing={group: point in self.on for group, point in sorted(self.groups().items())},
        )

    async def refresh(self) -> None:
        """Read the switches and act on them."""
        async with self.runtime.db.read() as conn:
            await self.look(conn)

    async def look(self, conn: AsyncConnection) -> None:
        """Read the switches and act on them (every replica, with its runtime's other looks)."""
        self._apply(frozenset(row[0] for row in await fetch_rows(conn, _SWITCHES)))

    def _apply(self, on: frozenset[str]) -> None:
        self.on = on
        self.runtime.broker.paused = BROKER_PAUSED in on
        for point in self.groups().values():
            failpoints.hold(point, on=point in on)

    async def change(self, change: FaultChange, actor: str) -> ServiceFaults:
        """Turn switches on or off for every replica of the service; unknown groups are refused."""
        groups = self.groups()
        wanted: dict[str, bool] = {}
        if change.broker_paused is not None:
            wanted[BROKER_PAUSED] = change.broker_paused
        for group, failing in (change.consumers_failing or {}).items():
            if group not in groups:
                known = ", ".join(sorted(groups)) or "none"
                raise NotFound(f"{self.runtime.service} has no consumer group {group!r} (it has: {known})")
            wanted[groups[group]] = failing
        async with self.runtime.db.transaction() as conn:
            for name, on in wanted.items():
                if on:
                    await conn.execute(
                        insert_ignore(conn, fault_switches), {"name": name, "set_by": actor[:64], "set_at": utcnow()}
                    )
                else:
                    await conn.execute(fault_switches.delete().where(fault_switches.c.name == name))
        if wanted:
            log.warning("fault switches changed", switches=wanted, actor=actor)
        await self.refresh()
        return self.state()

    async def crash(self) -> None:
        """Exit now. A coroutine, so that it runs on the event loop as soon as the answer is
        sent, before any other request is taken in (a function would wait for a thread)."""
        log.warning("crashing on purpose (fault lab)")
        self.exit_process(CRASH_STATUS)


async def _switches(request: Request) -> FaultSwitches:
    switches: FaultSwitches = request.app.state.faults
    return switches


SwitchesDep = Annotated[FaultSwitches, Depends(_switches)]

router = APIRouter(prefix="/api/v1/ops/faults", tags=["ops"], dependencies=[Depends(require_roles("admin"))])


@router.get("", response_model=ServiceFaults, summary="This service's fault switches")
async def get_faults(switches: SwitchesDep) -> ServiceFaults:
    return switches.state()


@router.put("", response_model=ServiceFaults, summary="Pause the broker or make consumer groups fail, or undo it")
async def set_faults(change: FaultChange, admin: Admin, switches: SwitchesDep) -> ServiceFaults:
    return await switches.change(change, admin.user_id)


@router.post(
    "/crash",
    response_model=Crashing,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Exit this process at once, with no cleanup, once this answer is sent",
)
async def crash(admin: Admin, switches: SwitchesDep, background: BackgroundTasks) -> Crashing:
    log.warning("crash requested", actor=admin.user_id)
    background.add_task(switches.crash)
    return Crashing(service=switches.runtime.service, pid=os.getpid())
