"""Operations endpoints every service with a database has (administrators only): its dead
letters — list, show, replay, discard — and its outbox backlog. The gateway asks every service
and merges the answers into `/api/v1/ops/dlq` and `/api/v1/ops/outbox`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel

from pizzeria.contracts.ops import DeadLetterAction, DeadLetterDiscarded, DeadLetterReplayRequested
from pizzeria.kit.auth import Admin, Principal, require_roles
from pizzeria.kit.clock import utcnow
from pizzeria.kit.errors import Conflict, NotFound
from pizzeria.messaging.service import Runtime
from pizzeria.messaging.tables import dead_letters

router = APIRouter(prefix="/api/v1/ops", tags=["ops"], dependencies=[Depends(require_roles("admin"))])

DeadLetterStatus = Literal["dead", "replay_requested", "replayed", "discarded"]


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


def _service(request: Request) -> str:
    name: str = request.app.state.runtime.service
    return name


def view(row: dict[str, Any], service: str) -> DeadLetterView:
    try:
        payload: Any = orjson.loads(row["payload"])
    except orjson.JSONDecodeError:
        payload = bytes(row["payload"]).decode("utf-8", "replace")
    return DeadLetterView(
        **{k: row[k] for k in ("id", "group_id", "message_id", "message_type", "topic", "partition", "offset",
                               "error", "attempts", "status", "created_at", "updated_at")},
        service=service, key=row["key"], headers=orjson.loads(row["headers"]), payload=payload,
    )


@router.get("/dlq", response_model=DeadLetterList, summary="Dead letters of this service, newest first")
async def list_dead_letters(
    runtime: Runtime, request: Request,
    status_filter: Annotated[DeadLetterStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeadLetterList:
    rows = await runtime.dead_letters.recent(status=status_filter, limit=limit)
    return DeadLetterList(items=[view(r, _service(request)) for r in rows])


async def _found(runtime: Runtime, dl_id: str) -> dict[str, Any]:
    row = await runtime.dead_letters.get(dl_id)
    if row is None:
        raise NotFound(f"dead letter {dl_id} does not exist here")
    return row


@router.get("/dlq/{dl_id}", response_model=DeadLetterView, summary="One dead letter")
async def get_dead_letter(dl_id: str, runtime: Runtime, request: Request) -> DeadLetterView:
    return view(await _found(runtime, dl_id), _service(request))


async def _act(runtime: Runtime, request: Request, dl_id: str, new_status: str, fact: type[DeadLetterAction],
               actor: Principal) -> DeadLetterView:
    """Move a dead letter on from `dead` and say who did it (for the audit log), in one transaction."""
    row = await _found(runtime, dl_id)
    async with runtime.uow() as uow:
        changed = await uow.conn.execute(
            dead_letters.update().where(dead_letters.c.id == dl_id, dead_letters.c.status == "dead")
            .values(status=new_status, updated_at=utcnow()))
        if not changed.rowcount:
            raise Conflict(f"dead letter {dl_id} is {row['status']}; only a dead one can be "
                           f"{'replayed' if new_status == 'replay_requested' else 'discarded'}")
        uow.emit(fact(dead_letter_id=dl_id, service=_service(request), group=row["group_id"],
                      message_id=row["message_id"], message_type=row["message_type"], actor=actor.user_id,
                      at=utcnow()))
        await uow.commit()
    return view(await _found(runtime, dl_id), _service(request))


@router.post("/dlq/{dl_id}/replay", response_model=DeadLetterView, status_code=status.HTTP_202_ACCEPTED,
             summary="Run a dead letter through its consumer again (within a second)",
             responses={409: {"description": "only a dead letter in status `dead` can be replayed"}})
async def replay_dead_letter(dl_id: str, admin: Admin, runtime: Runtime, request: Request) -> DeadLetterView:
    return await _act(runtime, request, dl_id, "replay_requested", DeadLetterReplayRequested, admin)


@router.post("/dlq/{dl_id}/discard", response_model=DeadLetterView, summary="Give up on a dead letter for good",
             responses={409: {"description": "only a dead letter in status `dead` can be discarded"}})
async def discard_dead_letter(dl_id: str, admin: Admin, runtime: Runtime, request: Request) -> DeadLetterView:
    return await _act(runtime, request, dl_id, "discarded", DeadLetterDiscarded, admin)


@router.get("/outbox", response_model=OutboxView, summary="Events committed but not yet published")
async def outbox(runtime: Runtime, request: Request) -> OutboxView:
    backlog, age = await runtime.relay.backlog()
    return OutboxView(service=_service(request), backlog=backlog, oldest_age_s=round(age, 3))
