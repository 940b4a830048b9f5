"""`GET /api/v1/me/overview`: the caller's account, recent orders, payments and notifications,
fetched from four services at once. A part whose service cannot answer is named in `missing`
and the rest is still returned."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from pydantic import BaseModel, Field

from pizzeria.kit.auth import InvalidToken
from pizzeria.kit.errors import ProblemError
from pizzeria.services.gateway.upstream import Upstream, refused_detail

RECENT = 5


class Overview(BaseModel):
    user: dict[str, Any] | None = None
    orders: list[dict[str, Any]] | None = None
    payments: list[dict[str, Any]] | None = None
    notifications: list[dict[str, Any]] | None = None
    missing: list[str] = Field(default_factory=list, description="parts whose service did not answer")


#: part → (upstream, path, query); each asked with the caller's own token.
PARTS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "user": ("identity", "/api/v1/users/me", []),
    "orders": ("orders", "/api/v1/orders", [("limit", str(RECENT))]),
    "payments": ("payments", "/api/v1/payments", [("limit", str(RECENT))]),
    "notifications": ("notifications", "/api/v1/notifications", [("limit", str(RECENT))]),
}


class _Refused(Exception):
    """A service refused the caller's token (revoked: signed out, changed or deleted)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


async def overview(upstreams: dict[str, Upstream], headers: dict[str, str]) -> Overview:
    """The caller's overview; 401 when a service refuses the caller's token (an overview of
    a revoked sign-in would be a view of nothing)."""

    async def part(name: str) -> Any:
        upstream, path, params = PARTS[name]
        try:
            answer = await upstreams[upstream].send("GET", path, params=params, headers=headers)
        except ProblemError:
            return None
        if answer.status == 401:
            return _Refused(refused_detail(answer.body))
        if answer.status != 200:
            return None
        data = orjson.loads(answer.body)
        return data["items"] if isinstance(data, dict) and "items" in data and name != "user" else data

    names = list(PARTS)
    results = await asyncio.gather(*(part(n) for n in names))
    refused = next((r for r in results if isinstance(r, _Refused)), None)
    if refused is not None:
        raise InvalidToken(refused.detail)
    found = dict(zip(names, results, strict=True))
    return Overview(**found, missing=[n for n in names if found[n] is None])
