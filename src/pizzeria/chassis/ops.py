"""Operations endpoints every service with a database has (administrators only): its dead
letters — list, show, replay, discard — and its outbox backlog. The gateway asks every service
and merges the answers into `/api/v1/ops/dlq` and `/api/v1/ops/outbox`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel

from pizzeria.chassis.deps import RuntimeDep
from pizzeria.contracts.ops import DeadLetterAction, DeadLetterDiscarded, DeadLetterReplayRequested
from pizzeria.contracts.topology import replayable
from pizzeria.kit.auth import Admin, require_roles
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import Conflict, NotFound
from pizzeria.messaging.deadletters import DeadLetterStatus, DeadLetterStore
from pizzeria.messaging.uow import UnitOfWork

router = APIRouter(prefix="/api/v1/ops", tags=["ops"], dependencies=[Depends(require_roles("admin"))])


class DeadLetterView(BaseModel):
    id: str
    service: str
    group_id: str
    message_id: str | None
    message_type: str | None
    topic: str
    partition: int
    offset: int
    key: str | None
    error: str
    attempts: int
    status: DeadLetterStatus
    headers: dict[str, Any]
    payload: Any
    created_at: datetime
    updated_at: datetime


class DeadLetterList(BaseModel):
    items: list[DeadLetterView]


class OutboxView(BaseModel):
    service: str
    backlog: int
    oldest_age_s: float


def view(row: dict[str, Any], service: str) -> DeadLetterView:
    try:
        payload: Any = orjson.loads(row["payload"])
    except orjson.JSONDecodeError:
        payload = bytes(row["payload"]).decode("utf-8", "replace")
    return DeadLetterView(
        **{
            k: row[k]
            for k in (
                "id",
                "group_id",
                "message_id",
                "message_type",
                "topic",
                "partition",
                "offset",
                "error",
                "attempts",
                "status",
                "created_at",
                "updated_at",
            )
        },
        service=service,
        key=row["key"],
        headers=orjson.loads(row["headers"]),
        payload=payload,
    )


ACTIONS: dict[str, tuple[DeadLetterStatus, type[DeadLetterAction]]] = {
    "replay": (DeadLetterStatus.REPLAY_REQUESTED, DeadLetterReplayRequested),
    "discard": (DeadLetterStatus.DISCARDED, DeadLetterDiscarded),
}


async def act_on_dead_letter(
    store: DeadLetterStore, uow_factory: Callable[[], UnitOfWork], service: str, dl_id: str, action: str, actor: str
) -> dict[str, Any]:
    """Replay or discard a dead letter and say who did it (an `ops.events` fact for the audit
    log), in one transaction. The one path for the HTTP API and the `pizzeria dlq` command.
    A replay into a consumer group the service does not run is refused (409): nobody would take
    it up, and it would wait for ever (`topology.replayable`)."""
    new_status, fact = ACTIONS[action]
    row = await store.get(dl_id)
    if row is None:
        raise NotFound(f"dead letter {dl_id} does not exist here")
    if action == "replay" and not replayable(service, row["group_id"]):
        raise Conflict(
            f"dead letter {dl_id} belongs to consumer group {row['group_id']}, which no longer runs in {service} "
            "(an earlier release's, say): nothing would replay it; discard it"
        )
    async with uow_factory() as uow:
        if not await store.leave_dead(uow.conn, dl_id, new_status):
            raise Conflict(f"dead letter {dl_id} is {row['status']}; only 'dead' ones can be {action}ed")
        uow.emit(
            fact(
                dead_letter_id=dl_id,
                service=service,
                group=row["group_id"],
                message_id=row["message_id"],
                message_type=row["message_type"],
                actor=actor,
                at=utcnow(),
            )
        )
        await uow.commit()
    found = await store.get(dl_id)
    assert found is not None
    return found


@router.get("/dlq", response_model=DeadLetterList, summary="Dead letters of this service, newest first")
async def list_dead_letters(
    runtime: RuntimeDep,
    status_filter: Annotated[DeadLetterStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeadLetterList:
    rows = await runtime.dead_letters.recent(status=status_filter, limit=limit)
    return DeadLetterList(items=[view(r, runtime.service) for r in rows])


async def _found(runtime: RuntimeDep, dl_id: str) -> dict[str, Any]:
    row = await runtime.dead_letters.get(dl_id)
    if row is None:
        raise NotFound(f"dead letter {dl_id} does not exist here")
    return row


@router.get("/dlq/{dl_id}", response_model=DeadLetterView, summary="One dead letter")
async def get_dead_letter(dl_id: str, runtime: RuntimeDep) -> DeadLetterView:
    return view(await _found(runtime, dl_id), runtime.service)


@router.post(
    "/dlq/{dl_id}/replay",
    response_model=DeadLetterView,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run a dead letter through its consumer again (within a second)",
    responses={
        409: {
            "description": "only a dead letter in status `dead` can be replayed, and only into a consumer group "
            "the service still runs"
        }
    },
)
async def replay_dead_letter(dl_id: str, admin: Admin, runtime: RuntimeDep) -> DeadLetterView:
    return view(
        await act_on_dead_letter(runtime.dead_letters, runtime.uow, runtime.service, dl_id, "replay", admin.user_id),
        runtime.service,
    )


@router.post(
    "/dlq/{dl_id}/discard",
    response_model=DeadLetterView,
    summary="Give up on a dead letter for good",
    responses={409: {"description": "only a dead letter in status `dead` can be discarded"}},
)
async def discard_dead_letter(dl_id: str, admin: Admin, runtime: RuntimeDep) -> DeadLetterView:
    return view(
        await act_on_dead_letter(runtime.dead_letters, runtime.uow, runtime.service, dl_id, "discard", admin.user_id),
        runtime.service,
    )


@router.get("/outbox", response_model=OutboxView, summary="Events committed but not yet published")
async def outbox(runtime: RuntimeDep) -> OutboxView:
    backlog, age = await runtime.relay.backlog()
    return OutboxView(service=runtime.service, backlog=backlog, oldest_age_s=round(age, 3))
