"""Orchestrated sagas: a long-running process made of steps, each a command sent to another
service and the replies that move it on, with a compensation to undo it.

- The saga's state and the command it sends next are written in the same transaction (the
  caller's unit of work, so the outbox carries the command); replies arrive through the inbox.
- Every step may have a deadline, stored in the saga's row and scanned by a timer: a reply that
  never comes compensates instead of hanging. Each replica runs a timer; a saga whose deadline
  passed is claimed by one of them (its row locked, SKIP LOCKED on PostgreSQL) and its deadline
  checked again under the lock, so a deadline fires once.
- Compensation runs in reverse order, one step at a time, each waiting for its acknowledgement
  (re-sent when it is late: compensations are idempotent). A compensated saga is final, so a
  saga is never compensated twice.
- A step marked `pivot` is the point of no return: once it succeeded the saga only goes forward.
  Compensating a pivot step that is in flight may be refused (it went through after all); the
  saga then resumes.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from pizzeria.kit.clock import utcnow
from pizzeria.kit.db import Database, one_of
from pizzeria.kit.logging import get_logger
from pizzeria.kit.statements import fetch_rows
from pizzeria.kit.upsert import insert_rows, update_rows
from pizzeria.messaging.message import Message
from pizzeria.messaging.tables import saga_log, sagas
from pizzeria.messaging.uow import UnitOfWork

log = get_logger(__name__)
#: What a saga carries from start to end (a pydantic model, stored as JSON with the saga).
D = TypeVar("D", bound=BaseModel)
Command = Callable[[D], Message]


class SagaState(enum.StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"


FINAL = frozenset({SagaState.COMPLETED, SagaState.COMPENSATED})


@dataclass(frozen=True)
class Step(Generic[D]):
    """One step: send `command` (if any) and wait for one of `success` or `failure`."""

    name: str
    success: tuple[type[Message], ...]
    command: Command[D] | None = None
    failure: tuple[type[Message], ...] = ()
    compensation: Command[D] | None = None
    compensated_by: tuple[type[Message], ...] = ()
    #: Replies saying the compensation came too late: the step went through (pivot steps only).
    refused_by: tuple[type[Message], ...] = ()
    #: No reply within this time: compensate, as if the step had failed (outcome unknown, so
    #: the step itself is compensated too).
    timeout: timedelta | None = None
    #: Forward-only steps: no reply within this time, send the (idempotent) command again.
    resend_after: timedelta | None = None
    pivot: bool = False


@dataclass(frozen=True)
class SagaDefinition(Generic[D]):
    """The steps of one kind of saga, the data its commands are built from, and the reason each
    failure reply stands for."""

    name: str
    data_type: type[D]
    steps: tuple[Step[D], ...]
    reasons: Mapping[type[Message], str]
    compensation_timeout: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        pivots = [i for i, s in enumerate(self.steps) if s.pivot]
        if len(pivots) > 1:
            raise ValueError(f"{self.name}: at most one pivot step")
        last_compensable = pivots[0] if pivots else len(self.steps) - 1
        for i, step in enumerate(self.steps):
            if i > last_compensable and (step.failure or step.compensation or step.timeout):
                raise ValueError(f"{self.name}.{step.name}: steps after the pivot can only go forward")
            if step.timeout and step.resend_after:
                raise ValueError(f"{self.name}.{step.name}: a step either times out or re-sends")
            for reply in step.failure:
                if reply not in self.reasons:
                    raise ValueError(f"{self.name}.{step.name}: no reason for {reply.__name__}")

    @property
    def pivot_index(self) -> int:
        """Index of the pivot step (past the last step if there is none)."""
        return next((i for i, s in enumerate(self.steps) if s.pivot), len(self.steps))

    def mermaid(self) -> str:
        """The definition as a Mermaid state diagram (for the docs)."""
        lines = ["stateDiagram-v2", f"    [*] --> {self.steps[0].name}"]
        last_cancellable = min(self.pivot_index, len(self.steps) - 1)
        for i, step in enumerate(self.steps):
            after = self.steps[i + 1].name if i + 1 < len(self.steps) else "[*]"
            lines.append(f"    {step.name} --> {after}: {' / '.join(m.__name__ for m in step.success)}")
            for reply in step.failure:
                target = self._undo_entry(i, include_self=False)
                lines.append(f"    {step.name} --> {target}: {reply.__name__} ({self.reasons[reply]})")
            if step.timeout:
                seconds = int(step.timeout.total_seconds())
                lines.append(f"    {step.name} --> {self._undo_entry(i, include_self=True)}: no reply in {seconds}s")
            if i <= last_cancellable:
                lines.append(f"    {step.name} --> {self._undo_entry(i, include_self=True)}: abort")
            if step.resend_after:
                seconds = int(step.resend_after.total_seconds())
                lines.append(f"    {step.name} --> {step.name}: no reply in {seconds}s, send again")
        for i in reversed(range(len(self.steps))):
            step = self.steps[i]
            if step.compensation is None:
                continue
            acks = " / ".join(m.__name__ for m in step.compensated_by)
            lines.append(f"    undo_{step.name} --> {self._undo_entry(i, include_self=False)}: {acks}")
            for refusal in step.refused_by:
                lines.append(f"    undo_{step.name} --> {step.name}: {refusal.__name__} (too late to undo)")
        lines.append("    compensated --> [*]")
        return "\n".join(lines) + "\n"

    def _undo_entry(self, index: int, *, include_self: bool) -> str:
        start = index if include_self else index - 1
        for i in range(start, -1, -1):
            if self.steps[i].compensation is not None:
                return f"undo_{self.steps[i].name}"
        return "compensated"


@dataclass
class Saga:
    """One saga instance as stored."""

    id: str
    type: str
    state: SagaState
    step: int
    data: dict[str, Any]  # as stored; the engine reads it as its definition's `data_type`
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    deadline_at: datetime | None = None
    resends: int = 0


class Change(enum.Enum):
    """What a reply, an abort or a timer did to a saga."""

    STEP_SUCCEEDED = "step_succeeded"
    COMPLETED = "completed"
    COMPENSATION_STARTED = "compensation_started"
    STEP_COMPENSATED = "step_compensated"
    COMPENSATED = "compensated"
    RESUMED = "resumed"  # a compensation was refused: the saga goes on
    RESENT = "resent"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Transition:
    change: Change
    step: str | None = None
    reason: str | None = None


Listener = Callable[[UnitOfWork, Saga, Transition], Awaitable[None]]


@dataclass
class SagaEngine(Generic[D]):
    """Runs the sagas of one definition inside the caller's units of work."""

    definition: SagaDefinition[D]
    #: Told of every transition, inside the same transaction (to update the aggregate).
    listener: Listener | None = None
    clock: Callable[[], datetime] = utcnow

    # -- entry points --------------------------------------------------------------------------

    def start(self, uow: UnitOfWork, saga_id: str, data: D) -> Saga:
        """Start a saga: its first command is emitted now (in the current context), and the saga
        is written at commit, with every other saga started in the transaction."""
        now = self.clock()
        saga = Saga(
            id=saga_id,
            type=self.definition.name,
            state=SagaState.RUNNING,
            step=0,
            data=data.model_dump(mode="json"),
            created_at=now,
            updated_at=now,
        )
        self._begin(uow, saga, 0)
        uow.stage(_insert_sagas, saga, key=saga_id)
        self._log(uow, saga, "started")
        return uow.remember(_KIND, saga_id, saga)

    async def on_reply(
        self, uow: UnitOfWork, saga_id: str, reply: Message, message_id: str | None = None
    ) -> Transition:
        """Apply a participant's reply; anything not expected now is ignored (and logged)."""
        saga = await self.load(uow, saga_id)
        if saga is None or saga.state in FINAL:
            return Transition(Change.IGNORED)
        step = self.definition.steps[saga.step]
        kind = type(reply)
        transitions: list[Transition] = []
        if saga.state is SagaState.RUNNING:
            if kind in step.success:
                self._log(uow, saga, f"{step.name} succeeded ({kind.__name__})", message_id)
                transitions += self._advance(uow, saga)
            elif kind in step.failure:
                reason = self.definition.reasons[kind]
                self._log(uow, saga, f"{step.name} failed ({kind.__name__}): {reason}", message_id)
                transitions += self._compensate(uow, saga, saga.step - 1, reason)
        elif kind in step.compensated_by:
            self._log(uow, saga, f"{step.name} compensated ({kind.__name__})", message_id)
            transitions.append(Transition(Change.STEP_COMPENSATED, step.name, saga.reason))
            transitions += self._compensate(uow, saga, saga.step - 1, saga.reason or "")
        elif step.pivot and (kind in step.refused_by or kind in step.success):
            # Compensating the pivot in flight came too late: it went through, so go on.
            self._log(uow, saga, f"{step.name} went through ({kind.__name__}): compensation stopped", message_id)
            refused_reason, saga.reason = saga.reason, None
            saga.state = SagaState.RUNNING
            saga.deadline_at = None
            transitions.append(Transition(Change.RESUMED, step.name, refused_reason))
            if kind in step.success:
                transitions += self._advance(uow, saga)
        if not transitions:
            self._log(uow, saga, f"ignored {kind.__name__} ({saga.state} at {step.name})", message_id)
            return Transition(Change.IGNORED)
        self._save(uow, saga)
        await self._tell(uow, saga, transitions)
        return transitions[-1]

    async def abort(self, uow: UnitOfWork, saga_id: str, reason: str) -> Transition | None:
        """Compensate on request (a customer's cancel). None when it is too late (the pivot
        succeeded) or the saga already ended or is compensating."""
        saga = await self.load(uow, saga_id)
        if saga is None or saga.state is not SagaState.RUNNING or saga.step > self.definition.pivot_index:
            return None
        if saga.step == self.definition.pivot_index and self.definition.steps[saga.step].compensation is None:
            return None
        self._log(uow, saga, f"abort requested at {self.definition.steps[saga.step].name}: {reason}")
        # The step in flight may or may not have taken effect: undo it too.
        transitions = self._compensate(uow, saga, saga.step, reason)
        self._save(uow, saga)
        await self._tell(uow, saga, transitions)
        return transitions[-1]

    async def expire(self, uow: UnitOfWork, saga_id: str) -> Transition:
        """The timer found the saga's deadline passed: compensate, or send again."""
        saga = await self.load(uow, saga_id)
        now = self.clock()
        if saga is None or saga.state in FINAL or saga.deadline_at is None or saga.deadline_at > now:
            return Transition(Change.IGNORED)
        step = self.definition.steps[saga.step]
        transitions: list[Transition]
        if saga.state is SagaState.COMPENSATING:
            assert step.compensation is not None
            saga.resends += 1
            self._log(uow, saga, f"no acknowledgement for undoing {step.name}: sent again")
            uow.emit(step.compensation(self.data_of(saga)))
            saga.deadline_at = now + self.definition.compensation_timeout
            transitions = [Transition(Change.RESENT, step.name)]
        elif step.timeout is not None:
            self._log(uow, saga, f"{step.name} timed out after {int(step.timeout.total_seconds())}s")
            transitions = self._compensate(uow, saga, saga.step, "timeout")
        else:
            assert step.command is not None
            assert step.resend_after is not None
            saga.resends += 1
            self._log(uow, saga, f"no reply to {step.name}: sent again")
            uow.emit(step.command(self.data_of(saga)))
            saga.deadline_at = now + step.resend_after
            transitions = [Transition(Change.RESENT, step.name)]
        self._save(uow, saga)
        await self._tell(uow, saga, transitions)
        return transitions[-1]

    # -- queries -------------------------------------------------------------------------------

    def data_of(self, saga: Saga) -> D:
        """The saga's data, typed."""
        return self.definition.data_type.model_validate(saga.data)

    async def load(self, uow: UnitOfWork, saga_id: str) -> Saga | None:
        """A saga to move, locked for the transaction (the same object if it was loaded already)."""
        saga: Saga | None = uow.recall(_KIND, saga_id)
        if saga is None:
            row = (await uow.conn.execute(_SAGA_FOR_UPDATE, {"saga_id": saga_id})).first()
            if row is not None:
                saga = uow.remember(_KIND, saga_id, _saga(row))
        return saga

    async def claim(self, uow: UnitOfWork, saga_id: str) -> bool:
        """Lock a saga for the transaction unless another transaction holds it (on PostgreSQL
        SKIP LOCKED: another replica's timer, or a reply moving it); True if this one has it,
        and `load` then finds it."""
        if uow.recall(_KIND, saga_id) is not None:
            return True
        query = _SAGA_CLAIM if uow.conn.dialect.name == "postgresql" else _SAGA_FOR_UPDATE
        row = (await uow.conn.execute(query, {"saga_id": saga_id})).first()
        if row is None:
            return False
        uow.remember(_KIND, saga_id, _saga(row))
        return True

    async def load_many(self, uow: UnitOfWork, saga_ids: Iterable[str]) -> None:
        """Load (and lock) the sagas of a batch of replies at once; `load` then finds them."""
        wanted = [i for i in set(saga_ids) if uow.recall(_KIND, i) is None]
        if wanted:
            for row in await fetch_rows(uow.conn, _SAGAS_FOR_UPDATE, {"ids": wanted}):
                uow.remember(_KIND, row.id, _saga(row))

    @staticmethod
    async def due(conn: AsyncConnection, now: datetime, limit: int = 100) -> list[str]:
        """Sagas whose deadline has passed."""
        rows = await fetch_rows(conn, _DUE, {"now": now, "limit": limit})
        return [r.id for r in rows]

    # -- moves ---------------------------------------------------------------------------------

    def _begin(self, uow: UnitOfWork, saga: Saga, index: int) -> None:
        step = self.definition.steps[index]
        saga.step, saga.resends = index, 0
        if step.command is not None:
            uow.emit(step.command(self.data_of(saga)))
        wait = step.timeout or step.resend_after
        saga.deadline_at = self.clock() + wait if wait is not None else None

    def _advance(self, uow: UnitOfWork, saga: Saga) -> list[Transition]:
        done = self.definition.steps[saga.step]
        transitions = [Transition(Change.STEP_SUCCEEDED, done.name)]
        if saga.step + 1 >= len(self.definition.steps):
            saga.state, saga.deadline_at = SagaState.COMPLETED, None
            self._log(uow, saga, "completed")
            transitions.append(Transition(Change.COMPLETED))
        else:
            self._begin(uow, saga, saga.step + 1)
        return transitions

    def _compensate(self, uow: UnitOfWork, saga: Saga, start: int, reason: str) -> list[Transition]:
        """Undo steps `start`, `start - 1`, ... 0: send the first compensation found and wait for
        its acknowledgement; with none left, the saga is compensated."""
        transitions: list[Transition] = []
        if saga.state is SagaState.RUNNING:
            saga.state, saga.reason = SagaState.COMPENSATING, reason
            transitions.append(Transition(Change.COMPENSATION_STARTED, self.definition.steps[saga.step].name, reason))
        for index in range(start, -1, -1):
            step = self.definition.steps[index]
            if step.compensation is not None:
                saga.step, saga.resends = index, 0
                uow.emit(step.compensation(self.data_of(saga)))
                saga.deadline_at = self.clock() + self.definition.compensation_timeout
                self._log(uow, saga, f"undoing {step.name}")
                return transitions
        saga.state, saga.deadline_at = SagaState.COMPENSATED, None
        self._log(uow, saga, f"compensated: {saga.reason}")
        transitions.append(Transition(Change.COMPENSATED, reason=saga.reason))
        return transitions

    # -- persistence ---------------------------------------------------------------------------

    def _save(self, uow: UnitOfWork, saga: Saga) -> None:
        saga.updated_at = self.clock()
        uow.stage(_write_sagas, _moved(saga), key=saga.id)

    def _log(self, uow: UnitOfWork, saga: Saga, entry: str, message_id: str | None = None) -> None:
        uow.stage(_write_log, {"saga_id": saga.id, "at": self.clock(), "entry": entry[:200], "message_id": message_id})

    async def _tell(self, uow: UnitOfWork, saga: Saga, transitions: Sequence[Transition]) -> None:
        if self.listener is not None:
            for transition in transitions:
                await self.listener(uow, replace(saga), transition)


def _row(saga: Saga) -> dict[str, Any]:
    return {
        "id": saga.id,
        "type": saga.type,
        "state": saga.state.value,
        "step": saga.step,
        "reason": saga.reason,
        "data": saga.data,
        "deadline_at": saga.deadline_at,
        "resends": saga.resends,
        "created_at": saga.created_at,
        "updated_at": saga.updated_at,
    }


def _moved(saga: Saga) -> dict[str, Any]:
    """What a move changes of a stored saga (its type, data and start never change)."""
    return {
        "saga_id": saga.id,
        "state": saga.state.value,
        "step": saga.step,
        "reason": saga.reason,
        "deadline_at": saga.deadline_at,
        "resends": saga.resends,
        "updated_at": saga.updated_at,
    }


def _saga(row: Any) -> Saga:
    return Saga(
        id=row.id,
        type=row.type,
        state=SagaState(row.state),
        step=row.step,
        data=dict(row.data),
        created_at=row.created_at,
        updated_at=row.updated_at,
        reason=row.reason,
        deadline_at=row.deadline_at,
        resends=row.resends,
    )


_KIND = "saga"
_SAGA = sa.select(sagas).where(sagas.c.id == sa.bindparam("saga_id"))
_SAGA_FOR_UPDATE = _SAGA.with_for_update()
_SAGA_CLAIM = _SAGA.with_for_update(skip_locked=True)
_SAGAS_FOR_UPDATE = sa.select(sagas).where(one_of(sagas.c.id, "ids")).with_for_update()
_UPDATE = sagas.update().where(sagas.c.id == sa.bindparam("saga_id"))
_DUE = (
    sa.select(sagas.c.id)
    .where(sagas.c.deadline_at.is_not(None), sagas.c.deadline_at <= sa.bindparam("now"))
    .order_by(sagas.c.deadline_at)
    .limit(sa.bindparam("limit"))
)


async def _insert_sagas(conn: AsyncConnection, started: list[Saga]) -> None:
    await insert_rows(conn, sagas, [_row(saga) for saga in started])


async def _write_sagas(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await update_rows(conn, _UPDATE, rows)


async def _write_log(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await insert_rows(conn, saga_log, rows)


async def history(conn: AsyncConnection, saga_id: str) -> list[dict[str, Any]]:
    """The saga's log, oldest first (for `pizzeria saga show`)."""
    rows = await conn.execute(sa.select(saga_log).where(saga_log.c.saga_id == saga_id).order_by(saga_log.c.seq))
    return [{"seq": r.seq, "at": r.at, "entry": r.entry, "message_id": r.message_id} for r in rows]


async def load(conn: AsyncConnection, saga_id: str) -> Saga | None:
    row = (await conn.execute(_SAGA, {"saga_id": saga_id})).first()
    return _saga(row) if row is not None else None


async def counts(conn: AsyncConnection) -> dict[str, int]:
    """Sagas by state."""
    rows = await conn.execute(sa.select(sagas.c.state, sa.func.count()).group_by(sagas.c.state))
    return {state: int(n) for state, n in rows}


async def listing(
    conn: AsyncConnection, *, state: str | None = None, limit: int = 50, oldest_first: bool = False
) -> list[Saga]:
    """Sagas, most recently changed first (or, `oldest_first`, the ones left longest first)."""
    order = sagas.c.updated_at.asc() if oldest_first else sagas.c.updated_at.desc()
    query = sa.select(sagas).order_by(order).limit(limit)
    if state:
        query = query.where(sagas.c.state == state)
    return [_saga(r) for r in await conn.execute(query)]


class SagaTimer:
    """Scans for sagas whose deadline passed and lets the engine compensate or re-send; its
    `tick` runs in a background loop every `interval` seconds."""

    def __init__(
        self,
        engine: SagaEngine[Any],
        db: Database,
        uow_factory: Callable[[], UnitOfWork],
        *,
        interval: float = 0.5,
        batch: int = 100,
    ) -> None:
        self.engine = engine
        self.db = db
        self.uow_factory = uow_factory
        self.interval = interval
        self.batch = batch

    async def tick(self) -> bool:
        """Expire the sagas whose deadline passed that no other replica is expiring now (the
        deadline is checked again under the saga's lock: one that moved on is left alone); True
        if there may be more due right now (a full batch was found), so the loop runs again at
        once instead of after its interval."""
        async with self.db.read() as conn:
            due = await SagaEngine.due(conn, self.engine.clock(), limit=self.batch)
        for saga_id in due:
            async with self.uow_factory() as uow:
                if not await self.engine.claim(uow, saga_id):
                    continue  # another replica has it now: its deadline is seen to there
                await self.engine.expire(uow, saga_id)
                await uow.commit()
        return len(due) >= self.batch
