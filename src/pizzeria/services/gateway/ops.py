"""The operations API of the whole system (administrators only): every service's dead letters
and outbox backlog, asked of all services at once and merged. A service that does not answer
is named in `missing`; the rest is still returned."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from pizzeria.kit.auth import InvalidToken, Principal, Role
from pizzeria.kit.errors import NotFound, ServiceUnavailable
from pizzeria.messaging.deadletters import DeadLetterStatus
from pizzeria.services.gateway.routes import ADMIN
from pizzeria.services.gateway.upstream import Forwarded, Upstream, refused_detail


class DeadLetters(BaseModel):
    items: list[dict[str, Any]] = Field(description="dead letters of every service, newest first")
    missing: list[str] = Field(description="services that did not answer")


class OutboxBacklog(BaseModel):
    services: dict[str, dict[str, Any]]
    missing: list[str]


Admit = Callable[[Request, frozenset[Role] | None], Awaitable[Principal | None]]


async def ask_every(
    upstreams: dict[str, Upstream],
    method: str,
    path: str,
    headers: dict[str, str],
    *,
    params: list[tuple[str, str]] | None = None,
    json: Any = None,
) -> dict[str, Forwarded | None]:
    """The same request to every service at once: each one's answer, None where it could not
    answer; 401 when a service refuses the caller's token (revoked: nothing to merge). A request
    that cannot be sent (the caller's fault, the same for every service) is a 400."""
    body = b"" if json is None else orjson.dumps(json)
    sent = headers if json is None else {**headers, "content-type": "application/json"}

    async def one(upstream: Upstream) -> Forwarded | None:
        try:
            return await upstream.send(method, path, params=params, headers=sent, body=body)
        except ServiceUnavailable:
            return None

    names = list(upstreams)
    answers = await asyncio.gather(*(one(upstreams[n]) for n in names))
    refused = next((a for a in answers if a is not None and a.status == 401), None)
    if refused is not None:
        raise InvalidToken(refused_detail(refused.body))
    return dict(zip(names, answers, strict=True))


def relay(answer: Forwarded) -> Response:
    """A service's answer, passed on as it came."""
    return Response(
        content=answer.body,
        status_code=answer.status,
        media_type=dict(answer.headers).get("content-type", "application/json"),
    )


def build_router(
    upstreams: dict[str, Upstream], admit: Admit, headers: Callable[[Request], dict[str, str]]
) -> APIRouter:
    """`admit(request, roles)` checks the caller; `headers(request)` is what goes upstream."""
    router = APIRouter(prefix="/api/v1/ops", tags=["ops"])

    async def ask_all(
        request: Request, path: str, params: list[tuple[str, str]] | None = None
    ) -> dict[str, Forwarded | None]:
        await admit(request, ADMIN)
        return await ask_every(upstreams, "GET", path, headers(request), params=params)

    @router.get("/dlq", response_model=DeadLetters, summary="Dead letters of every service, newest first")
    async def dead_letters(
        request: Request,
        status: Annotated[DeadLetterStatus | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> DeadLetters:
        params = [("limit", str(limit))] + ([("status", status)] if status else [])
        answers = await ask_all(request, "/api/v1/ops/dlq", params)
        items = [
            item
            for a in answers.values()
            if a is not None and a.status == 200
            for item in orjson.loads(a.body)["items"]
        ]
        items.sort(key=lambda item: item["created_at"], reverse=True)
        missing = sorted(n for n, a in answers.items() if a is None or a.status != 200)
        return DeadLetters(items=items[:limit], missing=missing)

    async def owner(request: Request, dl_id: str) -> tuple[str, Forwarded]:
        answers = await ask_all(request, f"/api/v1/ops/dlq/{dl_id}")
        for name, answer in answers.items():
            if answer is not None and answer.status == 200:
                return name, answer
        missing = sorted(n for n, a in answers.items() if a is None or a.status >= 500)
        suffix = f" (no answer from {', '.join(missing)})" if missing else ""
        raise NotFound(f"dead letter {dl_id} does not exist{suffix}")

    @router.get("/dlq/{dl_id}", summary="One dead letter, wherever it is")
    async def dead_letter(request: Request, dl_id: str) -> Response:
        return relay((await owner(request, dl_id))[1])

    async def act(request: Request, dl_id: str, action: str) -> Response:
        name, _ = await owner(request, dl_id)
        return relay(await upstreams[name].send("POST", f"/api/v1/ops/dlq/{dl_id}/{action}", headers=headers(request)))

    @router.post(
        "/dlq/{dl_id}/replay",
        status_code=202,
        summary="Run a dead letter through its consumer again",
        responses={409: {"description": "only a dead letter in status `dead` can be replayed"}},
    )
    async def replay(request: Request, dl_id: str) -> Response:
        return await act(request, dl_id, "replay")

    @router.post(
        "/dlq/{dl_id}/discard",
        summary="Give up on a dead letter for good",
        responses={409: {"description": "only a dead letter in status `dead` can be discarded"}},
    )
    async def discard(request: Request, dl_id: str) -> Response:
        return await act(request, dl_id, "discard")

    @router.get("/outbox", response_model=OutboxBacklog, summary="Outbox backlog and oldest age per service")
    async def outbox(request: Request) -> OutboxBacklog:
        answers = await ask_all(request, "/api/v1/ops/outbox")
        found = {n: orjson.loads(a.body) for n, a in answers.items() if a is not None and a.status == 200}
        return OutboxBacklog(services=found, missing=sorted(set(answers) - set(found)))

    return router
